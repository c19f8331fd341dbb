"""ADA-GP gradient predictor: shared (masked) and per-layer, float and quantized.

Network (bias-free, like the engine):  input (N, 1, P, P)
    conv 1->C 3x3 pad 1  ->  ReLU  ->  avg-pool pool x pool  ->  flatten (C*(P/pool)^2)
    ->  fc -> K_max outputs.
The shared predictor's fc is sized for the largest fan-in of the model (K_max);
a layer with fan-in K < K_max uses outputs [0, K) and the rest are masked (not
computed by the hardware, not in the loss, not in the MAC count).  The per-layer
variant is the same network with K_max = that layer's fan-in.

Quantized version (``quant=True``): everything is 8-bit with power-of-two scales:
    x   int8, frac 7 (from adagp_reorg.quantize_samples)
    w1  int8, frac fw1 = choose_frac_bits(w1, 8)
    acc1 = conv(x, w1)                      int32, frac 7 + fw1
    h   = requantize(acc1, 7+fw1-fh, 8, relu=True)         int8, frac fh
    hp  = requantize(sum of each pool x pool window, log2(pool^2), 8)  int8, frac fh
    w2  int8, frac fw2
    acc2 = hp @ w2.T                        int32, frac fh + fw2
    out = requantize(acc2, fh+fw2-fo, 8)    int8, frac fo
``fh`` and ``fo`` are calibrated on each training (BP) step with choose_frac_bits
(capped so no shift is negative) and frozen for GP steps.  :func:`predictor_forward_int`
is that arithmetic on integer numpy arrays; the torch fake-quant forward is equal to
it bit for bit (tests/test_adagp_predictor.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import numerics
from .adagp_reorg import IN_FRAC

ACC_BITS = 32
OP_BITS = 8


class PredictorSizeError(ValueError):
    """A layer whose fan-in exceeds what the predictor was sized for."""


@dataclass(frozen=True)
class PredictorConfig:
    p: int = 4          # predictor input side (samples are 1 x P x P)
    channels: int = 8   # conv output channels
    pool: int = 2       # average pool after the conv (pool^2 must be a power of two)
    lr: float = 2e-3    # Adam learning rate of the predictor (float master weights)

    def __post_init__(self):
        if self.p % self.pool:
            raise ValueError(f"predictor input side p={self.p} is not a multiple of pool={self.pool}")
        if (self.pool * self.pool) & (self.pool * self.pool - 1):
            raise ValueError(f"pool={self.pool}: pool^2 must be a power of two (it is a shift)")

    @property
    def features(self) -> int:
        return self.channels * (self.p // self.pool) ** 2


def _fq_fixed(x: torch.Tensor, frac: int) -> torch.Tensor:
    """Fake-quantize to 8 bits at a given frac (numerics.fake_quant, STE)."""
    return numerics.fake_quant(x, OP_BITS, frac)


class GradPredictor(nn.Module):
    """One predictor network with output size ``k_max``."""

    def __init__(self, k_max: int, cfg: PredictorConfig = PredictorConfig(), quant: bool = False):
        super().__init__()
        if k_max < 1:
            raise ValueError(f"k_max={k_max}: the predictor needs at least one output")
        self.cfg = cfg
        self.k_max = int(k_max)
        self.quant = quant
        self.conv = nn.Conv2d(1, cfg.channels, 3, padding=1, bias=False)
        self.fc = nn.Linear(cfg.features, self.k_max, bias=False)
        nn.init.zeros_(self.fc.weight)  # predicts "no gradient" until trained
        # calibrated scales of the quantized path (frozen between training steps)
        self.frac_h: int | None = None
        self.frac_out: int | None = None

    # -- quantized helpers ---------------------------------------------------
    def weight_fracs(self) -> tuple[int, int]:
        return (numerics.choose_frac_bits(self.conv.weight, OP_BITS),
                numerics.choose_frac_bits(self.fc.weight, OP_BITS))

    def forward(self, x: torch.Tensor, calibrate: bool = False) -> torch.Tensor:
        """x: (N, 1, P, P) normalized samples (float path) or int8 values (quant path).

        Returns (N, k_max) predicted normalized gradients (real values).
        """
        cfg = self.cfg
        if not self.quant:
            h = torch.relu(self.conv(x))
            h = torch.nn.functional.avg_pool2d(h, cfg.pool)
            return self.fc(h.flatten(1))
        xr = x.to(torch.float32) * (2.0 ** -IN_FRAC)
        fw1, fw2 = self.weight_fracs()
        w1 = _fq_fixed(self.conv.weight, fw1)
        w2 = _fq_fixed(self.fc.weight, fw2)
        h = torch.nn.functional.conv2d(xr, w1, padding=1)
        if calibrate or self.frac_h is None:
            self.frac_h = min(numerics.choose_frac_bits(h, OP_BITS), IN_FRAC + fw1)
        fh = min(self.frac_h, IN_FRAC + fw1)
        h = torch.relu(_fq_fixed(h, fh))
        h = _fq_fixed(torch.nn.functional.avg_pool2d(h, cfg.pool), fh)
        out = torch.nn.functional.linear(h.flatten(1), w2)
        if calibrate or self.frac_out is None:
            self.frac_out = min(numerics.choose_frac_bits(out, OP_BITS), fh + fw2)
        fo = min(self.frac_out, fh + fw2)
        return _fq_fixed(out, fo)

    def int_params(self) -> dict:
        """Integer weights and shifts for :func:`predictor_forward_int` (quant path)."""
        if self.frac_h is None or self.frac_out is None:
            raise RuntimeError("the quantized predictor has not been calibrated (run a training step)")
        fw1, fw2 = self.weight_fracs()
        fh = min(self.frac_h, IN_FRAC + fw1)
        fo = min(self.frac_out, fh + fw2)
        return dict(
            w1=numerics.quantize(self.conv.weight, fw1, OP_BITS).numpy(),
            w2=numerics.quantize(self.fc.weight, fw2, OP_BITS).numpy(),
            shift1=numerics.requant_shift(IN_FRAC, fw1, fh),
            shift2=numerics.requant_shift(fh, fw2, fo),
            pool=self.cfg.pool, frac_out=fo)

    # -- cost model ------------------------------------------------------------
    def forward_macs(self, n: int, k: int) -> int:
        """MACs of one forward over n samples with k unmasked outputs."""
        cfg = self.cfg
        return n * (cfg.channels * cfg.p * cfg.p * 9 + cfg.features * k)

    def train_macs(self, n: int, k: int) -> int:
        """Forward + backward (fc: data and weight grads; conv: weight grad only)."""
        cfg = self.cfg
        conv = n * cfg.channels * cfg.p * cfg.p * 9
        fc = n * cfg.features * k
        return 2 * conv + 3 * fc


def predictor_forward_int(x, w1, w2, shift1: int, shift2: int, pool: int = 2, k: int | None = None):
    """The quantized predictor on integer numpy arrays (what predictor_hw must match).

    x: (N, 1, P, P) int8 values; w1: (C, 1, 3, 3) int8; w2: (K_max, C*(P/pool)^2) int8.
    Returns (N, K_max) int8 outputs; columns >= k (if given) are masked to 0.
    """
    x = numerics.check_fits(np.asarray(x, dtype=np.int64), OP_BITS, "predictor input")
    w1 = numerics.check_fits(np.asarray(w1, dtype=np.int64), OP_BITS, "predictor conv weight")
    w2 = numerics.check_fits(np.asarray(w2, dtype=np.int64), OP_BITS, "predictor fc weight")
    n, cin, p, p2 = x.shape
    if cin != 1 or p != p2:
        raise ValueError(f"predictor input must be (N, 1, P, P), got {x.shape}")
    if p % pool:
        raise ValueError(f"input side {p} is not a multiple of pool {pool}")
    c = w1.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    # conv as 9 shifted integer products accumulated exactly; then the 32-bit check
    acc1 = np.zeros((n, c, p, p), dtype=np.int64)
    for di in range(3):
        for dj in range(3):
            acc1 += xp[:, 0:1, di:di + p, dj:dj + p] * w1[:, 0, di, dj].reshape(1, c, 1, 1)
    numerics.check_fits(acc1, ACC_BITS, "predictor conv accumulator")
    h, _ = numerics.requantize(acc1, shift1, OP_BITS, relu=True)
    q = p // pool
    s = h.reshape(n, c, q, pool, q, pool).sum(axis=(3, 5))
    pshift = (pool * pool).bit_length() - 1
    hp, _ = numerics.requantize(s, pshift, OP_BITS)
    flat = hp.reshape(n, c * q * q)
    acc2 = numerics.gemm_int(flat, w2.T, ACC_BITS)
    out, _ = numerics.requantize(acc2, shift2, OP_BITS)
    if k is not None:
        if k > w2.shape[0]:
            raise PredictorSizeError(f"k={k} exceeds the predictor's {w2.shape[0]} outputs")
        out = out.copy()
        out[:, k:] = 0
    return out


class PredictorBank:
    """Shared predictor (one net, masked outputs) or one net per layer; plus its trainer."""

    def __init__(self, fan_ins: dict[str, int], mode: str = "shared", cfg: PredictorConfig = PredictorConfig(),
                 quant: bool = False, k_max: int | None = None, seed: int = 0):
        if mode not in ("shared", "per_layer"):
            raise ValueError(f"unknown predictor mode {mode!r}; choose shared or per_layer")
        self.mode, self.cfg, self.quant = mode, cfg, quant
        self.fan_ins = dict(fan_ins)
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(10_000 + seed)
            if mode == "shared":
                self.k_max = int(k_max if k_max is not None else max(fan_ins.values()))
                net = GradPredictor(self.k_max, cfg, quant)
                self.nets = {name: net for name in fan_ins}
                self._params = list(net.parameters())
            else:
                self.k_max = None
                self.nets = {name: GradPredictor(k, cfg, quant) for name, k in fan_ins.items()}
                self._params = [p for net in self.nets.values() for p in net.parameters()]
        for name, k in self.fan_ins.items():
            self.check_size(name, k)
        self.opt = torch.optim.Adam(self._params, lr=cfg.lr)

    def check_size(self, name: str, k: int):
        net = self.nets.get(name)
        if net is None:
            raise PredictorSizeError(f"layer {name!r} has no predictor")
        if k > net.k_max:
            raise PredictorSizeError(
                f"layer {name!r} has fan-in {k} but the predictor was sized for {net.k_max} outputs")

    def predict(self, name: str, x: torch.Tensor, calibrate: bool = False) -> torch.Tensor:
        """(C_out, 1, P, P) samples -> (C_out, K_layer) predicted normalized gradient."""
        k = self.fan_ins[name]
        self.check_size(name, k)
        return self.nets[name](x, calibrate=calibrate)[:, :k]  # mask: keep [0, k)

    def train_step(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One optimizer step on {layer: (samples, normalized targets)}.

        Loss = sum over layers of the MSE over that layer's unmasked outputs (each
        layer weighs the same whatever its size).  Returns the predictions made
        *before* the step (detached), used to measure predictor quality honestly.
        """
        self.opt.zero_grad(set_to_none=True)
        for name, (x, _) in batch.items():
            self.check_size(name, self.fan_ins[name])
        if self.mode == "shared":
            # one pass over every layer's samples (the quantized scales are
            # calibrated on all of them together), then split per layer and mask
            names = list(batch)
            out = next(iter(self.nets.values()))(torch.cat([batch[n][0] for n in names]), calibrate=True)
            sizes = [batch[n][0].shape[0] for n in names]
            outs = dict(zip(names, torch.split(out, sizes)))
            preds = {n: outs[n][:, :self.fan_ins[n]] for n in names}
        else:
            preds = {n: self.nets[n](x, calibrate=True)[:, :self.fan_ins[n]] for n, (x, _) in batch.items()}
        loss = sum(torch.mean((preds[n] - t) ** 2) for n, (_, t) in batch.items())
        loss.backward()
        self.opt.step()
        self.last_loss = float(loss.detach())
        return {n: p.detach() for n, p in preds.items()}

    def forward_macs(self) -> int:
        return sum(self.nets[n].forward_macs(self._n_out[n], k) for n, k in self.fan_ins.items())

    def train_macs(self) -> int:
        return sum(self.nets[n].train_macs(self._n_out[n], k) for n, k in self.fan_ins.items())

    def set_out_channels(self, n_out: dict[str, int]):
        self._n_out = dict(n_out)
