"""cocotb bench of the ReorgUnit (predictor_hw/reorg.py) on Verilator: a driver plays
the engine's write beats (with random gaps, valid without ready too) and a descriptor
source; a monitor takes the samples with random back-pressure.  The case file
(UNIT_CASE) holds the beats and the expected samples (from the golden); the result
(UNIT_RESULT) lists every sample seen, the error status and the cycle count."""
from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge, ClockCycles

from predictor_hw.interfaces import sample_layout
from predictor_hw.reorg import desc_layout
from rtl.config import AcceleratorConfig
from rtl.engine import mem_wr_layout

WATCHDOG = 200_000


def _u(sig) -> int:
    return int(sig.value.to_unsigned()) if hasattr(sig.value, "to_unsigned") else int(sig.value)


@cocotb.test()
async def reorg_bench(dut):
    case = json.loads(open(os.environ["UNIT_CASE"]).read())
    cfg = AcceleratorConfig(**case["cfg"])
    rng = random.Random(case["seed"])
    wr_l, d_l, s_l = mem_wr_layout(cfg), desc_layout(cfg), sample_layout(cfg)
    Clock(dut.clk, 10, unit="ns").start()
    for s in ("tap__valid", "tap__ready", "desc__valid", "samples__ready"):
        getattr(dut, s).value = 0
    dut.tap__payload.value = 0
    dut.desc__payload.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    got, errors, status = [], [], {"cycles": 0}
    expect_n = sum(len(L["want"]) for L in case["layers"])

    async def drive():
        for L in case["layers"]:
            dut.desc__payload.value = d_l.const(L["desc"]).as_bits()
            dut.desc__valid.value = 1
            while True:
                await ReadOnly()
                accepted, err = _u(dut.desc__ready), _u(dut.error)
                await RisingEdge(dut.clk)
                if accepted or err:
                    break
            dut.desc__valid.value = 0
            await RisingEdge(dut.clk)
            if L.get("expect_error"):
                return
            for addr, val, en in L["beats"]:
                while rng.random() < case["gap_prob"]:
                    dut.tap__valid.value = int(rng.random() < 0.5)
                    dut.tap__ready.value = 0
                    await RisingEdge(dut.clk)
                dut.tap__payload.value = wr_l.const({
                    "addr": addr, "data": [v & ((1 << cfg.slot_bits) - 1) for v in val],
                    "en": sum(e << j for j, e in enumerate(en)),
                    "mask_addr": addr, "mask": rng.getrandbits(cfg.cols), "mask_en": 0}).as_bits()
                dut.tap__valid.value = 1
                dut.tap__ready.value = 1
                await RisingEdge(dut.clk)
            dut.tap__valid.value = 0
            await ClockCycles(dut.clk, 4)

    async def monitor():
        while len(got) < expect_n and status["cycles"] < WATCHDOG:
            rdy = int(rng.random() < case["ready_prob"])
            dut.samples__ready.value = rdy
            await ReadOnly()
            if _u(dut.error):
                errors.append(_u(dut.error))
                return
            if rdy and _u(dut.samples__valid):
                v = s_l.from_bits(_u(dut.samples__payload))
                got.append(dict(channel=int(v.channel), last=int(v.last), pix=[int(p) for p in v.pix],
                                layer_id=_u(dut.layer_id), k=_u(dut.layer_k)))
            await RisingEdge(dut.clk)
            status["cycles"] += 1

    cocotb.start_soon(drive())
    await monitor()
    await ClockCycles(dut.clk, 10)
    with open(os.environ["UNIT_RESULT"], "w") as f:
        json.dump(dict(samples=got, error=_u(dut.error), busy=_u(dut.busy), cycles=status["cycles"],
                       timed_out=status["cycles"] >= WATCHDOG), f)
