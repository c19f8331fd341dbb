"""Report files of a co-simulated training run: a SCALE-Sim-style
``COMPUTE_REPORT.csv`` and the per-operation table printed on stdout.

COMPUTE_REPORT.csv has one row per (layer, operation), summed over all steps:

* ``Total Cycles``        busy cycles of the engine (RTL counter; golden backend: cycle model)
* ``Stall Cycles``        cycles the array wanted to step but waited for operands or
                          output space (RTL counter; empty on the golden backend)
* ``Overall Util %``      MACs / (Total Cycles * R * C)
* ``Mapping Efficiency %`` MACs / (array steps * R * C): the share of the PEs that
                          hold real work while the array steps (edge tiles waste the rest)
* ``Compute Util %``      MACs / ((Total Cycles - Stall Cycles) * R * C)
plus ``MACs``, ``Array Steps`` and ``DRAM Bytes`` (external bytes read + written,
mask bits / 8).
"""
from __future__ import annotations

import csv
import io

from model_sw.fileio import write_atomic

CSV_COLUMNS = ("LayerID", "Layer", "Operation", "Runs", "Total Cycles", "Stall Cycles", "Overall Util %",
               "Mapping Efficiency %", "Compute Util %", "MACs", "Array Steps", "DRAM Bytes")


def _pct(num: float, den: float):
    return round(100.0 * num / den, 2) if den else ""


def compute_report_rows(ops: list[dict], rows: int, cols: int) -> list[dict]:
    pes = rows * cols
    out = []
    for i, o in enumerate(ops):
        stall = o.get("stall_cycles")
        out.append({
            "LayerID": i, "Layer": o["layer"], "Operation": o["op"], "Runs": o["runs"],
            "Total Cycles": o["cycles"], "Stall Cycles": "" if stall is None else stall,
            "Overall Util %": _pct(o["macs"], o["cycles"] * pes),
            "Mapping Efficiency %": _pct(o["macs"], o["compute_cycles"] * pes),
            "Compute Util %": "" if stall is None else _pct(o["macs"], (o["cycles"] - stall) * pes),
            "MACs": o["macs"], "Array Steps": o["compute_cycles"], "DRAM Bytes": o["dram_bytes"],
        })
    return out


def write_compute_report(path: str, ops: list[dict], rows: int, cols: int) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(compute_report_rows(ops, rows, cols))
    write_atomic(path, buf.getvalue())


def format_table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) if rows else len(c) for c in cols}
    lines = ["  ".join(c.rjust(widths[c]) for c in cols)]
    lines += ["  ".join(_cell(r.get(c)).rjust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def counter_dram_bytes(counters: dict) -> int:
    """External bytes of an engine run: read + written, plus the mask bits read."""
    return counters["rd_bytes"] + counters["wr_bytes"] + counters.get("mask_bits", 0) // 8


def op_row(layer: str, op: str, cycles: int, model_cycles: int, *, counters: dict | None = None,
           instructions: int = 0, stall_cycles: int | None = None, dram_bytes: int | None = None,
           energy_pj: float | None = None, bit_exact: bool | None = True, **extra) -> dict:
    """One row of the per-operation report (the keys the tables above and ``Trainer``'s
    step sums read).  ``counters`` (an engine run's or the cycle model's) gives the
    array steps, MACs and, unless ``dram_bytes`` says otherwise, the external bytes;
    without it the operation did no array work (the update and predictor rows)."""
    c = counters or {}
    return {"layer": layer, "op": op, "instructions": instructions, "cycles": cycles,
            "model_cycles": model_cycles, "stall_cycles": stall_cycles,
            "compute_cycles": c.get("compute_cycles", 0), "macs": c.get("macs", 0),
            "dram_bytes": counter_dram_bytes(c) if dram_bytes is None else dram_bytes,
            "energy_pj": energy_pj, "bit_exact": bit_exact, **extra}


OP_COLUMNS = ["layer", "op", "runs", "cycles", "model_cycles", "stall_cycles", "utilization", "dram_bytes",
              "bit_exact"]


def op_table_text(ops: list[dict]) -> str:
    return format_table(ops, OP_COLUMNS)
