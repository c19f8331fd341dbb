"""rtl/skid.py: the register slice passes every entry once, in order, under random
back-pressure on both sides, at one entry per cycle when neither side waits, and its
``i.ready`` does not follow ``o.ready`` within a cycle (it is a register)."""
import numpy as np

from cosim.simlink import run_amaranth
from rtl.skid import SkidBuffer


def _run(valid_p: float, ready_p: float, n: int = 200, seed: int = 0):
    dut = SkidBuffer(16)
    rng = np.random.default_rng(seed)
    sent = [int(v) for v in rng.integers(0, 1 << 16, n)]
    offer = rng.random(4 * n + 50) < valid_p
    take = rng.random(4 * n + 50) < ready_p

    async def bench(ctx):
        got, k, first_take = [], 0, None
        for t in range(len(offer)):
            ctx.set(dut.i.valid, int(offer[t] and k < n))
            ctx.set(dut.i.payload, sent[k] if k < n else 0)
            ctx.set(dut.o.ready, int(take[t]))
            i_fire = ctx.get(dut.i.valid) and ctx.get(dut.i.ready)
            o_fire = ctx.get(dut.o.valid) and ctx.get(dut.o.ready)
            if o_fire:
                got.append(ctx.get(dut.o.payload))
                first_take = t if first_take is None else first_take
            # i.ready is a register: flipping o.ready now does not change it
            r0 = ctx.get(dut.i.ready)
            ctx.set(dut.o.ready, int(not take[t]))
            assert ctx.get(dut.i.ready) == r0
            ctx.set(dut.o.ready, int(take[t]))
            await ctx.tick()
            k += int(i_fire)
        return got, first_take

    got, first = run_amaranth(dut, bench)
    return sent, got, first


def test_skid_buffer_order_under_back_pressure():
    for seed, (vp, rp) in enumerate([(0.5, 0.5), (0.9, 0.3), (0.3, 0.9), (1.0, 0.7)]):
        sent, got, _ = _run(vp, rp, seed=seed)
        assert got == sent[:len(got)] and len(got) == len(sent), (vp, rp, len(got))


def test_skid_buffer_full_throughput():
    sent, got, first = _run(1.0, 1.0, n=50)
    assert got == sent and first == 1          # one cycle of latency, then one per cycle
