"""The predictor's input rule: samples come from each layer's output *activation*
(ReLU(y) for layers followed by a ReLU, y for the last layer), the tensor the engine
stores and predictor_hw's reorganization unit taps.  The reference recomputes the
layers here with torch.nn.functional and numerics, applies ReLU itself, and (quantized
mode) reorganizes the stored integers with the hardware's golden reorg_samples_int."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)

from model_sw import adagp as A
from model_sw import adagp_engine as eng
from model_sw import adagp_reorg as R
from model_sw import numerics
from model_sw.data import Digits, load_digits_split

HIDDEN = {"cnn": ("conv1", "conv2"), "mlp": ("fc1", "fc2")}   # followed by a ReLU in model_sw.models
LAST = {"cnn": "fc", "mlp": "fc3"}


@pytest.fixture(scope="module")
def small():
    d = load_digits_split()
    return Digits(d.x_train[:128], d.y_train[:128], d.x_test[:64], d.y_test[:64])


def _reference_outputs(model_name, weights, x, quant):
    """Each layer's output y before any ReLU, computed here: {name: y}."""
    fq = (lambda t: numerics.fake_quant(t, 8)) if quant else (lambda t: t)
    if model_name == "cnn":
        ops = [("conv1", lambda a, w: F.conv2d(a, w, padding=1)),
               ("conv2", lambda a, w: F.conv2d(a, w, stride=2, padding=1)),
               ("fc", lambda a, w: F.linear(a.flatten(1), w))]
    else:
        ops = [(n, lambda a, w: F.linear(a.flatten(1), w)) for n in ("fc1", "fc2", "fc3")]
    out, a = {}, x
    with torch.no_grad():
        for name, op in ops:
            y = fq(op(fq(a), fq(weights[name])))
            out[name] = y
            a = torch.relu(y)      # the next layer reads the activation
    return out


def _capture(tr, monkeypatch):
    seen = {}
    real_train, real_predict = tr.bank.train_step, tr.bank.predict

    def train_step(batch):
        seen.update({n: s.clone() for n, (s, _) in batch.items()})
        return real_train(batch)

    def predict(name, x):
        seen[name] = x.clone()
        return real_predict(name, x)

    monkeypatch.setattr(tr.bank, "train_step", train_step)
    monkeypatch.setattr(tr.bank, "predict", predict)
    return seen


def _expected(layer, a, quant, p, y_frac=None):
    """Samples of activation ``a``: float path, or the hardware golden on its integers."""
    if not quant:
        return R.normalize_samples(R.layer_samples(layer, a, p))
    kind = "conv" if isinstance(layer, nn.Conv2d) else "linear"
    q, _ = R.reorg_samples_int(numerics.quantize(a, y_frac, 8).numpy(), y_frac, kind, p)
    return torch.from_numpy(np.asarray(q, dtype=np.int64))


@pytest.mark.parametrize("model_name", ["cnn", "mlp"])
@pytest.mark.parametrize("quant", [False, True])
@pytest.mark.parametrize("step_kind", ["bp", "gp"])
def test_predictor_sees_post_relu_activation(small, monkeypatch, model_name, quant, step_kind):
    cfg = A.TrainConfig(model=model_name, epochs=1, batch=32, warmup_epochs=0.25)
    tr = A.Trainer(small, "adagp-q" if quant else "adagp", 0, cfg)
    xb, yb = small.x_train[32:64], small.y_train[32:64]
    for s in range(2):
        tr.bp_step(small.x_train[:32], small.y_train[:32], s)
    weights = {n: l.weight.detach().clone() for n, l in tr.layer_list}
    seen = _capture(tr, monkeypatch)
    (tr.bp_step if step_kind == "bp" else tr.gp_step)(xb, yb, 2)
    ys = _reference_outputs(model_name, weights, xb, quant)
    p = cfg.predictor.p
    assert set(seen) == set(ys)
    for name, layer in tr.layer_list:
        y = ys[name]
        y_frac = numerics.choose_frac_bits(y, 8) if quant else None   # the engine's output scale
        hidden = name in HIDDEN[model_name]
        a = torch.relu(y) if hidden else y
        want = _expected(layer, a, quant, p, y_frac)
        assert torch.equal(seen[name], want), f"{name}: predictor input is not the reorg of its activation"
        # the rule matters: the pre-ReLU output of a hidden layer gives different samples,
        # and the last layer (no ReLU) keeps its negative outputs
        assert bool((y < 0).any()), name
        if hidden:
            assert not torch.equal(seen[name], _expected(layer, y, quant, p, y_frac)), name
    assert name == LAST[model_name] and not tr.relu[name]


def test_relu_after_matches_models():
    from model_sw.models import build_model
    for model_name in ("cnn", "mlp"):
        flags = eng.relu_after(eng.layers(build_model(model_name)))
        assert flags == {n: n in HIDDEN[model_name] for n in flags}
        assert list(flags)[-1] == LAST[model_name]


def test_predictor_input_rule():
    y = torch.tensor([[-1.5, 0.0, 2.0]], requires_grad=True)
    assert torch.equal(R.predictor_input(y, True), torch.tensor([[0.0, 0.0, 2.0]]))
    assert torch.equal(R.predictor_input(y, False), y.detach())
    assert not R.predictor_input(y, True).requires_grad
