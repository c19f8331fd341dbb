"""Unit tests of the engine's building blocks in Amaranth's simulator, each against
its golden function (model_sw.numerics, cosim.golden) or numpy."""
import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator

from cosim import golden
from model_sw import numerics
from rtl.config import AcceleratorConfig
from rtl.counter import MixedRadixCounter, VEC_FIELDS
from rtl.epilogue import Requantize, table_lookup
from rtl.systolic import SystolicArray

CFG = AcceleratorConfig(name="unit", rows=4, cols=4, spad_a_words=64, spad_b_words=64,
                        acc_words=32, mem_addr_bits=12)


@pytest.mark.parametrize("latency", [0, 1])
def test_requantize_unit_matches_numerics(latency):
    dut = Requantize(CFG, latency=latency)
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(60):
        row = rng.integers(-(1 << 20), 1 << 20, CFG.cols)
        row[0] = int(rng.choice([-(1 << 31), (1 << 31) - 1, 0, 1 << 9, -(1 << 9) - 512]))
        cases.append((row, int(rng.integers(0, 20)), bool(rng.integers(0, 2))))
    # exact halves (round-half-to-even ties, both parities), one off them, large shifts
    for shift in (1, 2, 5, 13, 30, 31):
        half = 1 << (shift - 1)
        q = rng.integers(-200, 200, CFG.cols)
        off = rng.integers(-1, 2, CFG.cols)               # -1, 0 (the tie), +1
        row = np.clip((2 * q + 1) * half + off, -(1 << 31), (1 << 31) - 1)
        cases.append((row, shift, bool(rng.integers(0, 2))))

    async def tb(ctx):
        ctx.set(dut.en, 1)
        for row, shift, relu in cases:
            for j in range(CFG.cols):
                ctx.set(dut.row[j], int(row[j]))
            ctx.set(dut.shift, shift)
            ctx.set(dut.relu, relu)
            for _ in range(latency):            # pipelined
                await ctx.tick()
            want, mask = numerics.requantize(row, shift, CFG.op_bits, relu)
            got = [ctx.get(dut.out[j]) for j in range(CFG.cols)]
            assert got == list(want), (row, shift, relu, got, want)
            assert [ctx.get(dut.mask) >> j & 1 for j in range(CFG.cols)] == [int(v) for v in mask]

    sim = Simulator(dut)
    if latency:
        sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def _range_edges(shift: int, rng) -> list:
    """Rows at and next to the requantizer's range edges for ``shift``: q = x >> shift at
    127 / 128 / -128 / -129 (saturation), 0 / 1 (ReLU's positive test), and random values
    up to the accumulator's ends."""
    vals = set()
    for q in (127, 128, -128, -129, 0, 1, -1, 255, -256):
        base = q << shift
        for d in (-1, 0, 1, (1 << shift) - 1 if shift else 0, 1 << max(shift - 1, 0)):
            vals.add(base + d)
    vals.update(int(v) for v in rng.integers(-(1 << 31), 1 << 31, 24))
    vals.update((-(1 << 31), (1 << 31) - 1))
    return sorted(v for v in vals if -(1 << 31) <= v < 1 << 31)


def test_requantize_held_shift_range_flags_at_every_shift():
    """The engine's form (latency 1, shift held per instruction: one-hot shift, and the
    saturation's range flags from the unshifted row beside the shifter) at every shift
    0..32 on the values next to each saturation and ReLU edge, against numerics."""
    cfg = CFG.replace(cols=2)
    dut = Requantize(cfg, latency=1, shift_held=True)
    rng = np.random.default_rng(3)
    checked = []

    async def tb(ctx):
        ctx.set(dut.en, 1)
        for shift in range(0, 33):
            relu = bool(shift % 2)
            ctx.set(dut.shift, shift)
            ctx.set(dut.relu, relu)
            await ctx.tick().repeat(2)          # held a cycle before the rows (its registers)
            vals = _range_edges(shift, rng)
            for i in range(0, len(vals) - 1, 2):
                row = vals[i:i + 2]
                ctx.set(dut.row[0], row[0])
                ctx.set(dut.row[1], row[1])
                await ctx.tick()
                want, mask = numerics.requantize(np.array(row), shift, cfg.op_bits, relu)
                got = [ctx.get(dut.out[j]) for j in range(2)]
                assert got == list(want), (shift, relu, row, got, list(want))
                assert [ctx.get(dut.mask) >> j & 1 for j in range(2)] == [int(v) for v in mask]
                checked.append(shift)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert sorted(set(checked)) == list(range(33))


def test_mixed_radix_counter_matches_definition():
    dut = MixedRadixCounter(CFG)
    digits = [{"count": 3, "step": {"cb": 5, "sp": 1, "x": 1}},
              {"count": 4, "step": {"cb": -7, "sp": 10, "y": 2}},
              {"count": 0, "step": {"cb": 100}}]
    init = {"cb": 3, "sp": -11, "y": -1, "x": -1}
    n = 40
    want = golden.counter_vectors(digits, n, init)

    async def tb(ctx):
        for d in range(3):
            ctx.set(dut.digits[d].count, digits[d]["count"])
            for f in VEC_FIELDS:
                ctx.set(dut.digits[d].step[f], digits[d]["step"].get(f, 0))
        for f in VEC_FIELDS:
            ctx.set(dut.init[f], init.get(f, 0))
        await ctx.tick()                  # the digits are held a cycle before the clear
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        ctx.set(dut.step, 1)
        for p in range(n):
            got = {f: ctx.get(dut.value[f]) for f in VEC_FIELDS}
            assert got == {f: int(want[f][p]) for f in VEC_FIELDS}, (p, got)
            await ctx.tick()
        # clear wins over a step in the same cycle (the gathers step on can_issue alone)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for p in range(n):
            got = {f: ctx.get(dut.value[f]) for f in VEC_FIELDS}
            assert got == {f: int(want[f][p]) for f in VEC_FIELDS}, ("after clear with step", p, got)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("k", [1, 3, 9])
def test_systolic_array_tiles_back_to_back(k):
    """Three tiles streamed with the minimum spacing; each drained tile equals numpy."""
    dut = SystolicArray(CFG)
    R, C = CFG.rows, CFG.cols
    rng = np.random.default_rng(k)
    tiles = [(rng.integers(-128, 128, (R, k)), rng.integers(-128, 128, (k, C))) for _ in range(3)]
    period = max(k, CFG.drain_period)
    rows = []

    async def drive(ctx):
        ctx.set(dut.en, 1)
        for a, b in tiles:
            for step in range(period):
                valid = step < k
                for i in range(R):
                    ctx.set(dut.in_a[i], int(a[i, step]) if valid else 0)
                for j in range(C):
                    ctx.set(dut.in_b[j], int(b[step, j]) if valid else 0)
                ctx.set(dut.in_valid, valid)
                ctx.set(dut.in_first, step == 0)
                await ctx.tick()
        ctx.set(dut.in_valid, 0)
        ctx.set(dut.in_first, 1)          # flush marker ends the last tile
        await ctx.tick()
        ctx.set(dut.in_first, 0)
        for _ in range(4 * (R + C) + period):
            await ctx.tick()

    async def monitor(ctx):
        async for _, _, v, row in ctx.tick().sample(dut.out_valid, dut.out_row):
            if v:
                rows.append([row[j] for j in range(C)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_process(monitor)
    sim.run_until(1e-8 * (3 * period + 6 * (R + C) + 20))
    got = np.array(rows)
    want = np.concatenate([a @ b for a, b in tiles])
    assert got.shape == want.shape and (got == want).all()


def test_carry_compares_match_python():
    """rtl.engine's carry-chain compares (the sign of a subtraction) against Python's,
    for every pair of a 5-bit and a range(40) value (different widths, as in the engine)."""
    from amaranth import Module, Signal
    from rtl.engine import carry_gt, carry_ge
    a, b, gt, ge = Signal(5), Signal(range(40)), Signal(), Signal()
    m = Module()
    m.d.comb += [gt.eq(carry_gt(a, b)), ge.eq(carry_ge(a, b))]

    async def tb(ctx):
        for x in range(32):
            for y in range(40):
                ctx.set(a, x)
                ctx.set(b, y)
                assert (ctx.get(gt), ctx.get(ge)) == (int(x > y), int(x >= y)), (x, y)

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()


def test_ring_compares_match_python():
    """carry_gt / carry_ge with ring_bits: counts kept modulo 2**4 on wider signals (as gather
    B's ring counters), compared by difference, against Python on the true counts, for every
    pair less than 2**3 apart (the range where the engine relies on it)."""
    from amaranth import Module, Signal
    from rtl.engine import carry_gt, carry_ge
    bits = 4
    a, b, gt, ge = Signal(6), Signal(7), Signal(), Signal()
    m = Module()
    m.d.comb += [gt.eq(carry_gt(a, b, bits)), ge.eq(carry_ge(a, b, bits))]

    async def tb(ctx):
        for x in range(40):
            for y in range(max(0, x - 7), x + 8):
                # the high bits differ from the true counts': only the low `bits` may matter
                ctx.set(a, x % 64)
                ctx.set(b, (y % 16) + 16 * ((x + 3 * y) % 8))
                assert (ctx.get(gt), ctx.get(ge)) == (int(x > y), int(x >= y)), (x, y)

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("shape,fn,width", [
    (signed(7), lambda v: min(max(-v, 0), 9), 4),       # the update unit's right-shift clamp
    (signed(7), lambda v: min(max(v, 0), 24), 5),       # its left-shift clamp
    (5, lambda v: min(v, 16), 5),                       # the copy's shift clamp
    (6, lambda v: (v * 37 + 5) % 29, 5),                # no structure at all
])
def test_table_lookup_equals_python_at_every_index(shape, fn, width):
    index = Signal(shape)
    m = Module()
    out = Signal(width)
    m.d.comb += out.eq(table_lookup(index, fn, width))
    lo, hi = (-(1 << (len(index) - 1)), 1 << (len(index) - 1)) if index.shape().signed else (0, 1 << len(index))
    seen = []

    async def tb(ctx):
        for v in range(lo, hi):
            ctx.set(index, v)
            assert ctx.get(out) == fn(v), (v, ctx.get(out), fn(v))
            seen.append(v)

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert seen == list(range(lo, hi))


def test_table_lookup_refuses_a_value_that_does_not_fit():
    with pytest.raises(ValueError, match=r"fn\(1\) = 2 does not fit 1 unsigned bits"):
        table_lookup(Signal(signed(3)), lambda v: abs(v) * 2, 1)
