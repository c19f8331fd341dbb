"""AutoAssist's Assistant on the predictor array: the batch filter (assistant_filter_hw)
against model_sw's float Assistant and shrink rule, its keep-rate statistics, the
engine cycles saved, the RTL backend bit-exact with the golden one, bad input."""
import numpy as np
import pytest

from cosim.predictor_array_model import assistant_filter_hw, engine_step_cycles
from model_sw.autoassist_assistant import (Assistant, IntAssistant, keep_probability, logit_int_error_bound,
                                           shrink_keep, sigmoid)
from predictor_hw.predictor_array import PredictorArrayError, assistant_cycles
from rtl.config import preset
from tb.predictor_array_cases import digits_assistant_case

CFG = preset("default")


@pytest.fixture(scope="module")
def case():
    c = digits_assistant_case("loss", n=400, seed=1)
    a = Assistant(len(c["w"]), 10)
    a.w, a.u = np.asarray(c["w_float"]), np.asarray(c["u_float"])
    ia = IntAssistant(np.asarray(c["w"]), np.asarray(c["u"]), c["fx"], c["fw"])
    return c, a, ia


def test_filter_agrees_with_float_assistant_outside_the_quantization_bound(case):
    c, a, ia = case
    f, y = np.asarray(c["f"]), np.asarray(c["y"])
    rng = np.random.default_rng(0)
    u = rng.random(len(y))
    base = 0.3
    r = assistant_filter_hw(CFG, f, y, ia, u, base, engine_cycles=False)
    zf = a.logit(f, y)
    zq = r["logits"] * 2.0 ** -ia.acc_frac
    bound = logit_int_error_bound(f, ia, a)
    assert np.all(np.abs(zq - zf) <= bound)
    # the float model_sw decision, and where the integer logit could fall on the other side
    want = shrink_keep(a.prob(f, y), u, base)
    v = np.clip((u - base) / (1 - base), 1e-12, 1 - 1e-12)
    thr = np.log(v / (1 - v))
    clear = (u < base) | (np.abs(zf - thr) > bound)
    assert clear.mean() > 0.9
    assert np.array_equal(r["keep"][clear], want[clear])
    assert np.array_equal(r["kept"], np.flatnonzero(r["keep"]))


def test_filter_keep_rate_statistics(case):
    c, a, ia = case
    f, y = np.asarray(c["f"]), np.asarray(c["y"])
    rng = np.random.default_rng(1)
    for base in (0.0, 0.3, 0.8):
        keeps, expect = [], []
        for _ in range(20):
            r = assistant_filter_hw(CFG, f, y, ia, rng.random(len(y)), base, engine_cycles=False)
            keeps.append(r["keep"].mean())
            expect.append(keep_probability(sigmoid(r["logits"] * 2.0 ** -ia.acc_frac), base).mean())
        n = 20 * len(y)
        sd = np.sqrt(0.25 / n)
        assert abs(np.mean(keeps) - np.mean(expect)) < 5 * sd, base


def test_filter_counts_engine_cycles_saved(case):
    c, _, ia = case
    f, y = np.asarray(c["f"])[:32], np.asarray(c["y"])[:32]
    u = np.random.default_rng(2).random(32)
    r = assistant_filter_hw(CFG, f, y, ia, u, 0.3)
    assert 0 < r["n_kept"] < 32
    full, kept = engine_step_cycles(CFG, 32), engine_step_cycles(CFG, r["n_kept"])
    assert r["engine_cycles_saved"] == full["total"] - kept["total"] > 0
    assert r["array_cycles"] == assistant_cycles(CFG, 32, len(ia.w_int))
    assert r["net_cycles_saved"] == r["engine_cycles_saved"] - r["array_cycles"]["busy_cycles"]
    # nothing dropped, nothing saved; the engine's cost grows with the batch
    r1 = assistant_filter_hw(CFG, f, y, ia, u, 1.0)
    assert r1["n_kept"] == 32 and r1["engine_cycles_saved"] == 0
    tot = [engine_step_cycles(CFG, b)["total"] for b in (0, 1, 8, 16, 32)]
    assert tot[0] == 0 and all(x < y2 for x, y2 in zip(tot, tot[1:]))


def test_filter_on_verilator_is_bit_exact_with_golden(case):
    c, _, ia = case
    f, y = np.asarray(c["f"])[:21], np.asarray(c["y"])[:21]
    u = np.random.default_rng(3).random(21)
    hw = assistant_filter_hw(CFG, f, y, ia, u, 0.3, backend="verilator")
    gold = assistant_filter_hw(CFG, f, y, ia, u, 0.3)
    assert np.array_equal(hw["logits"], gold["logits"])
    assert np.array_equal(hw["keep"], gold["keep"])


def test_filter_bad_input(case):
    c, _, ia = case
    f, y = np.asarray(c["f"])[:4], np.asarray(c["y"])[:4]
    u = np.zeros(4)
    with pytest.raises(ValueError, match="base_prob=1.5"):
        assistant_filter_hw(CFG, f, y, ia, u, 1.5)
    with pytest.raises(PredictorArrayError, match="non-empty"):
        assistant_filter_hw(CFG, f[:0], y[:0], ia, u[:0], 0.3)
    with pytest.raises(PredictorArrayError, match="5 features"):
        assistant_filter_hw(CFG, np.zeros((4, 5)), y, ia, u, 0.3)
    with pytest.raises(ValueError, match="backend='bogus'"):
        assistant_filter_hw(CFG, f, y, ia, u, 0.3, backend="bogus")
