"""ReorgUnit (predictor_hw/reorg.py) in Amaranth's simulator vs its golden
model_sw.adagp_reorg.reorg_samples_int: beats in the engine's write order (with gaps),
two or three layers back to back (double banking), random back-pressure on samples."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from model_sw import adagp_reorg as R
from predictor_hw import reorg as RU
from rtl.config import AcceleratorConfig

CFG = AcceleratorConfig(name="unit", rows=4, cols=4, spad_a_words=64, spad_b_words=64,
                        acc_words=32, mem_addr_bits=14, pred_max_cout=16)


def engine_beats(cfg, base, m, n, vals, rng=None):
    """Write beats of a row-major [m, n] output at ``base`` in the engine's drain order:
    tile rows ti, tile columns tj, then the R rows of the tile (one beat = C lanes)."""
    R_, C = cfg.rows, cfg.cols
    beats = []
    for ti in range(-(-m // R_)):
        for tj in range(-(-n // C)):
            for i in range(R_):
                row = ti * R_ + i
                if row >= m:
                    continue
                lanes = [tj * C + j for j in range(C)]
                beats.append(([base + row * n + c if c < n else 0 for c in lanes],
                              [int(vals[row, c]) if c < n else 0 for c in lanes],
                              [int(c < n) for c in lanes]))
    return beats


def layer_case(rng, kind, batch, c, h=1, w=1, relu=False, base=0, layer_id=0, y_bits=8, y_frac=None):
    lim = 1 << (y_bits - 1)
    if kind == "conv":
        y = rng.integers(-lim, lim, size=(batch, c, h, w))
        if relu:
            y = np.maximum(y, 0)
        stored = y.transpose(1, 0, 2, 3).reshape(c, -1)        # [C, B*H*W] (CNHW)
    else:
        y = rng.integers(-lim, lim, size=(batch, c))
        stored = y.T                                            # [N, B]
    y_frac = int(rng.integers(-2, 25)) if y_frac is None else y_frac
    d = RU.reorg_descriptor(CFG, kind=kind, base=base, batch=batch, c_out=c, h=h, w=w,
                            y_frac=y_frac, k=9, layer_id=layer_id, y_bits=y_bits)
    want, _ = R.reorg_samples_int(y, y_frac, kind, CFG.pred_p)
    return d, engine_beats(CFG, base, *stored.shape, stored), want.reshape(c, -1)


async def arm_layer(ctx, dut, d):
    """Offer a layer descriptor; it is accepted at the edge where ``desc.ready`` is high."""
    ctx.set(dut.desc.payload, d)
    ctx.set(dut.desc.valid, 1)
    await ctx.tick().until(dut.desc.ready)
    ctx.set(dut.desc.valid, 0)
    await ctx.tick()


async def put_beat(ctx, dut, addr, val, en):
    """One engine write beat, observed by the tap (valid and ready) for one cycle."""
    for j in range(CFG.cols):
        ctx.set(dut.tap.payload.addr[j], addr[j])
        ctx.set(dut.tap.payload.data[j], val[j] & ((1 << CFG.slot_bits) - 1))
    ctx.set(dut.tap.payload.en, sum(e << j for j, e in enumerate(en)))
    ctx.set(dut.tap.valid, 1)
    ctx.set(dut.tap.ready, 1)
    await ctx.tick()


def simulate(dut, *testbenches):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.run()


def run_unit(layers, seed=0, ready_prob=0.6, gap_prob=0.3, max_cycles=200_000):
    dut = RU.ReorgUnit(CFG, check=True)      # (asserts the lanes' bank ownership every cycle)
    rng = np.random.default_rng(seed)
    got = []

    async def drive(ctx):
        for d, beats, _ in layers:
            await arm_layer(ctx, dut, d)
            assert ctx.get(dut.armed) and ctx.get(dut.armed_id) == d["layer_id"]
            for addr, val, en in beats:
                while rng.random() < gap_prob:          # engine/memory gaps; valid without ready too
                    ctx.set(dut.tap.valid, int(rng.random() < 0.5))
                    ctx.set(dut.tap.ready, 0)
                    await ctx.tick()
                await put_beat(ctx, dut, addr, val, en)
            ctx.set(dut.tap.valid, 0)
            # wait until this layer's bank is handed over before arming the next
            await ctx.tick().repeat(4)

    async def sink(ctx):
        n_want = sum(len(w) for _, _, w in layers)
        cycles = 0
        while len(got) < n_want:
            rdy = int(rng.random() < ready_prob)
            ctx.set(dut.samples.ready, rdy)
            await ctx.delay(1e-9)
            if rdy and ctx.get(dut.samples.valid):
                p = ctx.get(dut.samples.payload)
                got.append((int(p.channel), int(p.last), [int(v) for v in p.pix], int(ctx.get(dut.layer_id))))
            await ctx.tick()
            cycles += 1
            assert ctx.get(dut.error) == 0, f"error status {ctx.get(dut.error)}"
            assert cycles < max_cycles, "watchdog: samples did not arrive"
        await ctx.tick().repeat(8)
        assert not ctx.get(dut.busy)

    simulate(dut, drive, sink)
    i = 0
    for d, _, want in layers:
        for c in range(d["c_out"]):
            ch, last, pix, lid = got[i]
            assert (ch, last, lid) == (c, int(c == d["c_out"] - 1), d["layer_id"]), got[i]
            assert pix == list(want[c]), (d, c, pix, list(want[c]))
            i += 1


@pytest.mark.parametrize("y_bits,y_frac", [(24, 20), (24, 40), (16, 63), (12, 90)])
def test_wide_outputs_large_right_shifts(y_bits, y_frac):
    """Raw (wide) layer outputs and large fracs: the quantizer's right shift reaches
    14..40 (g_cap's floor), where only the guard, sticky and sign bits decide."""
    rng = np.random.default_rng(y_bits + y_frac)
    layers = [layer_case(rng, "conv", 4, 3, 4, 4, y_bits=y_bits, y_frac=y_frac, layer_id=1),
              layer_case(rng, "linear", 8, 5, y_bits=y_bits, y_frac=y_frac, base=512, layer_id=2)]
    run_unit(layers, seed=y_frac)


def test_digits_cnn_shapes_back_to_back():
    rng = np.random.default_rng(1)
    layers = [layer_case(rng, "conv", 8, 8, 8, 8, relu=True, base=100, layer_id=1),
              layer_case(rng, "conv", 8, 16, 4, 4, relu=True, base=5000, layer_id=2),
              layer_case(rng, "linear", 8, 10, base=9000, layer_id=3)]
    run_unit(layers, seed=1)


@pytest.mark.parametrize("seed", [2, 3])
def test_random_shapes(seed):
    rng = np.random.default_rng(seed)
    layers = [layer_case(rng, "conv", 2, 5, 16, 16, base=7, layer_id=4),
              layer_case(rng, "conv", 4, 3, 2, 1, base=3000, layer_id=5),
              layer_case(rng, "linear", 4, 16, base=1, layer_id=6),
              layer_case(rng, "linear", 1, 3, base=4000, layer_id=7),
              layer_case(rng, "conv", 1, 16, 1, 1, base=8000, layer_id=8)]
    run_unit(layers, seed=seed, ready_prob=0.3)


def test_bad_descriptors_raise_and_set_status():
    with pytest.raises(RU.ReorgHwError, match="C_out=17"):
        RU.reorg_descriptor(CFG, kind="conv", base=0, batch=4, c_out=17, h=4, w=4, y_frac=3, k=9)
    with pytest.raises(RU.ReorgHwError, match="zero-size"):
        RU.reorg_descriptor(CFG, kind="conv", base=0, batch=4, c_out=0, h=4, w=4, y_frac=3, k=9)
    with pytest.raises(RU.ReorgHwError, match="batch=3"):
        RU.reorg_descriptor(CFG, kind="conv", base=0, batch=3, c_out=2, h=4, w=4, y_frac=3, k=9)
    with pytest.raises(RU.ReorgHwError, match="H=6"):
        RU.reorg_descriptor(CFG, kind="conv", base=0, batch=4, c_out=2, h=6, w=4, y_frac=3, k=9)
    good = RU.reorg_descriptor(CFG, kind="conv", base=0, batch=4, c_out=2, h=8, w=8, y_frac=3, k=9)
    # c_out << lg_cs against the memory: 2 << (aw - 1) fills it exactly (accepted), one
    # more doubling leaves it (ERR_MAP)
    fits, leaves = {"lg_cs": CFG.mem_addr_bits - 1}, {"lg_cs": CFG.mem_addr_bits}
    assert good["c_out"] << fits["lg_cs"] == CFG.mem_words
    for patch, code in (({"c_out": 17}, RU.ERR_COUT), ({"c_out": 0}, RU.ERR_ZERO),
                        ({"lg_fh": 0}, RU.ERR_MAP), (leaves, RU.ERR_MAP), (fits, 0)):
        dut = RU.ReorgUnit(CFG, check=True)

        async def tb(ctx, d=dict(good, **patch), code=code):
            ctx.set(dut.desc.payload, d)
            ctx.set(dut.desc.valid, 1)
            # taken DESC_SEEN cycles after it is offered (its checks are registered first)
            for _ in range(RU.DESC_SEEN):
                assert not ctx.get(dut.desc.ready)
                await ctx.tick()
            assert ctx.get(dut.desc.ready)
            await ctx.tick()
            ctx.set(dut.desc.valid, 0)
            await ctx.tick()
            assert ctx.get(dut.error) == code
            assert ctx.get(dut.armed) == (code == 0) and not ctx.get(dut.desc.ready)

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(tb)
        sim.run()


@pytest.mark.parametrize("aw", [12, 16])
def test_cout_fits_equals_the_shifted_compare(aw):
    """cout_fits (bit tests, no shifter) against (c_out << lg_cs) <= 2**aw, for every lg_cs
    and the c_out values around each power of two."""
    from amaranth import Module, Signal
    cfg = CFG.replace(mem_addr_bits=aw)
    m = Module()
    c_out, lg_cs, fits = Signal(cfg.dim_bits), Signal(6), Signal()
    m.d.comb += fits.eq(RU.cout_fits(cfg, c_out, lg_cs))
    values = sorted({v for e in range(cfg.dim_bits) for v in ((1 << e) - 1, 1 << e, (1 << e) + 1)}
                    | {(1 << cfg.dim_bits) - 1})
    wrong = []

    async def tb(ctx):
        for lg in range(64):
            for c in values:
                ctx.set(c_out, c)
                ctx.set(lg_cs, lg)
                if ctx.get(fits) != ((c << lg) <= (1 << aw)):
                    wrong.append((c, lg))

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert wrong == [], f"cout_fits wrong for (c_out, lg_cs) {wrong[:8]}"


@pytest.mark.parametrize("width", [1, 5, 32])
def test_bit_length_equals_python(width):
    """reorg.bit_length (a tree) against int.bit_length: 0, each power of two and its
    neighbours, all ones, and random values."""
    from amaranth import Module, Signal
    m = Module()
    v, n = Signal(width), Signal(range(width + 1))
    m.d.comb += n.eq(RU.bit_length(v))
    rng = np.random.default_rng(width)
    values = {0, (1 << width) - 1} | {x for e in range(width) for x in ((1 << e), (1 << e) - 1, (1 << e) + 1)}
    values |= {int(x) for x in rng.integers(0, 1 << width, 200, dtype=np.uint64)}
    wrong = []

    async def tb(ctx):
        for x in sorted(x for x in values if x < (1 << width)):
            ctx.set(v, x)
            if ctx.get(n) != x.bit_length():
                wrong.append(x)

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert wrong == [], f"bit_length wrong for {wrong[:8]}"


def test_back_to_back_beats_to_the_same_sums():
    """No gaps: a lane adds into the sum it wrote one beat before (a single neuron or
    channel, several tile columns) or two beats before (two neurons alternating): the
    read-modify-write forwarding paths."""
    rng = np.random.default_rng(11)
    layers = [layer_case(rng, "linear", 16, 1, base=3, layer_id=1),
              layer_case(rng, "linear", 16, 2, base=40, layer_id=2),
              layer_case(rng, "conv", 16, 1, 1, 1, base=100, layer_id=3),
              layer_case(rng, "conv", 4, 3, 8, 8, base=300, layer_id=4),
              layer_case(rng, "linear", 16, 3, base=1200, layer_id=5)]
    run_unit(layers, seed=11, ready_prob=0.7, gap_prob=0.0)


@pytest.mark.parametrize("kind,batch,c,h,w", [("conv", 2, 3, 8, 8), ("conv", 4, 5, 2, 2),
                                              ("linear", 4, 10, 1, 1), ("linear", 2, 1, 1, 1)])
def test_cycles_equal_the_model(kind, batch, c, h, w):
    """With samples always taken: the bank is handed over (the finisher's first SCAN
    cycle) HANDOVER + 1 cycles after the last beat, and every sample fires at
    cosim.predictor_model.reorg_emit's offset from there (the cycle model of the GP step)."""
    from cosim import predictor_model as PM
    rng = np.random.default_rng(batch * 100 + c)
    d, beats, want = layer_case(rng, kind, batch, c, h, w, base=17, layer_id=9)
    dut = RU.ReorgUnit(CFG, check=True)
    seen = {"beat": None, "scan": None, "fires": []}

    async def drive(ctx):
        await arm_layer(ctx, dut, d)
        for addr, val, en in beats:
            await put_beat(ctx, dut, addr, val, en)
        ctx.set(dut.tap.valid, 0)

    async def watch(ctx):
        ctx.set(dut.samples.ready, 1)
        cyc = 0
        while len(seen["fires"]) < c:
            await ctx.delay(1e-9)
            if ctx.get(dut.tap.valid):       # the last beat's cycle in the end
                seen["beat"] = cyc
            if ctx.get(dut.emitting) and seen["scan"] is None:
                seen["scan"] = cyc
            if ctx.get(dut.samples.valid):
                seen["fires"].append(cyc)
            await ctx.tick()
            cyc += 1
            assert cyc < 20_000, "watchdog"
        await ctx.tick().repeat(4)
        assert not ctx.get(dut.busy)

    simulate(dut, drive, watch)
    done_rel, offs = PM.reorg_emit(CFG, kind, c)
    assert seen["scan"] - seen["beat"] == PM.HANDOVER + 1
    assert [f - seen["scan"] for f in seen["fires"]] == offs
