"""rtl/gather.py in ring mode, alone in Amaranth's simulator: the scratchpad is a ring of
``spad_words`` words, and a request for word w waits until w < limit, where the limit
starts at the depth and rises by K on each ``limit_rise`` (the consumer has finished a
panel's words).  In the engine the ring runs only where that limit never stalls the
gather (rtl/engine.py, ``ocompact_ring``), so no engine test can see it; here a slow
consumer makes it the only thing that holds the gather back.

Checked every cycle against counts kept here: requests accepted by the memory never pass
the limit, each request's lane addresses and enables are those of B[k, n], the words are
written at w mod depth with the values the memory returned, and every word of the operand
is requested exactly once (no stall for ever).  The consumer raises the limit only for a
panel whose words are all loaded, one panel every ``rise_every`` cycles, with random
back-pressure on the memory.  Two jobs run back to back, the second started once the
gather is idle (as the engine does), and the gather's own simulation checks
(``check=True``: the walk flags are 0 at a start, no issue right after one, the kept
flags and copies equal their definitions) are asserted every cycle."""
import numpy as np
import pytest

from cosim.simlink import run_amaranth
from rtl.config import preset
from rtl.gather import OperandGather
from rtl.isa import encode_gather

WATCHDOG = 20_000
MEM_LATENCY = 2


def _desc_bits(cfg, base: int, n: int) -> int:
    """B[k, n] row-major at base: lane j at + j, step k at + k * n (digit counts that never wrap)."""
    full = (1 << cfg.dim_bits) - 1
    desc = {"base": base, "lane": [{"count": full, "step": {"cb": 1}}] + [{"count": 1}] * 2,
            "k": [{"count": full, "step": {"cb": n}}] + [{"count": 1}] * 2}
    return encode_gather(cfg, desc)


async def _job(ctx, dut, cfg, rng, *, base, n, k, rise_every, ready_p, rise_p):
    """One instruction's B operand through the ring; returns whether the ring filled."""
    L, depth = cfg.cols, cfg.spad_b_words
    panels = -(-n // L)
    words = panels * k

    def expected_lanes(w):
        """The addresses of word w's lanes (panel w // k, step w % k), None where padding."""
        p, kk = divmod(w, k)
        return [base + j + kk * n if j < n else None for j in range(p * L, p * L + L)]

    ctx.set(dut.desc.as_value(), _desc_bits(cfg, base, n))
    ctx.set(dut.total, n)
    ctx.set(dut.k, k)
    await ctx.tick().repeat(2)          # the engine holds an instruction's fields before its start
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    requested = written = rises = since_rise = 0
    filled = False
    in_flight = []                      # [cycles left, packed slots, written values] per request
    arrived = []                        # responses taken, values not yet written
    for cycle in range(WATCHDOG):
        limit = depth + k * rises
        ctx.set(dut.mem.req.ready, int(rng.random() < ready_p))
        resp_v = bool(in_flight) and in_flight[0][0] <= 0
        ctx.set(dut.mem.resp.valid, int(resp_v))
        ctx.set(dut.mem.resp.payload.as_value(), in_flight[0][1] if resp_v else 0)
        since_rise += 1
        rise = (since_rise >= rise_every and rises < panels and rng.random() < rise_p
                and ctx.get(dut.words_loaded) - k * rises >= k)
        ctx.set(dut.limit_rise, int(rise))
        if ctx.get(dut.mem.req.valid) and ctx.get(dut.mem.req.ready):
            assert requested < limit, \
                f"cycle {cycle}: word {requested} requested past the ring limit {limit}"
            en = ctx.get(dut.mem.req.payload.en)
            for i, a in enumerate(expected_lanes(requested)):
                assert bool(en >> i & 1) == (a is not None), (cycle, requested, i)
                if a is not None:
                    assert ctx.get(dut.mem.req.payload.addr[i]) == a, (cycle, requested, i)
            slots = [int(s) for s in rng.integers(0, 1 << 8, L)]
            packed = sum(s << (i * cfg.slot_bits) for i, s in enumerate(slots))
            vals = [(s - 256 if s >= 128 else s) if en >> i & 1 else 0 for i, s in enumerate(slots)]
            in_flight.append([MEM_LATENCY, packed, vals])
            requested += 1
            filled |= requested == limit
        if resp_v and ctx.get(dut.mem.resp.ready):
            arrived.append(in_flight.pop(0)[2])
        if ctx.get(dut.wr_en):
            assert ctx.get(dut.wr_addr) == written % depth, (cycle, written)
            got = [ctx.get(dut.wr_data[i]) for i in range(L)]
            assert got == arrived.pop(0), (cycle, written)
            written += 1
        if rise:
            rises, since_rise = rises + 1, 0
        for f in in_flight:
            f[0] -= 1
        await ctx.tick()
        if rises == panels and not ctx.get(dut.busy):
            break
    else:
        raise AssertionError(f"watchdog: {requested} of {words} words requested, "
                             f"{rises} of {panels} panels consumed after {WATCHDOG} cycles")
    assert requested == words and written == words
    return filled


def _case(cfg, *, jobs, k: int, rise_every: int, ready_p: float, seed: int, must_fill: bool,
          rise_p: float = 1.0):
    dut = OperandGather(cfg, cfg.cols, cfg.spad_b_words, lane_compactable=True, check=True)
    rng = np.random.default_rng(seed)

    async def bench(ctx):
        for s, v in ((dut.ring, 1), (dut.pi_room, 1), (dut.zq_space, 1)):
            ctx.set(s, v)
        fills = []
        for base, n in jobs:
            fills.append(await _job(ctx, dut, cfg, rng, base=base, n=n, k=k,
                                    rise_every=rise_every, ready_p=ready_p, rise_p=rise_p))
        return fills

    fills = run_amaranth(dut, bench)
    # a slow consumer: the gather uses the whole ring (the limit is not stricter than it is)
    assert all(fills) or not must_fill, f"the ring never filled: {fills}"


# (consumer period, memory ready probability, seed, the ring must fill: the memory
# brings words faster than the consumer takes them, K / period)
@pytest.mark.parametrize("rise_every,ready_p,seed,must_fill",
                         [(40, 1.0, 0, True), (60, 0.9, 3, True), (25, 0.6, 1, False), (1, 0.8, 2, False)])
@pytest.mark.parametrize("fmax_logic", [True, False])
def test_gather_ring_limit_holds_requests(rise_every, ready_p, seed, must_fill, fmax_logic):
    cfg = preset("tiny").replace(fmax_logic=fmax_logic)
    C = cfg.cols
    _case(cfg, jobs=[(64, C * 24), (200, C * 20 - 1)], k=16, rise_every=rise_every,
          ready_p=ready_p, seed=seed, must_fill=must_fill)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("rise_p", [1.0, 0.2])
def test_gather_ring_short_panels(k, rise_p):
    """K of 1-5 on a 32-word ring, filled; with rise_p < 1 the consumer frees a panel at
    random cycles, so the limit also rises in cycles where the gather issues with the
    ring almost full (the gap flags' cases of a rise and an issue together at gap 1-2;
    whether the ring fills then depends on K, so it is not required)."""
    cfg = preset("tiny").replace(spad_b_words=32)
    C = cfg.cols
    n = C * (-(-96 // k))          # three rings' worth of words
    every = max(8, 4 * k) if rise_p == 1.0 else 1
    _case(cfg, jobs=[(64, n), (100, n - 1)], k=k, rise_every=every, ready_p=0.9, seed=k,
          must_fill=rise_p == 1.0, rise_p=rise_p)
