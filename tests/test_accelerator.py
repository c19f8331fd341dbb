"""The Accelerator top (engine + reorganization unit + predictor array + update unit) on
Verilator, running ADA-GP GP steps of the digits CNN captured from model_sw: every
engine output, every sample, every predicted gradient and every updated weight
bit-exact against model_sw's integer functions; counters vs cosim.predictor_model."""
import numpy as np
import pytest

from cosim import accel_sim as AS
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
    c = rep["counters"]
    assert c["samples"] == sum(Ld["geom"].cout for Ld in run.layers)
    assert c["upd_elems"] == sum(Ld["geom"].cout * Ld["cap"].fan_in for Ld in run.layers)
    assert c["upd_layers"] == len(run.layers)


def test_two_gp_steps_scaled_update_bit_exact(cap, asim):
    run = AS.gp_program(CFG, cap, steps=2)
    AS.run_gp(asim, run)
    gold = AS.gp_golden(run, cap)["steps"][-1]
    for Ld in run.layers:
        L = Ld["cap"]
        assert np.array_equal(_dump(asim, run, "w16_" + L.name), gold[L.name]["w16"]), L.name
        assert np.array_equal(_dump(asim, run, "w8_" + L.name), gold[L.name]["w8"]), L.name
