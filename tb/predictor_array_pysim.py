"""Drive the PredictorArray in Amaranth's simulator (the fast unit-test bench and the
``--sim amaranth`` option of cosim.predictor_array_model)."""
import numpy as np
from amaranth.sim import Simulator

from predictor_hw.predictor_array import COUNTERS, Geometry, PredictorArray


def run_pysim(cfg, jobs, weights, ready_prob=1.0, valid_prob=1.0, seed=0, max_cycles=200_000,
              last_weight_at_start=False, k_ok_port=False):
    """Load ``weights`` beats, then run ``jobs`` one after another.  A job is a dict
    (mode, k, shift1, shift2, beats); returns per job its outputs, counter deltas and error.
    ``last_weight_at_start``: the last weight beat is offered in the first job's first
    cycle, beside its first input beat (it must be written in the cycle the job starts).
    ``k_ok_port``: the array takes ``k_ok`` from this driver (as in the Accelerator),
    1 <= k <= pred_kmax unless a job gives its own ``k_ok``."""
    dut = PredictorArray(cfg, check_step=True, k_ok_port=k_ok_port)   # asserts the registered step every cycle
    rng = np.random.default_rng(seed)
    results = []
    wl = dut.weights.payload.shape()
    sl, fl = dut.samples.payload.shape(), dut.feats.payload.shape()

    async def counters(ctx):
        c = ctx.get(dut.counters)
        return {n: int(c[n]) for n in COUNTERS}

    async def tb(ctx):
        cyc = 0
        ws = list(weights)
        late = ws.pop() if last_weight_at_start else None
        for w in ws:
            ctx.set(dut.weights.valid, 1)
            ctx.set(dut.weights.payload, wl.const(w))
            while not ctx.get(dut.weights.ready):
                await ctx.tick()
            await ctx.tick()
        ctx.set(dut.weights.valid, 0)
        if late is not None:
            ctx.set(dut.weights.valid, 1)
            ctx.set(dut.weights.payload, wl.const(late))
        for job in jobs:
            ctx.set(dut.mode, job["mode"])
            ctx.set(dut.k, job["k"])
            if k_ok_port:
                ctx.set(dut.k_ok, job.get("k_ok", int(1 <= job["k"] <= cfg.pred_kmax)))
            ctx.set(dut.shift1, job.get("shift1", 0))
            ctx.set(dut.shift2, job.get("shift2", 0))
            before = await counters(ctx)
            inp = dut.feats if job["mode"] else dut.samples
            out = dut.logits if job["mode"] else dut.rows
            lay = fl if job["mode"] else sl
            beats = list(job["beats"])
            got = []
            i = 0
            done_in = False
            while True:
                if i < len(beats) and rng.random() < valid_prob:
                    ctx.set(inp.valid, 1)
                    ctx.set(inp.payload, lay.const(beats[i]))
                else:
                    ctx.set(inp.valid, 0)
                ctx.set(out.ready, int(rng.random() < ready_prob))
                in_fire = ctx.get(inp.valid) and ctx.get(inp.ready)
                if late is not None:
                    assert ctx.get(dut.weights.ready) and ctx.get(inp.valid), "the late weight beat was not taken"
                if ctx.get(out.valid) and ctx.get(out.ready):
                    got.append(ctx.get(out.payload))
                await ctx.tick()
                if late is not None:
                    ctx.set(dut.weights.valid, 0)
                    late = None
                cyc += 1
                assert cyc < max_cycles, "watchdog: the array did not finish"
                if in_fire:
                    i += 1
                done_in = i == len(beats)
                if done_in and not ctx.get(dut.busy):
                    break
            ctx.set(inp.valid, 0)
            after = await counters(ctx)
            results.append(dict(out=[_py(cfg, job["mode"], b) for b in got],
                                counters={n: after[n] - before[n] for n in COUNTERS},
                                error=ctx.get(dut.error)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return results


def _py(cfg, mode, b):
    g = Geometry(cfg)
    if mode:
        return dict(z=[int(b["z"][l]) for l in range(g.L)], en=[int(b["en"]) >> l & 1 for l in range(g.L)],
                    group=int(b["group"]), last=int(b["last"]))
    return dict(data=[int(b["data"][j]) for j in range(g.Cc)], en=[int(b["en"]) >> j & 1 for j in range(g.Cc)],
                channel=int(b["channel"]), col=int(b["col"]), last=int(b["last"]))


def sample_beats(x, channels):
    n = x.shape[0]
    return [dict(pix=[int(v) for v in x[i, 0].reshape(-1)], channel=int(channels[i]), last=int(i == n - 1))
            for i in range(n)]
