"""Energy model: event counters x per-operation energies from a swappable table.

The counters are those the RTL counts (``rtl.engine.COUNTERS``: ``macs``,
``rd_bytes``, ``wr_bytes``, ``mask_bits``, ``spad_reads``, ``spad_writes``,
``acc_reads``, ``acc_writes``, ``busy_cycles``) plus the analytic extras of the
report (``predictor_macs``, ``predictor_dram_bytes``, ``assistant_macs``,
``assistant_dram_bytes``).  A
missing counter counts as 0; unknown ones (``cycles``, ``retired``...) are ignored.

Per-event energies (pJ) for a configuration ``cfg``:

* MAC: ``mult_int{op_bits}`` + ``add_int{acc_bits}`` (the PE's multiplier and accumulator adder);
* scratchpad word (R or C operands of ``op_bits``): the 64-bit access energy of
  an SRAM of that scratchpad's size, scaled by word bits / 64 (reads: one A and one
  B word per array step; writes: one word per gathered panel step);
* accumulator SRAM row (C values of ``acc_bits``): the same rule at its size;
* external memory: ``dram_64bit_access_pj / 8`` per byte (mask bits: per 8 bits);
* predictor / Assistant MACs: the same MAC energy (int8 arrays).

The table file (default ``cosim/energy_table.json``) documents every value's source.
"""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache

DEFAULT_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "energy_table.json")
REQUIRED_KEYS = ("mult_int8_pj", "add_int32_pj", "sram_64bit_access_pj", "sram_write_vs_read",
                 "dram_64bit_access_pj", "leakage_pj_per_cycle")
TERMS = ("mac", "spad_read", "spad_write", "acc_read", "acc_write", "dram_read", "dram_write",
         "dram_mask", "predictor", "assistant", "leakage")


class EnergyTableError(ValueError):
    """A table that cannot be used; the message names the file and the key."""


def _number(path, key, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise EnergyTableError(f"energy table {path}: key {key!r} must be a finite number, got {v!r}")
    if v < 0:
        raise EnergyTableError(f"energy table {path}: key {key!r} must be >= 0, got {v!r}")
    return float(v)


def validate_table(raw: dict, path: str = "<dict>") -> dict:
    """Check a parsed table; returns a clean copy (documentation keys dropped)."""
    if not isinstance(raw, dict):
        raise EnergyTableError(f"energy table {path}: top level must be an object")
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise EnergyTableError(f"energy table {path}: key {key!r} is missing "
                                   f"(required: {', '.join(REQUIRED_KEYS)})")
    out = {}
    for key, v in raw.items():
        if key.startswith("_"):
            continue
        if key == "sram_64bit_access_pj":
            if not isinstance(v, dict) or not v:
                raise EnergyTableError(f"energy table {path}: key {key!r} must map SRAM sizes "
                                       f"(bytes) to pJ, got {v!r}")
            classes = {}
            for size, pj in v.items():
                try:
                    s = int(size)
                except (TypeError, ValueError):
                    s = 0
                if s < 1:
                    raise EnergyTableError(f"energy table {path}: key {key!r}: size {size!r} "
                                           "is not a positive number of bytes")
                classes[s] = _number(path, f"{key}[{size}]", pj)
                if classes[s] == 0:
                    raise EnergyTableError(f"energy table {path}: key {key}[{size}] must be > 0")
            out[key] = dict(sorted(classes.items()))
        else:
            out[key] = _number(path, key, v)
    return out


def load_table(path: str | None = None) -> dict:
    """Read and validate a table file (JSON)."""
    path = path or DEFAULT_TABLE
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise EnergyTableError(f"energy table {path}: cannot be read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise EnergyTableError(f"energy table {path}: not valid JSON ({e})") from None
    return validate_table(raw, path)


@lru_cache(maxsize=None)
def _default() -> dict:
    return load_table(DEFAULT_TABLE)


def sram_access_pj(table: dict, size_bytes: float, word_bits: int) -> float:
    """Energy of one access of ``word_bits`` to an SRAM of ``size_bytes``."""
    classes = sorted(table["sram_64bit_access_pj"].items())
    if size_bytes <= classes[0][0] or len(classes) == 1:
        e64 = classes[0][1]
    else:
        i = 1
        while i < len(classes) - 1 and size_bytes > classes[i][0]:
            i += 1
        (s0, e0), (s1, e1) = classes[i - 1], classes[i]
        slope = math.log(e1 / e0) / math.log(s1 / s0)
        e64 = e0 * (size_bytes / s0) ** slope
    return e64 * word_bits / 64


def _key(table: dict, key: str) -> float:
    if key not in table:
        raise EnergyTableError(f"energy table: key {key!r} is missing (needed by this configuration)")
    return table[key]


def unit_energies(cfg, table: dict | None = None) -> dict:
    """pJ per counted event for configuration ``cfg`` (an AcceleratorConfig)."""
    t = _default() if table is None else table
    mac = _key(t, f"mult_int{cfg.op_bits}_pj") + _key(t, f"add_int{cfg.acc_bits}_pj")
    spad_a = sram_access_pj(t, cfg.spad_a_words * cfg.rows * cfg.op_bytes, cfg.rows * cfg.op_bits)
    spad_b = sram_access_pj(t, cfg.spad_b_words * cfg.cols * cfg.op_bytes, cfg.cols * cfg.op_bits)
    spad = (spad_a + spad_b) / 2     # reads: one A and one B word per step; writes: see docs
    acc = sram_access_pj(t, cfg.acc_words * cfg.cols * cfg.acc_bytes, cfg.cols * cfg.acc_bits)
    w = t["sram_write_vs_read"]
    byte = t["dram_64bit_access_pj"] / 8
    return {"macs": mac, "spad_reads": spad, "spad_writes": spad * w, "acc_reads": acc,
            "acc_writes": acc * w, "rd_bytes": byte, "wr_bytes": byte, "mask_bits": byte / 8,
            "predictor_macs": mac, "predictor_dram_bytes": byte, "assistant_macs": mac,
            "assistant_dram_bytes": byte, "busy_cycles": t["leakage_pj_per_cycle"]}


_TERM_OF = {"macs": "mac", "spad_reads": "spad_read", "spad_writes": "spad_write",
            "acc_reads": "acc_read", "acc_writes": "acc_write", "rd_bytes": "dram_read",
            "wr_bytes": "dram_write", "mask_bits": "dram_mask", "predictor_macs": "predictor",
            "predictor_dram_bytes": "predictor", "assistant_macs": "assistant",
            "assistant_dram_bytes": "assistant",
            "busy_cycles": "leakage"}


def energy(counters: dict, cfg, table: dict | None = None) -> dict:
    """Breakdown in pJ per term (see ``TERMS``), plus ``total_pj`` and ``total_j``."""
    unit = unit_energies(cfg, table)
    out = {term: 0.0 for term in TERMS}
    for name, per in unit.items():
        v = counters.get(name, 0)
        if v < 0:
            raise ValueError(f"counter {name!r} is negative ({v})")
        out[_TERM_OF[name]] += v * per
    out["total_pj"] = sum(out[t] for t in TERMS)
    out["total_j"] = out["total_pj"] * 1e-12
    return out
