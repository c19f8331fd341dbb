"""rtl/gather.py in ring mode, alone in Amaranth's simulator: the scratchpad is a ring of
``spad_words`` words, and a request for word w waits until w < limit, where the limit
starts at the depth and rises by K on each ``limit_rise`` (the consumer has finished a
panel's words).  In the engine the ring runs only where that limit never stalls the
gather (rtl/engine.py, ``ocompact_ring``), so no engine test can see it; here a slow
consumer makes it the only thing that holds the gather back.

Checked every cycle against counts kept here: requests accepted by the memory never pass
the limit, the words are written at w mod depth with the values the memory returned for
word w's addresses, and every word of the operand is requested exactly once (no stall
for ever).  The consumer raises the limit only for a panel whose words are all loaded,
one panel every ``rise_every`` cycles, with random back-pressure on the memory."""
import numpy as np
import pytest

from cosim.simlink import run_amaranth
from rtl.config import preset
from rtl.gather import OperandGather
from rtl.isa import _pack, _spec

WATCHDOG = 20_000


def _case(cfg, *, n: int, k: int, rise_every: int, ready_p: float, seed: int, must_fill: bool):
    L, depth = cfg.cols, cfg.spad_b_words
    base = 64
    dut = OperandGather(cfg, L, depth, lane_compactable=True)
    # B[k, n] row-major: lane j at + j, step k at + k * n (digit counts that never wrap)
    full = (1 << cfg.dim_bits) - 1
    desc = {"base": base, "lane": [{"count": full, "step": {"cb": 1}}] + [{"count": 1}] * 2,
            "k": [{"count": full, "step": {"cb": n}}] + [{"count": 1}] * 2}
    desc_bits, _ = _pack(_spec(cfg, full=True)["b"], desc, "b")
    rng = np.random.default_rng(seed)
    panels = -(-n // L)
    words = panels * k

    def expected_word(w):
        """The lanes of word w (panel w // k, step w % k): element (lane, k) of B[k, n]."""
        p, kk = divmod(w, k)
        lanes = [p * L + i for i in range(L)]
        return [base + j + kk * n if j < n else None for j in lanes]

    async def bench(ctx):
        ctx.set(dut.desc.as_value(), desc_bits)
        ctx.set(dut.total, n)
        ctx.set(dut.k, k)
        ctx.set(dut.ring, 1)
        ctx.set(dut.pi_room, 1)
        ctx.set(dut.zq_space, 1)
        await ctx.tick().repeat(2)          # the engine holds an instruction's fields before its start
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        requested, rises, consumed_since, filled = 0, 0, 0, False
        in_flight = []                      # [countdown, data] per accepted request, in order
        spad = {}
        for cycle in range(WATCHDOG):
            limit = depth + k * rises
            ctx.set(dut.mem.req.ready, int(rng.random() < ready_p))
            # the memory: responses in order, two cycles after the request
            resp_v = bool(in_flight) and in_flight[0][0] <= 0
            ctx.set(dut.mem.resp.valid, int(resp_v))
            ctx.set(dut.mem.resp.payload.as_value(), in_flight[0][1] if resp_v else 0)
            # the consumer: it finishes panel `rises` once its words are in, every rise_every cycles
            loaded = ctx.get(dut.words_loaded)
            consumed_since += 1
            rise = (consumed_since >= rise_every and rises < panels
                    and loaded - k * rises >= k)
            ctx.set(dut.limit_rise, int(rise))
            if ctx.get(dut.mem.req.valid) and ctx.get(dut.mem.req.ready):
                w = requested
                assert w < limit, f"cycle {cycle}: word {w} requested past the ring limit {limit}"
                want = expected_word(w)
                addr = [ctx.get(dut.mem.req.payload.addr[i]) for i in range(L)]
                en = ctx.get(dut.mem.req.payload.en)
                for i, a in enumerate(want):
                    assert bool(en >> i & 1) == (a is not None), (cycle, w, i)
                    if a is not None:
                        assert addr[i] == a, (cycle, w, i, addr[i], a)
                slots = [int(rng.integers(0, 1 << 8)) for _ in range(L)]
                packed = sum(s << (i * cfg.slot_bits) for i, s in enumerate(slots))
                vals = [s if (en >> i & 1) else 0 for i, s in enumerate(slots)]
                in_flight.append([2, packed, vals])
                requested += 1
                filled |= requested == limit
            if resp_v and ctx.get(dut.mem.resp.ready):
                spad_next = in_flight.pop(0)
                spad.setdefault("pending", []).append(spad_next[2])
            if ctx.get(dut.wr_en):
                wa = ctx.get(dut.wr_addr)
                got = [ctx.get(dut.wr_data[i]) for i in range(L)]
                vals = spad["pending"].pop(0)
                want_vals = [v - (1 << cfg.op_bits) if v >= 1 << (cfg.op_bits - 1) else v
                             for v in vals]
                w = spad.get("written", 0)
                assert wa == w % depth, (cycle, wa, w)
                assert got == want_vals, (cycle, w, got, want_vals)
                spad["written"] = w + 1
            if rise:
                rises += 1
                consumed_since = 0
            for f in in_flight:
                f[0] -= 1
            await ctx.tick()
            if rises == panels:
                break
        else:
            raise AssertionError(f"watchdog: {requested} of {words} words requested, "
                                 f"{rises} of {panels} panels consumed after {WATCHDOG} cycles")
        assert requested == words and spad["written"] == words
        # a slow consumer: the gather uses the whole ring (the limit is not stricter than it is)
        assert filled or not must_fill, "the ring never filled"
        return rises

    run_amaranth(dut, bench)


# (consumer period, memory ready probability, seed, the ring must fill: the memory
# brings words faster than the consumer takes them, K / period)
@pytest.mark.parametrize("rise_every,ready_p,seed,must_fill",
                         [(40, 1.0, 0, True), (60, 0.9, 3, True), (25, 0.6, 1, False), (1, 0.8, 2, False)])
@pytest.mark.parametrize("fmax_logic", [True, False])
def test_gather_ring_limit_holds_requests(rise_every, ready_p, seed, must_fill, fmax_logic):
    cfg = preset("tiny").replace(fmax_logic=fmax_logic)
    _case(cfg, n=cfg.cols * 24, k=16, rise_every=rise_every, ready_p=ready_p, seed=seed,
          must_fill=must_fill)
