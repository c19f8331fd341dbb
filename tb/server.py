"""cocotb test that turns the simulator into a batch executor for the host.

The host (``cosim.rtlsim.RtlSim``) sends one JSON command per line on a named
pipe and reads one JSON reply per line on another.  Commands move bulk data
through files ($readmemh/$writememh in tb/harness.sv), so no Python runs per
simulated cycle while a program executes: Python only awaits ``done``.
"""
import json
import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge


async def pulse(dut, sig):
    sig.value = 1
    await RisingEdge(dut.clk)
    sig.value = 0
    await RisingEdge(dut.clk)


def unsigned(sig) -> int:
    """A signal's value as an unsigned int (1-bit signals are Logic, wider LogicArray)."""
    v = sig.value
    try:
        return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)
    except ValueError:
        raise ValueError(f"{sig._name} holds X/Z bits: {v}") from None


def read_counters(dut, names, bits):
    word = unsigned(dut.counters)
    mask = (1 << bits) - 1
    return {n: (word >> (i * bits)) & mask for i, n in enumerate(names)}


@cocotb.test()
async def serve(dut):
    names = os.environ["GA_COUNTERS"].split(",")
    bits = int(os.environ["GA_COUNTER_BITS"])
    if not os.environ.get("GA_INTERNAL_CLOCK"):
        Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    for s in ("load_mem", "load_prog", "dump_mem", "start", "fault_en"):
        getattr(dut, s).value = 0
    dut.dump_lo.value = 0
    dut.dump_hi.value = 0
    dut.prog_len.value = 0
    dut.stall_prob.value = 0
    dut.stall_seed.value = 1
    dut.watchdog.value = 1 << 40
    dut.fault_addr.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    with open(os.environ["GA_CMD"]) as cmd, open(os.environ["GA_RSP"], "w") as rsp:
        for line in cmd:
            try:
                reply = await handle(dut, json.loads(line), names, bits)
            except Exception as e:  # report to the host instead of dying silently
                reply = {"ok": False, "why": f"{type(e).__name__}: {e}"}
            rsp.write(json.dumps(reply) + "\n")
            rsp.flush()
            if reply.get("quit"):
                return


async def handle(dut, req, names, bits):
    op = req["op"]
    reply = {"ok": True}
    if op == "load_mem":
        await pulse(dut, dut.load_mem)
    elif op == "load_prog":
        await pulse(dut, dut.load_prog)
    elif op == "dump":
        dut.dump_lo.value = req["lo"]
        dut.dump_hi.value = req["hi"]
        await pulse(dut, dut.dump_mem)
    elif op == "run":
        dut.prog_len.value = req["prog_len"]
        dut.stall_prob.value = req.get("stall_prob", 0)
        dut.stall_seed.value = req.get("stall_seed", 1)
        dut.watchdog.value = req["watchdog"]
        dut.fault_en.value = 1 if req.get("fault_addr") is not None else 0
        dut.fault_addr.value = req.get("fault_addr") or 0
        # a fresh engine per run: the sticky error status speaks of this run only
        # (the harness registers rst once more before the engine sees it; counters
        # read at an edge show the values from before that edge, so wait two edges)
        dut.rst.value = 1
        await RisingEdge(dut.clk)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 3)
        before = read_counters(dut, names, bits)
        zero_before = unsigned(dut.zero_lanes)
        t0 = time.perf_counter()
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await RisingEdge(dut.done)
        wall = time.perf_counter() - t0
        after = read_counters(dut, names, bits)
        reply.update(
            timed_out=bool(unsigned(dut.timed_out)), error=unsigned(dut.error),
            run_cycles=unsigned(dut.run_cycles),
            counters={n: after[n] - before[n] for n in names},
            zero_lanes=unsigned(dut.zero_lanes) - zero_before,
            wall_s=wall)
    elif op == "quit":
        reply["quit"] = True
    else:
        reply = {"ok": False, "why": f"unknown command {op!r}"}
    return reply
