"""Logic-depth and fan-out estimate of a unit's ECP5 netlist, without place and route.

    python -m rtl.paths --unit engine --preset default [--top 30] [--period 10]

Place and route of the engine at ``default`` takes 10-15 minutes and reports one
critical path; after a fix the next path is usually about as long.  This reads the
Yosys netlist that ``rtl.timing`` synthesizes (``<out>/<unit>.json``, made if missing)
and estimates, for *every* register input, the latest arrival of a signal from a
register output, with a simple delay model of the ECP5 (speed 6) fitted to the routed
paths nextpnr reported for this design:

* a flip-flop's clock-to-out 0.52 ns; setup 0.42 ns (D, CE and LSR alike);
* a LUT4 or a wide-mux cell 0.24 ns; a CCU2C 0.45 ns from its inputs, 0.06 ns carry in
  to carry out (the carry chain's dedicated nets cost nothing);
* a block RAM's output 4.0 ns after the clock (no output register); a multiplier 3.8 ns
  from its inputs (no internal register); a LUT-RAM 0.5 ns from its read address;
* each net 0.55 + 0.2 * log2(fan-out) ns of routing: placement is not known, so a
  net that nextpnr routes across the die (3-4 ns) is underestimated and high fan-out
  is what the model sees.

The endpoints are grouped by register (the net name without its bit index) and the
worst ``--top`` printed with their paths and Python source lines (the Verilog is
written with ``emit_src``), then the nets with the largest fan-out driven by logic
rather than by a flip-flop.  The figures are estimates for ranking the work: the
routed figure is ``rtl.timing``'s.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from collections import defaultdict

from model_sw.fileio import write_atomic

from .config import PRESETS, preset
from .synth import FAMILIES, SynthError, build_env

CLK_TO_Q, SETUP = 0.52, 0.42
LUT, CARRY_IN, CARRY_THROUGH = 0.24, 0.45, 0.06
BRAM_OUT, MULT, LUTRAM = 4.0, 3.8, 0.5
SEQ_INPUTS = {"TRELLIS_FF": None, "DP16KD": None, "TRELLIS_DPR16X4": ("DI", "WAD", "WRE")}
# a MULT18X18D with its output register (rtl/dsp.py): nextpnr 0.11's figures for the
# product's setup after the A/B inputs and the register's clock-to-out
DSP_REG_SETUP, DSP_CLK_TO_Q = 3.49, 0.74


def dsp_registered(cell: dict) -> bool:
    """A MULT18X18D whose product leaves its output register (not the plain multiplier)."""
    return (cell["type"] == "MULT18X18D"
            and str(cell.get("parameters", {}).get("REG_OUTPUT_CLK", "NONE")).strip() != "NONE")


def net_delay(fanout: int) -> float:
    return 0.55 + 0.2 * math.log2(max(fanout, 1))


def synthesize(unit: str, preset_name: str, out: str) -> str:
    """The unit's mapped ECP5 netlist as Yosys JSON (the flow of ``rtl.timing``)."""
    from .timing import unit_verilog
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{unit}.json")
    write_atomic(os.path.join(out, f"{unit}.v"), unit_verilog(unit, preset(preset_name)))
    env = build_env()
    script = f"read_verilog {unit}.v; {FAMILIES['ecp5']['noabc9'].format(top=unit)}; write_json {unit}.json"
    res = subprocess.run([env["YOSYS"], "-q", "-l", "yosys.log", "-p", script], cwd=out,
                         env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SynthError(f"yosys failed for {unit}/{preset_name} (log: {out}/yosys.log):\n" + res.stderr[-2000:])
    return path


class Netlist:
    """Bits, their drivers and sinks, and a name and source line for each bit."""

    def __init__(self, module: dict):
        self.cells = module["cells"]
        self.driver: dict[int, tuple[str, str]] = {}
        self.sinks: dict[int, list[tuple[str, str]]] = defaultdict(list)
        self.name: dict[int, str] = {}
        self.src: dict[int, str] = {}
        for cname, c in self.cells.items():
            dirs = c.get("port_directions", {})
            for port, bits in c["connections"].items():
                for b in bits:
                    if not isinstance(b, int):
                        continue
                    if dirs.get(port) == "output":
                        self.driver[b] = (cname, port)
                    else:
                        self.sinks[b].append((cname, port))
        self.inputs = set()
        for pname, p in module.get("ports", {}).items():
            for i, b in enumerate(p["bits"]):
                if isinstance(b, int) and p["direction"] == "input":
                    self.inputs.add(b)
        # prefer public names (no '$'), then the shortest
        for nname, n in sorted(module["netnames"].items(), key=lambda kv: ("$" in kv[0], len(kv[0]))):
            src = n.get("attributes", {}).get("src", "")
            for i, b in enumerate(n["bits"]):
                if isinstance(b, int) and b not in self.name:
                    self.name[b] = nname if len(n["bits"]) == 1 else f"{nname}[{i}]"
                    self.src[b] = src

    def fanout(self, b: int) -> int:
        return len(self.sinks.get(b, ()))


def _arcs(ctype: str):
    """(input port prefix set, output port, delay) of a combinational cell, or None for a
    sequential start point; ``"*"`` = every input."""
    if ctype == "LUT4" or ctype in ("PFUMX", "L6MUX21"):
        return [("*", "*", LUT)]
    if ctype == "CCU2C":
        return [("CIN", "*", CARRY_THROUGH), ("*", "*", CARRY_IN)]
    if ctype == "MULT18X18D":
        return [("*", "*", MULT)]
    if ctype == "TRELLIS_DPR16X4":
        return [("RAD", "DO", LUTRAM)]
    return None


def _port_base(port: str) -> str:
    return re.sub(r"\d+$", "", port)


def arrivals(nl: Netlist):
    """A function: bit -> (latest arrival in ns at its driver's output, the input bit that
    arrival came from), memoised (a longest-path walk of the combinational DAG)."""
    starts = []
    for b, (cname, port) in nl.driver.items():
        t = nl.cells[cname]["type"]
        if t == "TRELLIS_FF":
            starts.append((b, CLK_TO_Q))
        elif t == "DP16KD":
            starts.append((b, BRAM_OUT))
        elif dsp_registered(nl.cells[cname]):
            starts.append((b, DSP_CLK_TO_Q))
        elif _arcs(t) is not None:              # combinational (the DSP, the LUT-RAM read)
            continue
        else:                                       # unknown cell: treat as a start point
            starts.append((b, CLK_TO_Q))
    for b in nl.inputs:
        starts.append((b, 0.0))
    # cell outputs' arrival = max over inputs (input arrival + routing) + arc delay
    memo_out: dict[int, tuple[float, int | None]] = {}
    for b, t0 in starts:
        memo_out[b] = (t0, None)

    sys.setrecursionlimit(100000)

    visiting = set()

    def out_arrival(b: int) -> tuple[float, int | None]:
        if b in memo_out:
            return memo_out[b]
        if b not in nl.driver:                      # constant or undriven
            memo_out[b] = (0.0, None)
            return memo_out[b]
        if b in visiting:                           # combinational loop: cut it
            return (0.0, None)
        visiting.add(b)
        cname, port = nl.driver[b]
        c = nl.cells[cname]
        best = (0.0, None)
        for inp_pref, outp, d in _arcs(c["type"]) or []:
            for p, bits in c["connections"].items():
                if c["port_directions"].get(p) != "input":
                    continue
                if inp_pref != "*" and _port_base(p) != inp_pref:
                    continue
                if inp_pref == "*" and _port_base(p) == "CIN":
                    continue
                for ib in bits:
                    if not isinstance(ib, int):
                        continue
                    t, _ = out_arrival(ib)
                    # the carry chain's own nets (COUT -> CIN) are dedicated wires
                    t += 0.0 if _port_base(p) == "CIN" else net_delay(nl.fanout(ib))
                    if t + d > best[0]:
                        best = (t + d, ib)
        visiting.discard(b)
        memo_out[b] = best
        return best

    return out_arrival


def endpoints(nl: Netlist, out_arrival):
    """(arrival incl. setup, endpoint description, bit feeding it) for every sequential input."""
    res = []
    for cname, c in nl.cells.items():
        t = c["type"]
        setup = SETUP
        if dsp_registered(c):
            ports, setup = ("A", "B", "CE"), DSP_REG_SETUP
        elif t not in SEQ_INPUTS:
            continue
        else:
            ports = SEQ_INPUTS[t]
        for p, bits in c["connections"].items():
            if c["port_directions"].get(p) != "input" or _port_base(p) in ("CLK", "WCK", "CLKA", "CLKB"):
                continue
            if ports is not None and _port_base(p) not in ports:
                continue
            for b in bits:
                if not isinstance(b, int):
                    continue
                a, _ = out_arrival(b)
                a += net_delay(nl.fanout(b)) + setup
                res.append((a, cname, p, b))
    return res


def trace(nl: Netlist, out_arrival, b: int) -> list[int]:
    path = []
    while b is not None:
        path.append(b)
        b = out_arrival(b)[1]
    return path[::-1]


def _reg_name(nl: Netlist, cname: str) -> str:
    c = nl.cells[cname]
    if c["type"] == "TRELLIS_FF":
        q = c["connections"]["Q"][0]
        return re.sub(r"\[\d+\]$", "", nl.name.get(q, cname))
    return re.sub(r"\.\d+\.\d+$", "", cname)


def _short_src(src: str) -> str:
    parts = [s for s in src.split("|") if ".py:" in s and "/site-packages/" not in s]
    if not parts:
        return ""
    s = parts[0]
    return os.path.basename(s.split(":")[0]) + ":" + s.split(":")[1].split(".")[0]


def report(unit: str, preset_name: str, out: str | None = None, top: int = 30,
           period: float = 10.0, resynth: bool = False, netlist: str | None = None) -> str:
    if preset_name not in PRESETS:
        raise SynthError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    if netlist is not None:
        if not os.path.exists(netlist):
            raise SynthError(f"--netlist {netlist!r}: no such file")
        path = netlist
    else:
        out = out or os.path.join("build", "paths", f"{unit}-{preset_name}")
        path = os.path.join(out, f"{unit}.json")
        if resynth or not os.path.exists(path):
            path = synthesize(unit, preset_name, out)
    with open(path) as f:
        mods = json.load(f)["modules"]
    if unit not in mods:
        raise SynthError(f"{path}: no module {unit!r} (has {', '.join(sorted(mods))})")
    mod = mods[unit]
    nl = Netlist(mod)
    oa = arrivals(nl)
    eps = endpoints(nl, oa)
    worst: dict[str, tuple] = {}
    for e in eps:
        key = _reg_name(nl, e[1]) + "." + _port_base(e[2])
        if key not in worst or e[0] > worst[key][0]:
            worst[key] = e
    ranked = sorted(worst.items(), key=lambda kv: -kv[1][0])
    over = sum(1 for _, e in ranked if e[0] > period)
    lines = [f"{unit}/{preset_name}: {len(eps)} register inputs, {len(ranked)} registers/ports; "
             f"{over} estimated over {period} ns (worst {ranked[0][1][0]:.2f} ns = "
             f"{1000 / ranked[0][1][0]:.1f} MHz, estimate)"]
    for key, (a, cname, port, b) in ranked[:top]:
        lines.append(f"\n{a:6.2f} ns  -> {key}")
        for pb in trace(nl, oa, b):
            drv = nl.driver.get(pb)
            ctype = nl.cells[drv[0]]["type"] if drv else "port"
            lines.append(f"    {oa(pb)[0]:6.2f}  fo={nl.fanout(pb):<5} {ctype:<11} "
                         f"{nl.name.get(pb, str(pb))[:70]:<70} {_short_src(nl.src.get(pb, ''))}")
    hi = sorted(((nl.fanout(b), b) for b, (cn, _) in nl.driver.items()
                 if nl.cells[cn]["type"] not in ("TRELLIS_FF",)), reverse=True)[:15]
    lines.append("\nLargest fan-out driven by logic (not a flip-flop):")
    for fo, b in hi:
        lines.append(f"    fo={fo:<5} {nl.cells[nl.driver[b][0]]['type']:<11} {nl.name.get(b, str(b))[:70]:<70} "
                     f"{_short_src(nl.src.get(b, ''))}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unit", default="engine")
    ap.add_argument("--preset", default="small", help=f"one of {', '.join(PRESETS)}")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--period", type=float, default=10.0, help="target period, ns")
    ap.add_argument("--out", default=None, help="default build/paths/<unit>-<preset>")
    ap.add_argument("--netlist", default=None, help="use this Yosys JSON (e.g. rtl.timing's)")
    ap.add_argument("--resynth", action="store_true", help="synthesize even if the netlist exists")
    args = ap.parse_args(argv)
    try:
        print(report(args.unit, args.preset, args.out, args.top, args.period, args.resynth, args.netlist))
    except SynthError as e:
        print(f"rtl.paths: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
