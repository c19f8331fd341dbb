"""ADA-GP predictor side: captures from model_sw runs and the ``bench predictor`` CLI.

:func:`capture_digits` trains the digits CNN with model_sw's quantized ADA-GP
(``adagp-q``) for a few BP steps (so the predictor is trained and its quantized
scales calibrated), then records, for the next batch, everything a GP step of the
hardware needs and every reference it must match: per layer the engine-format
input/weight/output integers and their fracs, the pre- and post-ReLU outputs, and
the predictor's integer parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from model_sw import adagp_engine as eng
from model_sw import adagp_reorg as reorg
from model_sw import numerics


@dataclass
class CapturedLayer:
    name: str
    kind: str                 # conv | linear
    module: nn.Module
    x_int: np.ndarray         # layer input as the engine stores it (post-ReLU of the previous layer)
    x_frac: int
    w_int: np.ndarray         # int8 operand weights (engine format)
    w_frac: int
    y_pre: np.ndarray         # int8 output before ReLU, (B, C, H, W) or (B, N)
    y_post: np.ndarray        # after ReLU (what the engine's epilogue stores for a hidden layer)
    y_frac: int
    relu: bool                # the engine applies ReLU in this layer's epilogue
    fan_in: int
    gp_scale_log2: int | None  # GP de-normalization 2**s (model_sw Trainer._gp_scale); None: no scale yet
    w_master: np.ndarray = None   # 16-bit master weights and their frac
    w_master_frac: int = 0


@dataclass
class Capture:
    layers: list
    pred: dict                # predictor int_params (w1, w2, shift1, shift2, pool, frac_out)
    lr_log2: int
    batch: int
    extra: dict = field(default_factory=dict)


def capture_digits(steps: int = 6, batch: int = 32, seed: int = 0) -> Capture:
    """A model_sw adagp-q run on digits: ``steps`` BP steps, then a capture of the next batch."""
    from model_sw.adagp import Trainer, TrainConfig
    from model_sw.data import load_digits_split

    torch.set_num_threads(1)
    data = load_digits_split()
    cfg = TrainConfig(model="cnn", epochs=1, batch=batch)
    tr = Trainer(data, "adagp-q", seed, cfg)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(data.x_train.shape[0], generator=gen)
    for s in range(steps):
        idx = perm[s * batch:(s + 1) * batch]
        tr.bp_step(data.x_train[idx], data.y_train[idx], s)
    idx = perm[steps * batch:(steps + 1) * batch]
    xb = data.x_train[idx]

    outs, ins = {}, {}
    seq = eng.layers(tr.model)
    names = [n for n, _ in seq]

    def keep(name, layer, y):
        outs[name] = y.detach().clone()

    # the inputs each layer sees: hook the functional op through on_output of the previous
    with torch.no_grad():
        eng.forward(tr.model, xb, True, steps, keep)
    layers = []
    x = xb
    for i, (name, layer) in enumerate(seq):
        kind = "conv" if isinstance(layer, nn.Conv2d) else "linear"
        if kind == "linear" and x.dim() > 2:
            x = x.flatten(1)
        fx = numerics.choose_frac_bits(x, 8)
        fw = numerics.choose_frac_bits(layer.weight, 8)
        y = outs[name]
        fy = numerics.choose_frac_bits(y, 8)
        y_pre = numerics.quantize(y, fy, 8).numpy()
        last = i == len(seq) - 1
        s = tr._gp_scale(name)
        fm = numerics.choose_frac_bits(layer.weight, 16)
        layers.append(CapturedLayer(
            name=name, kind=kind, module=layer,
            x_int=numerics.quantize(x, fx, 8).numpy(), x_frac=fx,
            w_int=numerics.quantize(layer.weight, fw, 8).numpy(), w_frac=fw,
            y_pre=y_pre, y_post=y_pre if last else np.maximum(y_pre, 0), y_frac=fy, relu=not last,
            fan_in=reorg.fan_in(layer),
            gp_scale_log2=None if s == 0.0 else int(round(math.log2(s))),
            w_master=numerics.quantize(layer.weight, fm, 16).numpy(), w_master_frac=fm))
        x = numerics.dequantize(torch.from_numpy(layers[-1].y_post), fy)
    net = next(iter(tr.bank.nets.values()))
    return Capture(layers=layers, pred=net.int_params(), lr_log2=int(round(math.log2(tr.lr))),
                   batch=batch, extra={"names": names, "steps": steps, "seed": seed})
