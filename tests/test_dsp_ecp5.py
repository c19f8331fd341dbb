"""The ECP5 form of the MAC arrays (rtl/dsp.py: each PE's product in a MULT18X18D's own
output register) simulated with the primitive's behavioural model (tb/ecp5_cells.py):
the engine's results bit-exact against the golden model and its cycle counters equal
to the cycle model, as for the portable form; the whole Accelerator (the predictor
array's products too) on a GP step, bit-exact against model_sw.  The board builds
and rtl.timing synthesize this form, which no other simulation runs."""
import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator

from cosim import accel_sim as AS
from cosim import predictor_model as PM
from cosim.bench_predictor import capture_digits
from cosim.execute import run_checked
from cosim.rtlsim import RtlSim
from rtl.config import preset
from rtl.dsp import ECP5, registered_product
from rtl.generate import accelerator_verilog, engine_verilog
from tb.ecp5_cells import mult18x18d_model
from tests.rtl_cases import check_gemms_and_conv, gemm_case

CFG = preset("small")


class Ecp5EngineSim(RtlSim):
    """The engine elaborated for an ECP5, with the primitive's model beside it."""
    platform = ECP5

    def design_verilog(self, cfg):
        return super().design_verilog(cfg) + mult18x18d_model()


@pytest.fixture(scope="module")
def ecp5_sim():
    with Ecp5EngineSim(CFG, "verilator") as s:
        yield s


def test_ecp5_form_instantiates_one_registered_dsp_per_pe():
    v = engine_verilog(CFG, ECP5)
    assert v.count("MULT18X18D #(") == CFG.rows * CFG.cols
    assert v.count('.REG_OUTPUT_CLK("CLK0")') == CFG.rows * CFG.cols
    assert "MULT18X18D" not in engine_verilog(CFG)       # the portable form has none


def test_ecp5_form_gemms_and_conv(ecp5_sim):
    check_gemms_and_conv(ecp5_sim, CFG, np.random.default_rng(5), "ecp5", conv_stall=64)


def test_ecp5_form_under_output_backpressure(ecp5_sim):
    """Output-bound GEMMs (short K) with a memory that often refuses writes: the array
    stalls (its enable low) with products in flight, so a product register that ignored
    its enable would be seen here."""
    rng = np.random.default_rng(6)
    for M, N, K in ((16, 16, 2), (12, 9, 3)):
        img, prog, _ = gemm_case(CFG, rng, M, N, K, out_raw=True)
        res = run_checked(ecp5_sim, CFG, img, prog, what=f"ecp5 gemm {M}x{N}x{K} back-pressure",
                          stall_prob=200, stall_seed=M)
        assert res.counters["stall_cycles"] > 0          # the array did stall


def test_generic_product_matches_numpy_under_enable():
    """The portable form: the product of the operands at the last enabled edge."""
    a, b, en = Signal(signed(8)), Signal(signed(8)), Signal()
    m = Module()
    p = registered_product(m, a, b, en, platform=None, name="p")
    rng = np.random.default_rng(1)

    async def tb(ctx):
        want = 0
        for _ in range(200):
            x, y = (int(v) for v in rng.integers(-128, 128, 2))
            e = int(rng.integers(0, 2))
            ctx.set(a, x)
            ctx.set(b, y)
            ctx.set(en, e)
            await ctx.tick()
            want = x * y if e else want
            assert ctx.get(p) == want

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_operands_checked():
    m = Module()
    with pytest.raises(ValueError, match="must be signed"):
        registered_product(m, Signal(8), Signal(signed(8)), 1, platform=None, name="p")
    with pytest.raises(ValueError, match="19 x 8 bits does not fit"):
        registered_product(m, Signal(signed(19)), Signal(signed(8)), 1, platform=ECP5, name="p")


class Ecp5AccelSim(AS.AccelSim):
    """The Accelerator elaborated for an ECP5, with the primitive's model beside it."""
    platform = ECP5

    def design_verilog(self, cfg):
        return super().design_verilog(cfg) + mult18x18d_model()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ecp5_form_accelerator_gp_step():
    cfg = preset("default")
    v = accelerator_verilog(cfg, ECP5)
    assert v.count("MULT18X18D #(") == cfg.rows * cfg.cols + cfg.pred_rows * cfg.pred_cols
    cap = capture_digits(steps=2, batch=16)
    run = AS.gp_program(cfg, cap, steps=1, g_shift_override=0)
    with Ecp5AccelSim(cfg, "verilator") as asim:
        rep = AS.run_gp(asim, run)
        w16 = {}
        for Ld in run.layers:
            t = run.img.tensors["w16_" + Ld["name"]]
            w16[Ld["name"]] = asim.dump(t.base, t.base + t.size).reshape(t.shape)
    gold = AS.gp_golden(run, cap)["steps"][0]
    for Ld in run.layers:
        got_g = Ld["cap"].w_master.reshape(w16[Ld["name"]].shape) - w16[Ld["name"]]
        assert np.array_equal(got_g, gold[Ld["name"]]["pred"]), Ld["name"]
        assert np.abs(got_g).sum() > 0
    model = PM.gp_timeline(cfg, PM.specs_from_run(run), run.steps)
    got = dict(rep["counters"], run_cycles=rep["run_cycles"])
    assert {k: got[k] for k in model} == model
