"""cocotb testbench of the PredictorArray (Verilog from Amaranth, run on Verilator or Icarus).

The case file (env ``UNIT_CASE``, JSON) holds the configuration, the weights and a list of
jobs (predictor layers or Assistant batches) with their raw data; ``model()`` computes
the expected output beats from model_sw's integer functions.  Stream drivers and
monitors run with the valid / ready probabilities each job asks for (random
back-pressure); every output beat must be bit-exact, and the counters must equal the
cycle model (exactly with no back-pressure; steps, MACs and busy - stall otherwise).
The per-job outcome is written to ``UNIT_RESULT`` (JSON) for the pytest side.
"""
from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from amaranth.lib import data

from model_sw.adagp_predictor import predictor_forward_int
from model_sw.autoassist_assistant import assistant_logit_int
from predictor_hw.interfaces import grad_row_layout, sample_layout
from predictor_hw.predictor_array import (
    COUNTERS, Geometry, assistant_cycles, counters_layout, feat_layout, feature_beats, logit_layout,
    pack_assistant_weights, pack_predictor_weights, predictor_array_cycles, weight_layout)
from rtl.config import AcceleratorConfig

WATCHDOG = 400_000


def model(cfg, job: dict, params: dict) -> list[dict]:
    """Reference output beats of one job, straight from model_sw's integer functions."""
    g = Geometry(cfg)
    if job["mode"] == 0:
        x = np.asarray(job["x"])
        k = job["k"]
        out = predictor_forward_int(x, params["w1"], params["w2"], params["shift1"], params["shift2"],
                                    cfg.pred_pool, k)
        rows = []
        for i, ch in enumerate(job["channels"]):
            for col in range(0, k, g.Cc):
                en = [int(col + j < k) for j in range(g.Cc)]
                rows.append(dict(data=[int(out[i, col + j]) * e for j, e in enumerate(en)], en=en,
                                 channel=ch, col=col, last=0))
        rows[-1]["last"] = 1
        return rows
    z = assistant_logit_int(job["x"], params["aw"], params["au"], job["y"])
    beats = []
    for gi, lo in enumerate(range(0, len(z), g.L)):
        zz = [int(v) for v in z[lo:lo + g.L]]
        pad = g.L - len(zz)
        beats.append(dict(z=zz + [0] * pad, en=[1] * len(zz) + [0] * pad, group=gi, last=0))
    beats[-1]["last"] = 1
    return beats


def bits(layout, value: dict) -> int:
    return layout.const(value).as_bits()


def unpack(layout, v: int) -> dict:
    c = data.Const(layout, v)
    out = {}
    for name, field in layout:
        f = c[name]
        if isinstance(field.shape, data.ArrayLayout):
            out[name] = [int(f[i]) for i in range(field.shape.length)]
        else:
            out[name] = int(f)
    return out


def to_lists(cfg, mode, b: dict) -> dict:
    n = Geometry(cfg).L if mode else cfg.pred_cols
    b = dict(b)
    b["en"] = [b["en"] >> i & 1 for i in range(n)]
    return b


class StreamDriver:
    """Drives one stream's valid / payload, with a random gap before each beat."""

    def __init__(self, dut, name, layout, valid_prob, rng):
        self.valid, self.ready = getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.layout, self.p, self.rng, self.clk = layout, valid_prob, rng, dut.clk
        self.sent = 0

    async def send(self, beats):
        i = 0
        while i < len(beats):
            on = self.rng.random() < self.p
            self.valid.value = int(on)
            if on:
                self.payload.value = bits(self.layout, beats[i])
            await ReadOnly()
            fire = on and int(self.ready.value)
            await RisingEdge(self.clk)
            if fire:
                i += 1
                self.sent += 1
        self.valid.value = 0


class StreamMonitor:
    """Drives one stream's ready at random and collects the beats handed over."""

    def __init__(self, dut, name, layout, ready_prob, rng):
        self.valid, self.ready = getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.layout, self.p, self.rng, self.clk = layout, ready_prob, rng, dut.clk
        self.beats = []

    async def collect(self, until_last=True):
        while True:
            on = self.rng.random() < self.p
            self.ready.value = int(on)
            await ReadOnly()
            if on and int(self.valid.value):
                b = unpack(self.layout, int(self.payload.value))
                self.beats.append(b)
                await RisingEdge(self.clk)
                if until_last and b["last"]:
                    self.ready.value = 0
                    return
            else:
                await RisingEdge(self.clk)


async def read_counters(dut) -> dict:
    await ReadOnly()
    c = unpack(counters_layout(), int(dut.counters.value))
    await RisingEdge(dut.clk)
    return c


@cocotb.test()
async def predictor_array_jobs(dut):
    case = json.loads(open(os.environ["UNIT_CASE"]).read())
    cfg = AcceleratorConfig(**case["cfg"])
    params = case["params"]
    rng = random.Random(case.get("seed", 1))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for s in ("samples", "feats", "weights"):
        getattr(dut, f"{s}__valid").value = 0
    dut.rows__ready.value = 0
    dut.logits__ready.value = 0
    dut.mode.value, dut.k.value, dut.shift1.value, dut.shift2.value = 0, 1, 0, 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    beats = []
    if "w1" in params:
        beats += pack_predictor_weights(cfg, params["w1"], params["w2"])
    if "aw" in params:
        beats += pack_assistant_weights(cfg, params["aw"], params["au"])
    await StreamDriver(dut, "weights", weight_layout(cfg), 1.0, rng).send(beats)

    results = []
    for job in case["jobs"]:
        mode = job["mode"]
        dut.mode.value, dut.k.value = mode, job["k"]
        dut.shift1.value, dut.shift2.value = params.get("shift1", 0), params.get("shift2", 0)
        if mode == 0:
            inb = [dict(pix=[int(v) for v in np.asarray(xi).reshape(-1)], channel=ch,
                        last=int(i == len(job["x"]) - 1)) for i, (xi, ch) in enumerate(zip(job["x"], job["channels"]))]
            drv = StreamDriver(dut, "samples", sample_layout(cfg), job["valid_prob"], rng)
            mon = StreamMonitor(dut, "rows", grad_row_layout(cfg), job["ready_prob"], rng)
        else:
            inb = feature_beats(cfg, job["x"], job["y"])
            drv = StreamDriver(dut, "feats", feat_layout(cfg), job["valid_prob"], rng)
            mon = StreamMonitor(dut, "logits", logit_layout(cfg), job["ready_prob"], rng)
        before = await read_counters(dut)
        t_in = cocotb.start_soon(drv.send(inb))
        t_out = cocotb.start_soon(mon.collect())
        refused = job.get("expect_error", 0)
        cycles = 0
        while not (t_in.done() and (refused or t_out.done())):
            await RisingEdge(dut.clk)
            cycles += 1
            assert cycles < WATCHDOG, f"watchdog: job {job['name']} did not finish in {WATCHDOG} cycles"
        while int(dut.busy.value):
            await RisingEdge(dut.clk)
        if refused:      # a refused job: its input is dropped, nothing comes out, error status set
            for _ in range(20):
                await RisingEdge(dut.clk)
            t_out.cancel()
            dut.rows__ready.value = dut.logits__ready.value = 0
            after = await read_counters(dut)
            results.append(dict(name=job["name"], mode=mode, k=job["k"], n=len(job["x"]), beats=len(mon.beats),
                                error=int(dut.error.value), expect_error=refused,
                                counters={n: after[n] - before[n] for n in COUNTERS}))
            continue
        after = await read_counters(dut)
        got = [to_lists(cfg, mode, b) for b in mon.beats]
        want = model(cfg, job, params)
        counters = {n: after[n] - before[n] for n in COUNTERS}
        n_in = len(job["x"])
        cm = predictor_array_cycles(cfg, n_in, job["k"]) if mode == 0 else assistant_cycles(cfg, n_in, job["k"])
        full_rate = job["valid_prob"] == 1.0 and job["ready_prob"] == 1.0
        bad = [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
        ok_cycles = (counters == dict(cm, errors=0)) if full_rate else (
            all(counters[n] == cm[n] for n in ("step_cycles", "macs", "in_beats", "out_beats"))
            and counters["busy_cycles"] - counters["stall_cycles"] == cm["busy_cycles"] - cm["stall_cycles"])
        results.append(dict(name=job["name"], mode=mode, k=job["k"], n=n_in, beats=len(got), want_beats=len(want),
                            bit_exact=len(got) == len(want) and not bad, first_bad=bad[:3],
                            counters=counters, model=cm, cycles_ok=bool(ok_cycles), full_rate=full_rate,
                            error=int(dut.error.value)))
        if job.get("return_outputs"):
            results[-1]["outputs"] = got
        dut._log.info("job %s: %d beats, bit_exact=%s, counters=%s", job["name"], len(got),
                      results[-1]["bit_exact"], counters)
    with open(os.environ["UNIT_RESULT"], "w") as fh:
        json.dump(results, fh)
    for r in results:
        if r.get("expect_error"):
            assert r["beats"] == 0 and r["error"] == r["expect_error"] and r["counters"]["errors"] == 1, r
            continue
        assert r["bit_exact"], f"job {r['name']}: outputs differ from model() at beats {r['first_bad']}"
        assert r["cycles_ok"], f"job {r['name']}: counters {r['counters']} != cycle model {r['model']}"
        assert r["error"] == 0
