"""rtl/skid.py: the register slice passes every entry once, in order, under random
back-pressure on both sides, at one entry per cycle when neither side waits, and its
``i.ready`` does not follow ``o.ready`` within a cycle (it is a register); so does the
late-ready pass-through, at one entry per two cycles; ``offered_for``
counts a beat's waiting cycles and rejects a count below 1."""
import numpy as np
import pytest
from amaranth import Elaboratable, Fragment, Module, Signal

from cosim.simlink import run_amaranth
from rtl.skid import LateReady, SkidBuffer, offered_for


def _run(valid_p: float, ready_p: float, n: int = 200, seed: int = 0, unit=SkidBuffer,
         hold: bool = False):
    """``hold``: the producer keeps an offered beat valid until it is taken (the stream rule
    LateReady relies on; the SkidBuffer takes a producer that withdraws too)."""
    dut = unit(16)
    rng = np.random.default_rng(seed)
    sent = [int(v) for v in rng.integers(0, 1 << 16, n)]
    offer = rng.random(8 * n + 50) < valid_p
    take = rng.random(8 * n + 50) < ready_p

    async def bench(ctx):
        got, k, first_take, offered, last_take = [], 0, None, False, None
        for t in range(len(offer)):
            offered = (offer[t] or (hold and offered)) and k < n
            ctx.set(dut.i.valid, int(offered))
            ctx.set(dut.i.payload, sent[k] if k < n else 0)
            ctx.set(dut.o.ready, int(take[t]))
            i_fire = ctx.get(dut.i.valid) and ctx.get(dut.i.ready)
            o_fire = ctx.get(dut.o.valid) and ctx.get(dut.o.ready)
            if o_fire:
                got.append(ctx.get(dut.o.payload))
                first_take = t if first_take is None else first_take
                last_take = t
            # i.ready is a register: flipping o.ready now does not change it
            r0 = ctx.get(dut.i.ready)
            ctx.set(dut.o.ready, int(not take[t]))
            assert ctx.get(dut.i.ready) == r0
            ctx.set(dut.o.ready, int(take[t]))
            await ctx.tick()
            k += int(i_fire)
            offered = offered and not i_fire
        return got, first_take, last_take

    got, first, last = run_amaranth(dut, bench)
    return sent, got, first, last


def test_skid_buffer_order_under_back_pressure():
    for seed, (vp, rp) in enumerate([(0.5, 0.5), (0.9, 0.3), (0.3, 0.9), (1.0, 0.7)]):
        sent, got, _, _ = _run(vp, rp, seed=seed)
        assert got == sent[:len(got)] and len(got) == len(sent), (vp, rp, len(got))


def test_skid_buffer_full_throughput():
    sent, got, first, last = _run(1.0, 1.0, n=50)
    assert got == sent and first == 1 and last == 50   # one cycle of latency, then one per cycle


def test_late_ready_order_under_back_pressure():
    for seed, (vp, rp) in enumerate([(0.5, 0.5), (0.9, 0.3), (0.3, 0.9), (1.0, 0.7)]):
        sent, got, _, _ = _run(vp, rp, seed=seed, unit=LateReady, hold=True)
        assert got == sent[:len(got)] and len(got) == len(sent), (vp, rp, len(got))


def test_late_ready_half_throughput():
    sent, got, first, last = _run(1.0, 1.0, n=50, unit=LateReady, hold=True)
    assert got == sent and first == 0 and last == 98   # no latency, one entry per two cycles


class _Offered(Elaboratable):
    """offered_for on a bare valid/ready pair, so its flag can be watched."""
    def __init__(self, cycles):
        self.cycles, self.valid, self.ready, self.flag = cycles, Signal(), Signal(), Signal()

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.flag.eq(offered_for(m, self.valid, self.ready, self.cycles, "seen"))
        return m


def test_offered_for_counts_waiting_cycles():
    """The flag rises after exactly ``cycles`` cycles of valid-and-not-ready, and a taken beat
    or a dropped valid clears it (checked against a counter written here, per cycle)."""
    rng = np.random.default_rng(3)
    for cycles in (1, 2, 3):
        dut = _Offered(cycles)
        valid = rng.random(300) < 0.8
        ready = rng.random(300) < 0.25

        async def bench(ctx):
            waited = 0
            for v, r in zip(valid, ready):
                ctx.set(dut.valid, int(v))
                ctx.set(dut.ready, int(r))
                assert ctx.get(dut.flag) == int(waited >= cycles), (cycles, waited)
                waited = waited + 1 if v and not r else 0
                await ctx.tick()
            return True

        assert run_amaranth(dut, bench)


def test_offered_for_rejects_bad_cycles():
    m = Module()
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="cycles="):
            offered_for(m, Signal(), Signal(), bad, "seen")
    Fragment.get(m, None)       # (the module is used: no warning about it)
