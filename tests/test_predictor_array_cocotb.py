"""PredictorArray on Verilator (and one small case on Icarus) through cocotb: samples,
weights and Assistant parameters captured from model_sw runs on digits plus random
ones; every output beat bit-exact with model_sw's integer functions (the bench's
``model()``), counters equal to the cycle model (tb/predictor_array_tb.py)."""
import numpy as np
import pytest

from predictor_hw.predictor_array import Geometry
from rtl.config import preset
from tb.predictor_array_cases import digits_assistant_case, digits_predictor_case
from tb.predictor_array_runner import cfg_dict, run_case

CFG = preset("default")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def digits():
    return digits_predictor_case(steps=6, seed=0), digits_assistant_case("loss", n=40), \
        digits_assistant_case("pixels", n=20)


def _pjob(name, layer, vp, rp, n=None):
    x = layer["x"][:n] if n else layer["x"]
    return dict(name=name, mode=0, k=layer["k"], x=x, channels=list(range(len(x))), valid_prob=vp, ready_prob=rp)


def _ajob(name, a, vp, rp, n=None):
    return dict(name=name, mode=1, k=len(a["w"]), x=a["x"][:n] if n else a["x"], y=a["y"][:n] if n else a["y"],
                valid_prob=vp, ready_prob=rp)


def _check(out, case):
    res = out["results"]
    assert [r["name"] for r in res] == [j["name"] for j in case["jobs"]]
    for r in res:
        if r.get("expect_error"):
            assert r["beats"] == 0 and r["error"] == 1 and r["counters"]["errors"] == 1
            assert r["counters"]["macs"] == 0 and r["counters"]["busy_cycles"] == 0
            continue
        assert r["bit_exact"] and r["beats"] == r["want_beats"] > 0, r
        assert r["cycles_ok"], r
        if r["full_rate"]:
            assert r["counters"]["busy_cycles"] == r["model"]["busy_cycles"]
        else:
            assert r["counters"]["stall_cycles"] > 0       # back-pressure did bite
    return res


def test_verilator_digits_capture(digits):
    pred, asst, _ = digits
    conv1, conv2, fc = pred["layers"]
    params = dict(pred["params"], aw=asst["w"], au=asst["u"])
    case = dict(cfg=cfg_dict(CFG), params=params, seed=11, jobs=[
        _pjob("conv1", conv1, 1.0, 1.0), _pjob("conv2-bp", conv2, 0.7, 0.4), _pjob("fc", fc, 1.0, 1.0),
        _pjob("conv1-bp", conv1, 0.5, 0.5), _ajob("assistant-loss", asst, 1.0, 1.0),
        _ajob("assistant-loss-bp", asst, 0.6, 0.3),
        dict(_pjob("too-wide", conv1, 1.0, 1.0, n=3), k=CFG.pred_kmax + 1, expect_error=1)])  # error is sticky: last
    res = _check(run_case(case, "verilator"), case)
    assert {r["name"]: r["k"] for r in res}["fc"] == 256   # the digits CNN's widest layer
    assert res[-1]["name"] == "too-wide" and res[-1]["expect_error"]


def test_verilator_random_weights_and_pixels_assistant(digits):
    _, _, pix = digits
    g = Geometry(CFG)
    rng = np.random.default_rng(7)
    params = dict(w1=rng.integers(-128, 128, (g.C, 1, 3, 3)).tolist(),
                  w2=rng.integers(-128, 128, (g.kmax, g.F)).tolist(), shift1=9, shift2=10,
                  aw=pix["w"], au=pix["u"])
    jobs = []
    for i, (k, n) in enumerate([(1, 3), (g.kmax, 2), (37, 5)]):
        x = rng.integers(-128, 128, (n, 1, g.P, g.P)).tolist()
        jobs.append(dict(name=f"rand{i}-k{k}", mode=0, k=k, x=x, channels=rng.permutation(50)[:n].tolist(),
                         valid_prob=1.0 if i != 2 else 0.6, ready_prob=1.0 if i != 2 else 0.5))
    jobs.append(_ajob("assistant-pixels", pix, 1.0, 1.0))
    case = dict(cfg=cfg_dict(CFG), params=params, seed=12, jobs=jobs)
    _check(run_case(case, "verilator"), case)


def test_icarus_small_case(digits):
    pred, asst, _ = digits
    params = dict(pred["params"], aw=asst["w"], au=asst["u"])
    case = dict(cfg=cfg_dict(CFG), params=params, seed=13, jobs=[
        _pjob("conv1-2ch", pred["layers"][0], 1.0, 1.0, n=2), _ajob("assistant-loss-8", asst, 1.0, 1.0, n=8)])
    _check(run_case(case, "icarus"), case)
