"""ReorgUnit on Verilator through cocotb (tb/reorg_tb.py): engine-order write beats with
random gaps, random back-pressure on samples; every sample bit-exact with the golden
model_sw.adagp_reorg.reorg_samples_int, on random layers and on captured digits-CNN
activations; a layer wider than the unit supports sets the error status."""
import dataclasses

import numpy as np
import pytest
from amaranth.back import verilog

from model_sw import adagp_reorg as R
from predictor_hw import reorg as RU
from rtl.config import preset
from tb.unit_runner import run_bench
from tests.test_reorg_pysim import engine_beats

CFG = preset("small").replace(pred_max_cout=16)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _layer(kind, y, y_frac, base, layer_id, k=9):
    if kind == "conv":
        b, c, h, w = y.shape
        stored = y.transpose(1, 0, 2, 3).reshape(c, -1)
    else:
        (b, c), h, w = y.shape, 1, 1
        stored = y.T
    d = RU.reorg_descriptor(CFG, kind=kind, base=base, batch=b, c_out=c, h=h, w=w, y_frac=y_frac, k=k,
                            layer_id=layer_id)
    want, _ = R.reorg_samples_int(y, y_frac, kind, CFG.pred_p)
    return dict(desc=d, beats=engine_beats(CFG, base, *stored.shape, stored),
                want=want.reshape(c, -1).tolist())


def _run(layers, seed, ready_prob=0.5, gap_prob=0.3):
    v = verilog.convert(RU.ReorgUnit(CFG), name="reorg", emit_src=False)
    case = dict(cfg=dataclasses.asdict(CFG), seed=seed, layers=layers, ready_prob=ready_prob, gap_prob=gap_prob)
    return run_bench(v, "reorg", "tb.reorg_tb", case, tag=CFG.name)


def _check(res, layers):
    assert not res["timed_out"] and res["error"] == 0
    want = [(L["desc"]["layer_id"], c, int(c == len(L["want"]) - 1), p, L["desc"]["k"])
            for L in layers for c, p in enumerate(L["want"])]
    got = [(s["layer_id"], s["channel"], s["last"], s["pix"], s["k"]) for s in res["samples"]]
    assert got == want
    assert not res["busy"]


def test_verilator_digits_capture_and_random():
    from cosim.bench_predictor import capture_digits
    cap = capture_digits(steps=6, batch=8)
    rng = np.random.default_rng(5)
    layers, base = [], 16
    for i, L in enumerate(cap.layers):
        layers.append(_layer(L.kind, L.y_post, L.y_frac, base, i + 1, k=L.fan_in))
        base += L.y_post.size + 3
    layers.append(_layer("conv", rng.integers(-128, 128, (1, 3, 16, 16)), 9, 6000, 9))
    layers.append(_layer("linear", rng.integers(-128, 128, (4, 16)), 3, 9000, 10))
    res = _run(layers, seed=3)
    _check(res, layers)
    assert any(any(s["pix"]) for s in res["samples"])     # non-trivial samples


def test_verilator_too_wide_layer_sets_error():
    d = RU.reorg_descriptor(CFG, kind="conv", base=0, batch=2, c_out=4, h=4, w=4, y_frac=3, k=9)
    d["c_out"] = CFG.pred_max_cout + 1       # what the Python check refuses (tested below)
    res = _run([dict(desc=d, beats=[], want=[], expect_error=1)], seed=1)
    assert res["error"] == RU.ERR_COUT and res["samples"] == []
    with pytest.raises(RU.ReorgHwError, match=f"C_out={CFG.pred_max_cout + 1}"):
        RU.reorg_descriptor(CFG, kind="conv", base=0, batch=2, c_out=CFG.pred_max_cout + 1, h=4, w=4,
                            y_frac=3, k=9)
