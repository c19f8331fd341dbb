"""Out-of-context timing of one unit on an ECP5: Yosys, then nextpnr with ``--out-of-context``.

    python -m rtl.timing --unit accelerator --preset small [--freq 100] [--no-route] [--out DIR]

The quick loop for Fmax work: no board top, no I/O placement, no PLL, so one unit
(the engine, the whole Accelerator, or one predictor-side unit) is placed and routed
alone and nextpnr's critical path is printed in full (board builds run ``--quiet``).
Figures are a few MHz off a board build's (no global clock network, no pins). Writes
``<out>/report.json`` (fmax_mhz, target_mhz, lut, ff, dsp, bram, critical_path) and the
logs, atomically. ``--no-route`` stops after placement (nextpnr's post-placement
estimate: minutes instead of tens of minutes on the Accelerator).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

from amaranth.back import verilog

from model_sw.fileio import write_atomic

from .config import PRESETS, preset
from .dsp import ECP5
from .synth import (FAMILIES, UTIL_KEYS, SynthError, build_env, parse_critical_path,
                    parse_nextpnr_fmax, parse_nextpnr_util, report_cli)


def _engine(cfg):
    from .engine import Engine
    return Engine(cfg)


def _accelerator(cfg):
    from .accelerator import Accelerator
    return Accelerator(cfg)


def _predictor_array(cfg):
    from predictor_hw.predictor_array import PredictorArray
    return PredictorArray(cfg)


def _reorg(cfg):
    from predictor_hw.reorg import ReorgUnit
    return ReorgUnit(cfg)


def _update(cfg):
    from predictor_hw.update import UpdateUnit
    return UpdateUnit(cfg)


UNITS = {"engine": _engine, "accelerator": _accelerator, "predictor_array": _predictor_array,
         "reorg": _reorg, "update": _update}
# the Yosys flows (rtl.synth.FAMILIES["ecp5"] keys) and their names in the report
FLOWS = {"noabc9": "noabc9", "widelut": "widelut", "script": "abc9"}
DEVICES = {"85k": "CABGA381", "25k": "CSFBGA285", "45k": "CABGA381", "12k": "CABGA381"}


def unit_verilog(unit: str, cfg) -> str:
    if unit not in UNITS:
        raise SynthError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
    # emit_src: nextpnr's path report then names the Python line of each net; ECP5: the
    # units use the ECP5's primitives where they choose by family (rtl/dsp.py)
    return verilog.convert(UNITS[unit](cfg), name=unit, emit_src=True, platform=ECP5)


def run(unit: str, preset_name: str, freq: float = 100.0, device: str = "85k",
        speed: int = 6, out: str | None = None, route: bool = True, seed: int = 1,
        abc9: bool = False, pnr_args: tuple[str, ...] = (), flow: str | None = None) -> dict:
    if unit not in UNITS:
        raise SynthError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
    if device not in DEVICES:
        raise SynthError(f"unknown ECP5 device {device!r}; choose one of {', '.join(DEVICES)}")
    if not freq > 0:
        raise SynthError(f"--freq must be positive, got {freq}")
    if abc9 and flow not in (None, "script"):
        raise SynthError(f"--abc9 is the 'script' flow; it conflicts with --flow {flow!r}")
    flow = flow or ("script" if abc9 else "noabc9")
    if flow not in FLOWS:
        raise SynthError(f"unknown flow {flow!r}; choose one of {', '.join(FLOWS)}")
    cfg = preset(preset_name)
    out = out or os.path.join("build", "timing", f"{unit}-{preset_name}")
    os.makedirs(out, exist_ok=True)
    vpath = os.path.join(out, f"{unit}.v")
    write_atomic(vpath, unit_verilog(unit, cfg))
    env = build_env()
    # the board flow's classic ABC unless asked for ABC9 (timing-driven LUT mapping, which
    # Yosys 0.70 asserts on for some netlists; then the error says so)
    synth = FAMILIES["ecp5"][flow].format(top=unit)
    script = f"read_verilog {unit}.v; {synth}; tee -q -o stat.json stat -json; write_json {unit}.json"
    t0 = time.monotonic()
    res = subprocess.run([env["YOSYS"], "-q", "-l", "yosys.log", "-p", script], cwd=out,
                         env=env, capture_output=True, text=True)
    t_synth = time.monotonic() - t0
    if res.returncode != 0:
        raise SynthError(f"yosys failed for {unit}/{preset_name} (log: {out}/yosys.log):\n"
                         + res.stderr[-2000:])
    cmd = [env["NEXTPNR_ECP5"], f"--{device}", "--speed", str(speed), "--package", DEVICES[device],
           "--out-of-context", "--freq", str(freq), "--timing-allow-fail", "--seed", str(seed),
           "--json", f"{unit}.json", "-l", "nextpnr.log"]
    if not route:
        cmd.append("--no-route")
    cmd += list(pnr_args)
    logpath = os.path.join(out, "nextpnr.log")
    if os.path.exists(logpath):          # an earlier run's log must not be read as this one's
        os.remove(logpath)
    res = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
    t_pnr = time.monotonic() - t0 - t_synth
    # a bad command line fails before nextpnr opens its log: then stderr says why
    log = open(logpath, errors="replace").read() if os.path.exists(logpath) else ""
    if res.returncode != 0:
        errs = [l for l in (log + "\n" + res.stderr + "\n" + res.stdout).splitlines()
                if l.startswith("ERROR") or "unrecognised option" in l or "unrecognized option" in l]
        raise SynthError(f"nextpnr failed for {unit}/{preset_name}: " + "\n".join(errs[-5:])
                         + f" (log: {out}/nextpnr.log)")
    fmax = parse_nextpnr_fmax(log)
    util = parse_nextpnr_util(log)
    report = {"unit": unit, "preset": preset_name, "device": f"LFE5U-{device.upper()}-{speed}",
              "routed": route, "target_mhz": freq, "seed": seed,
              "flow": FLOWS[flow], "pnr_args": list(pnr_args),
              "fmax_mhz": round(min(v[0] for v in fmax.values()), 2) if fmax else None}
    for k, names in UTIL_KEYS["ecp5"].items():
        hit = [util[n] for n in names if n in util]
        report[k] = hit[0][0] if hit else 0
    report["critical_path"] = parse_critical_path(log)
    report["seconds_synth"] = round(t_synth, 1)
    report["seconds_pnr"] = round(t_pnr, 1)
    write_atomic(os.path.join(out, "report.json"), json.dumps(report, indent=2) + "\n")
    return report


STEP = re.compile(r"Info:\s+(clk-to-q|logic|routing|setup)\s+([\d.]+)\s+([\d.]+)\s+(Source|Net|Sink)\s+(\S+)")


def condensed_path(lines: list[str]) -> list[str]:
    """One line per step of nextpnr's critical path: cumulative ns, kind, net or cell, and
    the first source location nextpnr gives for it (a Python line with emit_src)."""
    out, carry = [], 0
    for i, line in enumerate(lines):
        mt = STEP.match(line)
        if not mt:
            continue
        if "CCU2" in mt.group(5) and float(mt.group(2)) < 0.1:    # inside a carry chain
            carry += 1
            continue
        if carry:
            out.append(f"{'':>10}  ... {carry} carry-chain steps")
            carry = 0
        src = ""
        for nxt in lines[i + 1:i + 6]:
            if STEP.match(nxt):
                break
            ms = re.search(r"(\S+\.(?:py|v):[\d.\-]+)", nxt)
            if ms and "/share/" not in nxt:
                src = ms.group(1)
                break
        kind, step, cum, _, name = mt.groups()
        out.append(f"{float(cum):7.2f} ns  {kind:<8} +{float(step):.2f}  {name[:60]:<60} {src}")
    return out


def summary(r: dict, path_lines: int = 80) -> str:
    head = (f"{r['unit']}/{r['preset']} on {r['device']} ({'routed' if r['routed'] else 'placed only'}): "
            f"Fmax {r['fmax_mhz']} MHz (target {r['target_mhz']}); LUT {r['lut']} FF {r['ff']} "
            f"DSP {r['dsp']} BRAM {r['bram']}; synth {r['seconds_synth']} s, pnr {r['seconds_pnr']} s")
    return head + "\n" + "\n".join(condensed_path(r["critical_path"])[:path_lines])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unit", default="engine", help=f"one of {', '.join(UNITS)}")
    ap.add_argument("--preset", default="small", help=f"one of {', '.join(PRESETS)}")
    ap.add_argument("--freq", type=float, default=100.0, help="target MHz")
    ap.add_argument("--device", default="85k", help=f"one of {', '.join(DEVICES)}")
    ap.add_argument("--speed", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-route", action="store_true", help="stop after placement (estimate)")
    ap.add_argument("--out", default=None, help="default build/timing/<unit>-<preset>")
    ap.add_argument("--abc9", action="store_true", help="map LUTs with ABC9 (default: classic ABC)")
    ap.add_argument("--flow", default=None, choices=sorted(FLOWS),
                    help="LUT mapping: noabc9 (classic abc -lut 4, the default), widelut "
                         "(abc -lut 4:7: PFUMX/L6MUX21 wide LUTs), script (ABC9, as --abc9)")
    ap.add_argument("--pnr-arg", action="append", default=[], metavar="ARG",
                    help="extra nextpnr-ecp5 argument, repeatable (e.g. --pnr-arg=--router=router2)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    return report_cli("rtl.timing", lambda: run(
        args.unit, args.preset, args.freq, args.device, args.speed, args.out,
        route=not args.no_route, seed=args.seed, abc9=args.abc9, flow=args.flow,
        pnr_args=tuple(args.pnr_arg)), summary, args.json)


if __name__ == "__main__":
    sys.exit(main())
