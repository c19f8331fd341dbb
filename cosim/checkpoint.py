"""Checkpoints of a co-simulated training run: written atomically after every step,
read back by ``cosim train --resume``.

A checkpoint is one ``torch.save`` file holding everything the next step depends
on (master weights, the data-order generator, the method's state: predictor,
optimizer, phase controller, Assistant, ...) plus the per-step records so far, so
a resumed run continues exactly where the interrupted one stopped and ends with
the same results, bit for bit.  The file is written to a temporary name in the
same folder and renamed over the old one: an interrupted write never leaves a
half-written checkpoint.
"""
from __future__ import annotations

import io
import os

import torch

from model_sw.fileio import write_atomic

VERSION = 1
NAME = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or from a different run."""


def path_in(out_dir: str) -> str:
    return os.path.join(out_dir, NAME)


def save(out_dir: str, state: dict) -> str:
    path = path_in(out_dir)
    buf = io.BytesIO()
    torch.save({"version": VERSION, **state}, buf)
    write_atomic(path, buf.getvalue())
    return path


def load(out_dir: str, identity: dict) -> dict:
    """The checkpoint in ``out_dir``; ``identity`` (the run's settings that decide
    its results) must equal the one it was saved with."""
    path = path_in(out_dir)
    if not os.path.exists(path):
        raise CheckpointError(f"--resume: no checkpoint {path} (run without --resume first)")
    try:
        state = torch.load(path, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same error to the user
        raise CheckpointError(f"--resume: cannot read {path}: {e}") from None
    if state.get("version") != VERSION:
        raise CheckpointError(f"--resume: {path} has version {state.get('version')}, expected {VERSION}")
    saved = state.get("identity", {})
    diff = {k: (saved.get(k), v) for k, v in identity.items() if saved.get(k) != v}
    if diff:
        what = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"--resume: {path} belongs to a different run ({what})")
    return state
