"""Test cases for the PredictorArray benches, captured from real model_sw runs on digits.

* :func:`digits_predictor_case`: model_sw's quantized ADA-GP (``adagp-q``) trains the
  digits CNN for a few BP steps (the shared predictor is trained and its scales
  calibrated); on the next batch, the samples model_sw's GP step feeds the predictor
  for each layer (``Trainer._samples``) and the predictor's ``int_params()``.
  The case builder checks that predictor_forward_int on them equals model_sw's own
  fake-quantized predictor output (so the bench checks the hardware against what
  training really uses).
* :func:`digits_assistant_case`: the Boss (the same CNN) reports per-instance losses
  and margins, the Assistant is trained by SGD on them (model_sw.autoassist_assistant),
  then quantized with quantize_features / quantize_assistant.
Everything is returned as JSON-able lists.
"""
from __future__ import annotations

import numpy as np
import torch

from model_sw import numerics
from model_sw.adagp_predictor import predictor_forward_int


def _trainer(steps: int, seed: int, batch: int = 32):
    from model_sw.adagp import Trainer, TrainConfig
    from model_sw.data import load_digits_split

    torch.set_num_threads(1)
    data = load_digits_split()
    tr = Trainer(data, "adagp-q", seed, TrainConfig(model="cnn", epochs=1, batch=batch))
    perm = torch.randperm(data.x_train.shape[0], generator=torch.Generator().manual_seed(seed))
    for s in range(steps):
        idx = perm[s * batch:(s + 1) * batch]
        tr.bp_step(data.x_train[idx], data.y_train[idx], s)
    return tr, data, perm[steps * batch:(steps + 1) * batch]


def digits_predictor_case(steps: int = 6, seed: int = 0) -> dict:
    from model_sw import adagp_engine as eng

    tr, data, idx = _trainer(steps, seed)
    samples = {}

    def keep(name, layer, out):
        samples[name] = tr._samples(name, layer, out)

    with torch.no_grad():
        eng.forward(tr.model, data.x_train[idx], True, steps, keep)
        layers = []
        for name in tr.names:
            x = samples[name]
            k = tr.fan_ins[name]
            net = tr.bank.nets[name]
            ip = net.int_params()
            want = predictor_forward_int(x.numpy(), ip["w1"], ip["w2"], ip["shift1"], ip["shift2"],
                                         ip["pool"], k)[:, :k]
            ref = tr.bank.predict(name, x)          # model_sw's fake-quant predictor, real values
            got = numerics.dequantize(want, ip["frac_out"])
            if not np.array_equal(got, ref.double().numpy()):
                raise AssertionError(f"{name}: predictor_forward_int differs from model_sw's predictor")
            layers.append(dict(name=name, k=int(k), x=x.numpy().astype(int).tolist()))
    ip = next(iter(tr.bank.nets.values())).int_params()
    params = dict(w1=ip["w1"].astype(int).tolist(), w2=ip["w2"].astype(int).tolist(),
                  shift1=int(ip["shift1"]), shift2=int(ip["shift2"]), frac_out=int(ip["frac_out"]))
    return dict(params=params, layers=layers, steps=steps, seed=seed)


def digits_assistant_case(feature_set: str = "loss", n: int = 40, steps: int = 6, seed: int = 0,
                          sgd_steps: int = 30) -> dict:
    from model_sw.autoassist_assistant import (Assistant, LossEMA, make_features, quantize_assistant,
                                               quantize_features)

    tr, data, _ = _trainer(steps, seed)
    xs, ys = data.x_train.numpy(), data.y_train.numpy()
    feats = make_features(feature_set, xs)
    with torch.no_grad():
        logits = tr.model(data.x_train)
        loss = torch.nn.functional.cross_entropy(logits, data.y_train, reduction="none").numpy()
        zy = logits.gather(1, data.y_train[:, None])[:, 0]
        other = logits.scatter(1, data.y_train[:, None], float("-inf")).max(1).values
        margin = (zy - other).numpy()
    rng = np.random.default_rng(seed)
    a = Assistant(feats.n, 10)
    ema = LossEMA()
    for _ in range(sgd_steps):                  # the Boss's reports, batch by batch
        b = rng.choice(len(xs), 32, replace=False)
        labels = ema.update(loss[b])
        a.train_step(feats(b), ys[b], labels)
        feats.update(b, loss[b], margin[b])
    pick = rng.choice(len(xs), n, replace=False)
    f = feats(pick)
    x_int, fx = quantize_features(f)
    ia = quantize_assistant(a, fx)
    return dict(feature_set=feature_set, x=np.asarray(x_int).astype(int).tolist(), y=ys[pick].astype(int).tolist(),
                w=np.asarray(ia.w_int).astype(int).tolist(), u=np.asarray(ia.u_int).astype(int).tolist(),
                fx=int(ia.fx), fw=int(ia.fw), prob=a.prob(f, ys[pick]).tolist(),
                f=f.tolist(), w_float=a.w.tolist(), u_float=a.u.tolist())
