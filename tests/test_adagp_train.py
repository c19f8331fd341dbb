"""Training loop: layer walk, no backward in GP steps, per-layer update order, bad input, quantized arithmetic."""
import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

torch.set_num_threads(1)

from model_sw import adagp as A
from model_sw import adagp_engine as eng
from model_sw import numerics
from model_sw.adagp_engine import NonFiniteError
from model_sw.adagp_predictor import PredictorSizeError
from model_sw.data import Digits, load_digits_split
from model_sw.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def small():
    d = load_digits_split()
    return Digits(d.x_train[:256], d.y_train[:256], d.x_test[:128], d.y_test[:128])


def _cfg(model="cnn", **kw):
    return replace(A.TrainConfig(model=model, epochs=1, batch=32, warmup_epochs=0.25), **kw)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("quant", [False, True])
def test_layer_walk_equals_model(name, quant):
    torch.manual_seed(0)
    m = build_model(name)
    x = torch.rand(6, 1, 8, 8)
    seen = []
    y = eng.forward(m, x, quant, on_output=lambda n, l, o: seen.append(n))
    assert seen == [n for n, _ in eng.layers(m)]
    if quant:  # engine arithmetic: the logits are on an 8-bit power-of-two grid, close to float
        f = numerics.choose_frac_bits(y, 8)
        assert torch.equal(y * 2.0 ** f, torch.round(y * 2.0 ** f))
        ref = m(x).detach()
        assert float((y.detach() - ref).abs().max()) < 0.1 * float(ref.abs().max()) + 0.05
    else:
        torch.testing.assert_close(y, m(x))


class _BackwardCounter:
    """Counts every autograd backward (Tensor.backward goes through torch.autograd.backward)."""

    def __init__(self, monkeypatch):
        self.n = 0
        real_backward, real_grad = torch.autograd.backward, torch.autograd.grad

        def backward(*a, **k):
            self.n += 1
            return real_backward(*a, **k)

        def grad(*a, **k):
            self.n += 1
            return real_grad(*a, **k)

        monkeypatch.setattr(torch.autograd, "backward", backward)
        monkeypatch.setattr(torch.autograd, "grad", grad)


@pytest.mark.parametrize("method", ["adagp", "adagp-q", "adagp-perlayer"])
def test_gp_step_runs_no_backward(small, monkeypatch, method):
    tr = A.Trainer(small, method, 0, _cfg())
    xb, yb = small.x_train[:32], small.y_train[:32]
    for s in range(3):  # train the predictor and the gradient scale a little
        tr.bp_step(xb, yb, s)
    counter = _BackwardCounter(monkeypatch)
    hooks_fired = []
    handles = [l.weight.register_hook(lambda g, n=n: hooks_fired.append(n)) for n, l in tr.layer_list]
    before = {n: l.weight.detach().clone() for n, l in tr.layer_list}
    tr.gp_step(xb, yb, 3)
    assert counter.n == 0 and hooks_fired == []
    for n, l in tr.layer_list:
        assert l.weight.grad is None, n
        assert not torch.equal(l.weight.detach(), before[n]), f"{n} was not updated by its predicted gradient"
    # the counter and hooks do see a BP step (so this test can fail)
    tr.bp_step(xb, yb, 4)
    assert counter.n >= 1 and set(hooks_fired) == {n for n, _ in tr.layer_list}
    for h in handles:
        h.remove()


def test_gp_updates_each_layer_right_after_its_forward(small, monkeypatch):
    tr = A.Trainer(small, "adagp", 0, _cfg())
    xb, yb = small.x_train[:32], small.y_train[:32]
    tr.bp_step(xb, yb, 0)
    events = []
    real_op, real_upd = eng.layer_op, eng.apply_update
    names = {id(l.weight): n for n, l in tr.layer_list}
    monkeypatch.setattr(eng, "layer_op", lambda layer, x, w: (events.append(("fwd", names[id(layer.weight)])),
                                                              real_op(layer, x, w))[1])
    monkeypatch.setattr(eng, "apply_update", lambda w, g, lr, q: (events.append(("upd", names[id(w)])),
                                                                  real_upd(w, g, lr, q))[1])
    tr.gp_step(xb, yb, 1)
    want = [(k, n) for n in tr.names for k in ("fwd", "upd")]
    assert events == want


def test_run_result_keys_and_accounting(small):
    r = A.run(small, "adagp-fixed", 0, _cfg())
    steps, warm = r["steps"], r["warmup_steps"]
    assert steps == 8 and warm == 2
    assert r["gp_steps"] + r["bp_steps"] == steps
    assert r["gp_fraction"] == pytest.approx(r["gp_steps"] / (steps - warm))
    # formula: saved = N_gp * backward(BP step) - predictor(N_gp forwards + N_bp trainings)
    tr = A.Trainer(small, "adagp-fixed", 0, _cfg())
    bwd = tr.bwd_macs_step
    fwd = tr.fwd_macs
    assert fwd == {"conv1": 32 * 8 * 64 * 9, "conv2": 32 * 16 * 16 * 72, "fc": 32 * 10 * 256}
    assert bwd == sum(fwd.values()) + fwd["conv2"] + fwd["fc"]
    pred = r["gp_steps"] * tr.bank.forward_macs() + r["bp_steps"] * tr.bank.train_macs()
    assert r["backward_macs_saved_abs"] == r["gp_steps"] * bwd - pred
    assert r["backward_macs_saved"] == pytest.approx(r["backward_macs_saved_abs"] / (bwd * steps))
    assert len(r["log"]) == steps and all("phase" in e and "n_gp" in e for e in r["log"])


def test_nan_activation_stops_naming_layer_and_step(small):
    tr = A.Trainer(small, "adagp", 0, _cfg())
    xb, yb = small.x_train[:32], small.y_train[:32]
    tr.bp_step(xb, yb, 0)
    with torch.no_grad():
        tr.model.conv2.weight.fill_(3e38)  # finite weights, overflowing (Inf) activations
    with pytest.raises(NonFiniteError, match=r"activation in layer 'conv2' at step 7"):
        tr.bp_step(xb, yb, 7)
    with pytest.raises(NonFiniteError, match=r"activation in layer 'conv2' at step 8"):
        tr.gp_step(xb, yb, 8)
    bad = xb.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"input in layer 'conv1' at step 9"):
        A.Trainer(small, "bp", 0, _cfg()).bp_step(bad, yb, 9)


def test_nan_prediction_stops_naming_layer(small):
    tr = A.Trainer(small, "adagp", 0, _cfg())
    xb, yb = small.x_train[:32], small.y_train[:32]
    tr.bp_step(xb, yb, 0)
    with torch.no_grad():
        tr.bank.nets["conv1"].fc.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"predicted gradient in layer 'conv1' at step 5"):
        tr.gp_step(xb, yb, 5)


def test_nan_weight_and_gradient_stop_naming_layer(small):
    tr = A.Trainer(small, "bp-q", 0, _cfg())
    xb, yb = small.x_train[:32], small.y_train[:32]
    h = tr.model.conv1.weight.register_hook(lambda g: g * float("nan"))
    with pytest.raises(NonFiniteError, match=r"weight gradient in layer 'conv1' at step 2"):
        tr.bp_step(xb, yb, 2)
    h.remove()
    with torch.no_grad():
        tr.model.fc.weight.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match=r"weight in layer 'fc' at step 3"):
        tr.bp_step(xb, yb, 3)


def test_bad_model_method_and_size(small):
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        A.TrainConfig(model="resnet")
    with pytest.raises(ValueError, match="unknown method 'adagp-magic'"):
        A.Trainer(small, "adagp-magic", 0, _cfg())
    with pytest.raises(PredictorSizeError, match="'fc' has fan-in 256.*100"):
        A.Trainer(small, "adagp", 0, _cfg(max_fan_in=100))
    with pytest.raises(ValueError, match="power of two"):
        A.Trainer(small, "bp-q", 0, _cfg(lr=0.1))


def test_quantized_update_matches_numerics():
    torch.manual_seed(1)
    w = eng.quant_real(torch.randn(8, 9) * 0.3, 16)
    g = torch.randn(8, 9) * 1e-2
    w_new = w.clone()
    eng.apply_update(w_new, g, 0.125, quant=True)
    fg = numerics.choose_frac_bits(g, 8)
    g8 = numerics.dequantize(numerics.quantize(g, fg, 8), fg)
    ref = w.double() - 0.125 * g8.double()
    fw = numerics.choose_frac_bits(ref, 16)
    ref = numerics.dequantize(numerics.quantize(ref, fw, 16), fw)
    assert torch.equal(w_new, ref.float())
    assert not torch.equal(w_new, w)


def test_cli_json(tmp_path):
    out = tmp_path / "o"
    p = subprocess.run([sys.executable, "-m", "model_sw.train", "--model", "mlp", "--method", "bp,adagp-q",
                        "--seeds", "1", "--epochs", "1", "--json", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert [l["method"] for l in lines] == ["bp", "adagp-q"]
    for l in lines:
        for k in ("method", "acc_mean", "acc_std", "gp_fraction", "backward_macs_saved"):
            assert k in l
        assert math.isfinite(l["acc_mean"])
    for f in ("results.json", "steplog.jsonl", "acc_vs_step.png", "gp_fraction.png", "cosine.png"):
        assert (out / f).exists(), f
    bad = subprocess.run([sys.executable, "-m", "model_sw.train", "--model", "vgg", "--json", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown model 'vgg'" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "model_sw.train", "--method", "bp,foo", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown method 'foo'" in bad.stderr
