"""UpdateUnit (predictor_hw/update.py) in Amaranth's simulator against its golden
model_sw.numerics.sgd_update_int / shift_round_saturate: GP rows streamed in (with
gaps), BP gradients read from memory, a memory model with latency and back-pressure."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from model_sw import numerics
from predictor_hw import update as U
from rtl.config import AcceleratorConfig

CFG = AcceleratorConfig(name="unit", rows=4, cols=4, spad_a_words=64, spad_b_words=64, acc_words=32,
                        mem_addr_bits=12, pred_cols=4)


def run(layers, mem, rows_per_layer, seed=0, retired=1 << 20, expect_error=0):
    dut = U.UpdateUnit(CFG, check_state=True)     # asserts in_write == "FSM in WRITE" every cycle
    dut.wr_beats = 0                  # write beats taken (one per row)
    rng = np.random.default_rng(seed)
    mem = mem.copy()
    L = CFG.pred_cols

    async def memory(ctx):
        pending = []
        ctx.set(dut.retired, retired)
        while True:
            rdy = int(rng.random() < 0.7)
            ctx.set(dut.mem.req.ready, rdy)
            ctx.set(dut.wr.ready, int(rng.random() < 0.7))
            if pending and pending[0][0] <= 0:
                ctx.set(dut.mem.resp.valid, 1)
                for j, v in enumerate(pending[0][1]):
                    ctx.set(dut.mem.resp.payload[j], v & 0xFFFFFFFF)
            else:
                ctx.set(dut.mem.resp.valid, 0)
            await ctx.delay(1e-9)
            fire_req = rdy and ctx.get(dut.mem.req.valid)
            if fire_req:
                p = ctx.get(dut.mem.req.payload)
                vals = [int(mem[int(p.addr[j])]) if (int(p.en) >> j) & 1 else 0 for j in range(L)]
            if pending and pending[0][0] <= 0 and ctx.get(dut.mem.resp.ready):
                pending.pop(0)
            if ctx.get(dut.wr.valid) and ctx.get(dut.wr.ready):
                dut.wr_beats += 1
                p = ctx.get(dut.wr.payload)
                for j in range(2 * L):
                    if (int(p.en) >> j) & 1:
                        v = int(p.data[j]) & 0xFFFFFFFF
                        mem[int(p.addr[j])] = v - (1 << 32) if v >> 31 else v
            await ctx.tick()
            pending = [(t - 1, v) for t, v in pending]
            if fire_req:
                # a response one to three cycles after its request: the one-cycle memory
                # is the unit's tightest case (deltas' two register stages end at CALC)
                pending.append((int(rng.integers(0, 3)), vals))

    async def drive(ctx):
        for d, rows in zip(layers, rows_per_layer):
            ctx.set(dut.desc.payload, d)
            ctx.set(dut.desc.valid, 1)
            await ctx.tick().until(dut.desc.ready)
            ctx.set(dut.desc.valid, 0)
            for r in rows:
                while rng.random() < 0.3:
                    ctx.set(dut.rows.valid, 0)
                    await ctx.tick()
                ctx.set(dut.rows.payload, r)
                ctx.set(dut.rows.valid, 1)
                await ctx.tick().until(dut.rows.ready)
            ctx.set(dut.rows.valid, 0)
        if expect_error:
            # the last row given is the bad one: the unit stops on it, writes nothing more
            await ctx.tick().repeat(30)
            assert ctx.get(dut.error) == expect_error and ctx.get(dut.layers_done) == 0
            assert not ctx.get(dut.working) and not ctx.get(dut.wr.valid)
            return
        for _ in range(20000):
            if ctx.get(dut.layers_done) == len(layers):
                break
            await ctx.tick()
        assert ctx.get(dut.layers_done) == len(layers) and ctx.get(dut.error) == 0

    # a watchdog, not an endless wait: 50 cycles per row (7 at full speed, with the
    # memory's and the write port's random stalls) and the final wait's 20000
    budget = 50 * sum(len(r) for r in rows_per_layer) + 20000 + 1000 * len(layers)

    async def watchdog(ctx):
        for _ in range(budget):
            await ctx.tick()
        raise AssertionError(f"watchdog: the update unit did not finish {len(layers)} layers in {budget} "
                             f"cycles (layers_done {ctx.get(dut.layers_done)}, error {ctx.get(dut.error)})")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(memory, background=True)
    sim.add_testbench(watchdog, background=True)
    sim.add_testbench(drive)
    sim.run()
    return mem, dut


def grad_rows(g):
    """A (C_out, k) int8 gradient as the array's rows (pred_cols values, en, channel, col)."""
    L = CFG.pred_cols
    c_out, k = g.shape
    rows = []
    for c in range(c_out):
        for col in range(0, k, L):
            en = [int(col + j < k) for j in range(L)]
            rows.append({"data": [int(g[c, col + j]) if e else 0 for j, e in enumerate(en)],
                         "en": sum(e << j for j, e in enumerate(en)), "channel": c, "col": col, "last": 0})
    rows[-1]["last"] = 1
    return rows


# around the unit's shift clamps (right 9, left 24: exact by construction, checked here)
@pytest.mark.parametrize("g_shift,w_bits", [(-3, 16), (0, 16), (2, 16), (-1, 8), (-7, 16), (-8, 16), (-9, 16),
                                            (-10, 16), (-63, 16), (9, 16), (23, 16), (24, 16), (25, 16),
                                            (63, 16), (-63, 8), (63, 8)])
def test_gp_rows_update_bit_exact(g_shift, w_bits):
    rng = np.random.default_rng(70 + g_shift)
    c_out, k = 3, 10
    lo, hi = numerics.int_range(w_bits)
    w = rng.integers(lo, hi + 1, size=(c_out, k))
    w[0, :3] = [hi, lo, hi - 1]                  # saturation at both ends
    g = rng.integers(-128, 128, size=(c_out, k))
    g[0, :3] = [-128, 127, -128]
    mem = np.zeros(CFG.mem_words, dtype=np.int64)
    mem[100:100 + w.size] = w.ravel()
    d8 = 8 if w_bits == 16 else 0
    d = U.update_descriptor(CFG, w_base=100, c_out=c_out, k=k, g_shift=g_shift, w_bits=w_bits,
                            w8_base=500, d8=d8)
    out, _ = run([d], mem, [grad_rows(g)])
    want = numerics.sgd_update_int(w, g, g_shift, w_bits)
    assert np.array_equal(out[100:100 + w.size].reshape(w.shape), want)
    assert np.array_equal(out[500:500 + w.size].reshape(w.shape), numerics.shift_round_saturate(want, -d8, 8))


@pytest.mark.parametrize("d8", [1, 2, 7, 15, 16, 17, 31])
def test_copy_shift_range(d8):
    """The 8-bit copy's rounding shift (the unit clamps d8 at 16): weights with exact
    ties, both extremes and random values, against numerics.shift_round_saturate."""
    rng = np.random.default_rng(200 + d8)
    c_out, k = 2, 12
    w = rng.integers(-32768, 32768, size=(c_out, k))
    w[0, :6] = [32767, -32768, 1 << (d8 - 1) if d8 < 16 else 0, -(1 << (d8 - 1)) if d8 < 16 else -1,
                3 << (d8 - 1) if d8 < 15 else 1, -(3 << (d8 - 1)) if d8 < 15 else -2]
    g = np.zeros((c_out, k), dtype=np.int64)
    mem = np.zeros(CFG.mem_words, dtype=np.int64)
    mem[100:100 + w.size] = w.ravel()
    d = U.update_descriptor(CFG, w_base=100, c_out=c_out, k=k, g_shift=0, w_bits=16, w8_base=500, d8=d8)
    out, _ = run([d], mem, [grad_rows(g)])
    assert np.array_equal(out[100:100 + w.size].reshape(w.shape), w)
    assert np.array_equal(out[500:500 + w.size].reshape(w.shape), numerics.shift_round_saturate(w, -d8, 8))


def _copy_saturation_edges(d8):
    """The 16-bit weights either side of where the copy starts to saturate, found by
    brute force over the whole 16-bit range with numerics (not from the unit's bounds)."""
    w = np.arange(-32768, 32768)
    c = numerics.shift_round_saturate(w, -d8, 8)
    edges = []
    for sat in (127, -128):
        hit = np.flatnonzero(c == sat)
        if hit.size:
            first = hit[0] if sat == 127 else hit[-1]
            edges += [w[first], w[first] - 1 if sat == 127 else w[first] + 1]
    return [int(v) for v in np.clip(edges, -32768, 32767)]


def test_copy_saturation_bounds_exhaustive():
    """The unit's per-layer saturation bounds against numerics for every 16-bit weight and
    every d8 the unit uses (0..16): 127 exactly at w >= hi, -128 exactly at w <= lo."""
    w = np.arange(-32768, 32768)
    for d8 in range(17):
        hi, lo = U.copy_saturation_bounds(d8)
        c = numerics.shift_round_saturate(w, -d8, 8)
        assert np.array_equal(c == 127, w >= hi), d8
        assert np.array_equal(c == -128, w <= lo), d8
    with pytest.raises(U.UpdateError, match="d8=17"):
        U.copy_saturation_bounds(17)


@pytest.mark.parametrize("d8", [0, 1, 3, 8, 9, 14, 16])
def test_copy_saturation_edges(d8):
    """Weights on both sides of each saturated end of the copy, through the unit."""
    rng = np.random.default_rng(300 + d8)
    c_out, k = 2, 8
    w = rng.integers(-32768, 32768, size=(c_out, k))
    edges = _copy_saturation_edges(d8)
    w.ravel()[:len(edges)] = edges
    g = np.zeros((c_out, k), dtype=np.int64)
    mem = np.zeros(CFG.mem_words, dtype=np.int64)
    mem[100:100 + w.size] = w.ravel()
    d = U.update_descriptor(CFG, w_base=100, c_out=c_out, k=k, g_shift=0, w_bits=16, w8_base=500, d8=d8)
    out, _ = run([d], mem, [grad_rows(g)], seed=d8)
    assert np.array_equal(out[500:500 + w.size].reshape(w.shape), numerics.shift_round_saturate(w, -d8, 8))


@pytest.mark.parametrize("shapes", [[(4, 9), (2, 5)], [(3, 8), (2, 4), (3, 1)]], ids=["ragged", "whole_rows"])
def test_bp_true_gradients_from_memory_two_layers(shapes):
    """BP layers; k a multiple of pred_cols too (a channel's last row is full)."""
    rng = np.random.default_rng(3)
    mem = np.zeros(CFG.mem_words, dtype=np.int64)
    descs, want = [], []
    base = 16
    for c_out, k in shapes:
        w = rng.integers(-30000, 30000, size=(c_out, k))
        g = rng.integers(-128, 128, size=(c_out, k))
        mem[base:base + w.size] = w.ravel()
        mem[base + 1000:base + 1000 + g.size] = g.ravel()
        descs.append(U.update_descriptor(CFG, w_base=base, c_out=c_out, k=k, g_shift=-2, g_base=base + 1000,
                                         after=5))
        want.append((base, numerics.sgd_update_int(w, g, -2, 16)))
        base += 64
    out, dut = run(descs, mem, [[] for _ in shapes], retired=5)
    assert dut.wr_beats == sum(c * -(-k // CFG.pred_cols) for c, k in shapes)     # one beat per row
    for b, wv in want:
        assert np.array_equal(out[b:b + wv.size].reshape(wv.shape), wv)


def test_layers_with_different_shifts_back_to_back():
    """Consecutive GP layers with different gradient and copy shifts: the rounding masks
    follow the registered shifts a cycle after the descriptor is taken, so a mask left
    from the previous layer (or from reset) would round this layer's first row wrongly."""
    rng = np.random.default_rng(11)
    mem = np.zeros(CFG.mem_words, dtype=np.int64)
    plan = [(-7, 3), (-1, 12), (-9, 1), (2, 16), (-3, 5)]       # (g_shift, d8) per layer
    descs, rows, want = [], [], []
    base = 16
    for g_shift, d8 in plan:
        c_out, k = 2, 5
        w = rng.integers(-30000, 30000, size=(c_out, k))
        g = rng.integers(-128, 128, size=(c_out, k))
        g[0, 0] = 1 << (-g_shift - 1) if g_shift < 0 else g[0, 0]     # a tie at the right shift
        mem[base:base + w.size] = w.ravel()
        descs.append(U.update_descriptor(CFG, w_base=base, c_out=c_out, k=k, g_shift=g_shift,
                                         w_bits=16, w8_base=base + 2000, d8=d8))
        rows.append(grad_rows(g))
        nw = numerics.sgd_update_int(w, g, g_shift, 16)
        want.append((base, nw, numerics.shift_round_saturate(nw, -d8, 8)))
        base += 64
    out, _ = run(descs, mem, rows, seed=5)
    for b, nw, c8 in want:
        assert np.array_equal(out[b:b + nw.size].reshape(nw.shape), nw)
        assert np.array_equal(out[b + 2000:b + 2000 + nw.size].reshape(nw.shape), c8)


def _moved(rows, i, **change):
    """rows[:i] then rows[i] with ``change`` applied: the bad row is the last one given."""
    return rows[:i] + [dict(rows[i], **change)]


@pytest.mark.parametrize("case", ["skipped_col", "channel_early", "col_past_k", "next_channel_not_col0",
                                  "channel_skipped", "first_row_not_origin"])
def test_rows_out_of_order_stop_with_order_error(case):
    """A row that is not the next one expected (by channel and col) stops the unit with
    ERR_ORDER; the rows before it are written, nothing after."""
    c_out, k = 3, 6                      # two rows per channel (cols 0 and 4)
    rng = np.random.default_rng(17)
    w = rng.integers(-30000, 30000, size=(c_out, k))
    g = rng.integers(-128, 128, size=(c_out, k))
    rows = grad_rows(g)
    bad = {"skipped_col": _moved(rows, 0, col=4),
           "channel_early": _moved(rows, 1, channel=1, col=0),
           "col_past_k": _moved(rows, 2, channel=0, col=8),        # channel 0 is done: (0, 8) is not next
           "next_channel_not_col0": _moved(rows, 2, col=4),
           "channel_skipped": _moved(rows, 2, channel=2),
           "first_row_not_origin": _moved(rows, 0, channel=1)}[case]
    mem = np.zeros(CFG.mem_words, dtype=np.int64)
    mem[100:100 + w.size] = w.ravel()
    d = U.update_descriptor(CFG, w_base=100, c_out=c_out, k=k, g_shift=-2)
    out, _ = run([d], mem, [bad], expect_error=U.ERR_ORDER)
    good_rows = len(bad) - 1
    want = w.copy()
    upd = numerics.sgd_update_int(w, g, -2, 16)
    for r in rows[:good_rows]:
        c, col = r["channel"], r["col"]
        want[c, col:col + 4] = upd[c, col:col + 4]
    assert np.array_equal(out[100:100 + w.size].reshape(w.shape), want)


def test_bad_descriptor_raises():
    with pytest.raises(U.UpdateError, match="C_out=0"):
        U.update_descriptor(CFG, w_base=0, c_out=0, k=3, g_shift=0)
    with pytest.raises(U.UpdateError, match="w_base=4090"):
        U.update_descriptor(CFG, w_base=4090, c_out=2, k=8, g_shift=0)


def test_sgd_update_int_against_python_integers():
    """The golden rule against exact Python integers/fractions (no int64 shortcuts),
    over the whole g_shift range the descriptor allows."""
    from fractions import Fraction
    rng = np.random.default_rng(11)
    w = rng.integers(-32768, 32768, size=64)
    g = rng.integers(-128, 128, size=64)
    g[:4] = [0, 1, -1, -128]
    for s in range(-63, 64):
        got = numerics.sgd_update_int(w, g, s, 16)
        for wi, gi, r in zip(w.tolist(), g.tolist(), got.tolist()):
            x = Fraction(gi) * Fraction(2) ** s
            q = x.numerator // x.denominator
            rem = x - q
            up = rem > Fraction(1, 2) or (rem == Fraction(1, 2) and q % 2 == 1)
            want = min(32767, max(-32768, wi - (q + up)))
            assert r == want, (s, wi, gi)
