"""The Accelerator top (engine + reorganization unit + predictor array + update unit) on
Verilator, running ADA-GP GP steps of the digits CNN captured from model_sw: every
engine output, every sample, every predicted gradient and every updated weight
bit-exact against model_sw's integer functions; counters vs cosim.predictor_model."""
import numpy as np
import pytest

from cosim import accel_sim as AS
from cosim import predictor_model as PM
from predictor_hw import reorg as RU
from cosim.bench_predictor import capture_digits
from rtl.config import preset

CFG = preset("default")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def cap():
    return capture_digits(steps=6, batch=32)


@pytest.fixture(scope="module")
def asim():
    with AS.AccelSim(CFG, "verilator") as s:
        yield s


def _dump(sim, run, name):
    t = run.img.tensors[name]
    return sim.dump(t.base, t.base + t.size).reshape(t.shape)


def test_gp_step_predicted_gradients_bit_exact(cap, asim):
    # g_shift = 0: the update subtracts the predicted gradient itself, so the weight
    # change *is* the array's output (no rounding hides a wrong prediction)
    run = AS.gp_program(CFG, cap, steps=1, g_shift_override=0)
    rep = AS.run_gp(asim, run)
    gold = AS.gp_golden(run, cap)["steps"][0]
    for Ld in run.layers:
        L = Ld["cap"]
        y = _dump(asim, run, "y_" + L.name)
        want = gold[L.name]["y"]
        want_cnhw = want.transpose(1, 0, 2, 3) if want.ndim == 4 else want.T.reshape(y.shape)
        assert np.array_equal(y, want_cnhw), L.name
        # the engine's output is model_sw's (the captured activations)
        assert np.array_equal(want, L.y_post), L.name
        w16 = _dump(asim, run, "w16_" + L.name)
        got_g = L.w_master.reshape(w16.shape) - w16
        assert np.array_equal(got_g, gold[L.name]["pred"]), L.name
        assert np.abs(got_g).sum() > 0, f"{L.name}: an all-zero prediction tests nothing"
    _check_counters(rep, run)
    assert rep["counters"]["samples"] == sum(Ld["geom"].cout for Ld in run.layers)


def _check_counters(rep, run):
    """Every counter the predictor model predicts equals the RTL's, exactly."""
    model = PM.gp_timeline(CFG, PM.specs_from_run(run), run.steps)
    got = dict(rep["counters"], run_cycles=rep["run_cycles"])
    assert {k: got[k] for k in model} == model


def test_two_gp_steps_scaled_update_bit_exact(cap, asim):
    run = AS.gp_program(CFG, cap, steps=2)
    rep = AS.run_gp(asim, run)
    _check_counters(rep, run)
    gold = AS.gp_golden(run, cap)["steps"][-1]
    for Ld in run.layers:
        L = Ld["cap"]
        assert np.array_equal(_dump(asim, run, "w16_" + L.name), gold[L.name]["w16"]), L.name
        assert np.array_equal(_dump(asim, run, "w8_" + L.name), gold[L.name]["w8"]), L.name


def test_small_batch_waits_for_updates(asim):
    """Batch 8: the forward is short, so the next step's layers wait at the wait_upd fence
    for the previous step's updates; the model still gives every counter exactly."""
    cap8 = capture_digits(steps=6, batch=8)
    run = AS.gp_program(CFG, cap8, steps=2)
    rep = AS.run_gp(asim, run)
    assert rep["counters"]["gate_cycles"] > 1000
    _check_counters(rep, run)
    gold = AS.gp_golden(run, cap8)["steps"][-1]
    for Ld in run.layers:
        assert np.array_equal(_dump(asim, run, "w16_" + Ld["name"]), gold[Ld["name"]]["w16"])


def test_too_wide_layer_error_status_and_exception(cap, asim):
    run = AS.gp_program(CFG, cap, steps=1)
    d = RU.reorg_descriptor(CFG, kind="conv", base=run.layers[0]["y"].base, batch=cap.batch, c_out=8,
                            h=8, w=8, y_frac=3, k=9, layer_id=1)
    d["c_out"] = CFG.pred_max_cout + 1          # the Python side refuses this (below)
    run.rdescs[0] = RU.pack_desc(CFG, d)
    with pytest.raises(AS.AccelError, match="'reorg': 1"):
        AS.run_gp(asim, run, watchdog=200_000)
    with pytest.raises(RU.ReorgHwError, match=f"C_out={CFG.pred_max_cout + 1}"):
        RU.reorg_descriptor(CFG, kind="conv", base=0, batch=cap.batch, c_out=CFG.pred_max_cout + 1,
                            h=8, w=8, y_frac=3, k=9)


def test_bp_update_with_true_gradient_from_the_engine(cap, asim):
    """A BP step's update: the engine computes the fc layer's weight gradient (requantized
    to int8), then the update unit (fenced on the engine's retired count) reads it and
    applies w16 <- sat16(w16 - round(dW * 2**g_shift)); both bit-exact."""
    from cosim import driver
    from cosim.driver import MemoryImage
    from model_sw import numerics
    from predictor_hw import update as U
    from rtl import accelerator as acc
    L = cap.layers[-1]                                    # fc: x (B, 16, 4, 4), w (10, 256)
    B, k, n_out = cap.batch, L.fan_in, L.w_int.shape[0]
    rng = np.random.default_rng(4)
    dy = rng.integers(-128, 128, size=(n_out, B))          # dL/dlogits, int8 [N, B]
    img = MemoryImage(CFG)
    x = img.put("x", np.ascontiguousarray(L.x_int.reshape(B, 16, 4, 4).transpose(1, 0, 2, 3)))
    t_dy = img.put("dy", dy)
    w16 = img.put("w16", L.w_master.reshape(n_out, k))
    dw = img.alloc("dw", (n_out, k))
    xt = {"base": x.base, "lane": [driver.digit(4, cb=1), driver.digit(4, cb=4), driver.digit(cb=B * 16)],
          "k": [driver.digit(cb=16), driver.digit(1), driver.digit(1)], "init": {}}
    shift = 9
    prog = driver.gemm_program(CFG, n_out, k, B, driver.matrix_desc(t_dy.base, B, 1), xt, d_addr=dw.base,
                               d_si=k, shift=shift, layer="fc_dw")
    ud = U.update_descriptor(CFG, w_base=w16.base, c_out=n_out, k=k, g_shift=-1, g_base=dw.base,
                             after=len(prog))
    asim.load_mem(img.mem)
    asim.load_streams([], [AS._pack(U.update_desc_layout(CFG), ud)], [], 0, 0)
    asim.load_program([acc.encode(CFG, ins) for ins in prog])
    rep = asim.run(len(prog), 2_000_000)
    assert rep["error"] == 0 and rep["counters"]["upd_layers"] == 1
    xf = L.x_int.reshape(B, k).astype(np.int64)
    dw8, _ = numerics.requantize(dy @ xf, shift, 8)
    assert np.array_equal(asim.dump(dw.base, dw.base + dw.size).reshape(n_out, k), dw8)
    want = numerics.sgd_update_int(L.w_master.reshape(n_out, k), dw8, -1, 16)
    assert np.array_equal(asim.dump(w16.base, w16.base + w16.size).reshape(n_out, k), want)
    assert rep["counters"]["upd_elems"] == n_out * k


def test_gp_step_bit_exact_under_memory_back_pressure(cap, asim):
    """Random back-pressure on every memory port (the engine's writes stall with valid high:
    the tap must count only handshakes); results stay bit-exact, only the timing moves."""
    run = AS.gp_program(CFG, cap, steps=2)
    rep = AS.run_gp(asim, run, stall_prob=80)
    gold = AS.gp_golden(run, cap)["steps"][-1]
    for Ld in run.layers:
        assert np.array_equal(_dump(asim, run, "w16_" + Ld["name"]), gold[Ld["name"]]["w16"])
        assert np.array_equal(_dump(asim, run, "w8_" + Ld["name"]), gold[Ld["name"]]["w8"])
    model = PM.gp_timeline(CFG, PM.specs_from_run(run), run.steps)
    assert rep["run_cycles"] > model["run_cycles"]            # the stalls did bite
    assert rep["counters"]["samples"] == model["samples"] and rep["counters"]["upd_elems"] == model["upd_elems"]


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 8])
def test_regout_fifo_behaves_as_syncfifobuffered(depth):
    """rtl.accelerator.SyncFIFORegOut (the samples FIFO, read data from flip-flops) against
    amaranth's SyncFIFOBuffered, driven by the same random writes and reads: w_rdy, r_rdy,
    level and the read data equal in every cycle (so no cycle of the predictor model moves)."""
    from amaranth import Module
    from amaranth.lib.fifo import SyncFIFOBuffered
    from amaranth.sim import Simulator
    from rtl.accelerator import SyncFIFORegOut

    width = 12
    m = Module()
    m.submodules.ref = ref = SyncFIFOBuffered(width=width, depth=depth)
    m.submodules.dut = dut = SyncFIFORegOut(width, depth)
    rng = np.random.default_rng(depth)
    seen = {"reads": 0, "full": 0}

    async def bench(ctx):
        for cyc in range(1500):
            # phases of mostly writing / mostly reading so the FIFO fills and drains
            pw = 0.8 if (cyc // 100) % 2 == 0 else 0.3
            w_en, r_en, wd = int(rng.random() < pw), int(rng.random() < 1.1 - pw), int(rng.integers(1 << width))
            for f in (ref, dut):
                ctx.set(f.w_en, w_en)
                ctx.set(f.r_en, r_en)
                ctx.set(f.w_data, wd)
            got = [ctx.get(dut.w_rdy), ctx.get(dut.r_rdy), ctx.get(dut.level)]
            want = [ctx.get(ref.w_rdy), ctx.get(ref.r_rdy), ctx.get(ref.level)]
            assert got == want, f"cycle {cyc}: w_rdy, r_rdy, level {got} != {want}"
            assert ctx.get(dut.nonempty) == int(want[2] != 0), f"cycle {cyc}: nonempty"
            if want[1]:
                assert ctx.get(dut.r_data) == ctx.get(ref.r_data), f"cycle {cyc}: read data"
                seen["reads"] += r_en
            seen["full"] += int(not want[0])
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen["reads"] > 300 and seen["full"] > 20, seen


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_regout_fifo_bad_depth():
    from rtl.accelerator import SyncFIFORegOut
    with pytest.raises(ValueError, match="depth=0"):
        SyncFIFORegOut(8, 0)
