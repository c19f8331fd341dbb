"""ADA-GP tensor reorganization: one predictor sample per output channel.

Pure functions, no state.  Shapes (P = predictor input side, default 4):

conv layer, weight (C_out, C_in, k, k), output y (B, C_out, H, W)
    y --mean over B--> (C_out, H, W) --fit to P x P--> samples (C_out, 1, P, P)
    dW (C_out, C_in, k, k) --flatten per channel--> targets (C_out, C_in*k*k)

linear layer, weight (N_out, N_in), output y (B, N_out)
    y --mean over B--> m (N_out,)
    sample n = the P*P window of m centred on neuron n (index n sits at P*P//2,
    zero outside 0..N_out-1), reshaped row-major to (1, P, P)
    dW (N_out, N_in) --> targets (N_out, N_in)  (one row per output neuron)

Which tensor y is (:func:`predictor_input`): the layer's *output activation*, i.e.
ReLU(conv/linear output) for a layer followed by a ReLU and the raw output for the
last layer (the logits).  That is the tensor the engine's epilogue stores and the
next layer reads, so predictor_hw's reorganization unit, a tap on that store
stream, sees exactly the same values.

"fit to P x P": an H x W map with H, W multiples of P is average-pooled by
(H/P, W/P); a smaller map is zero-padded at the bottom/right.  Any other size is
an error (the hardware pools by integer factors only).

Scale: the shared predictor sees every layer, so its input is normalized per
layer by a power of two: ``x = R * 2**(f - 7)`` with ``f = choose_frac_bits(R, 8)``
(the scale the engine would give the 8-bit tensor R).  The quantized path uses
the integer ``quantize(R, f, 8)`` itself, which is the same number on the grid of
2**-7.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import numerics

IN_FRAC = 7  # the predictor's input is an 8-bit integer read as q * 2**-7


class ReorgError(ValueError):
    """A layer or tensor the reorganization cannot map."""


def fan_in(layer: nn.Module) -> int:
    """Number of weight-gradient values per output channel (C_in*k*k or N_in)."""
    if isinstance(layer, nn.Conv2d):
        c_in, kh, kw = layer.weight.shape[1:]
        return int(c_in * kh * kw)
    if isinstance(layer, nn.Linear):
        return int(layer.weight.shape[1])
    raise ReorgError(f"layer type {type(layer).__name__} is not supported (Conv2d or Linear only)")


def predictor_input(y: torch.Tensor, relu: bool) -> torch.Tensor:
    """The tensor a layer's predictor samples are built from: its output activation.

    ``y`` is the layer's conv/linear output (in quantized mode the requantized 8-bit
    value); ``relu`` says whether a ReLU follows the layer (adagp_engine.relu_after:
    every layer but the last).  Returns ReLU(y) or y, detached.

    Why post-ReLU: ADA-GP's predictor sees a layer's *output activations* (Janfaza et
    al.), and the hardware reorganization unit (predictor_hw/reorg.py) is a passive tap
    on the engine's output stream, which carries ReLU(y) for hidden layers (ReLU is in
    the epilogue).  Using the same tensor here makes the hardware reproduce model_sw's
    predictor inputs bit for bit.  ReLU of a quantized y stays on y's grid, so in
    quantized mode this is exactly the stored integer tensor.
    """
    y = y.detach()
    return torch.relu(y) if relu else y


def fit_map(m: torch.Tensor, p: int, name: str = "layer") -> torch.Tensor:
    """(C, H, W) -> (C, P, P): average-pool by an integer factor, or zero-pad."""
    if m.dim() != 3:
        raise ReorgError(f"{name}: expected a (C, H, W) map, got shape {tuple(m.shape)}")
    _, h, w = m.shape
    for size in (h, w):
        if size > p and size % p:
            raise ReorgError(f"{name}: map side {size} is larger than the predictor input {p} "
                             "and not a multiple of it")
    if h > p or w > p:
        fh, fw = max(h // p, 1), max(w // p, 1)
        m = torch.nn.functional.avg_pool2d(m.unsqueeze(0), (fh, fw)).squeeze(0)
        h, w = m.shape[1:]
    if h < p or w < p:
        m = torch.nn.functional.pad(m, (0, max(p - w, 0), 0, max(p - h, 0)))
    return m


def conv_samples(y: torch.Tensor, p: int, name: str = "conv") -> torch.Tensor:
    """Conv output (B, C_out, H, W) -> predictor samples (C_out, 1, P, P)."""
    if y.dim() != 4:
        raise ReorgError(f"{name}: conv output must be (B, C, H, W), got {tuple(y.shape)}")
    return fit_map(y.mean(0), p, name).unsqueeze(1)


def linear_samples(y: torch.Tensor, p: int, name: str = "linear") -> torch.Tensor:
    """Linear output (B, N_out) -> predictor samples (N_out, 1, P, P) (centred windows)."""
    if y.dim() != 2:
        raise ReorgError(f"{name}: linear output must be (B, N), got {tuple(y.shape)}")
    m = y.mean(0)
    n = m.shape[0]
    w = p * p
    half = w // 2
    padded = torch.nn.functional.pad(m, (half, w - half - 1))  # length n + w - 1
    # window of neuron i = padded[i : i + w]  (neuron i lands at position `half`)
    idx = torch.arange(n).unsqueeze(1) + torch.arange(w).unsqueeze(0)
    return padded[idx].reshape(n, 1, p, p)


def layer_samples(layer: nn.Module, y: torch.Tensor, p: int, name: str = "layer") -> torch.Tensor:
    """Dispatch on the layer type; returns (C_out, 1, P, P) raw (unnormalized) samples."""
    if isinstance(layer, nn.Conv2d):
        return conv_samples(y, p, name)
    if isinstance(layer, nn.Linear):
        return linear_samples(y, p, name)
    raise ReorgError(f"{name}: layer type {type(layer).__name__} is not supported")


def grad_targets(dw: torch.Tensor) -> torch.Tensor:
    """Weight gradient (C_out, ...) -> targets (C_out, fan_in), row c = channel c's slice."""
    return dw.reshape(dw.shape[0], -1)


def targets_to_grad(t: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :func:`grad_targets` (drops masked columns beyond fan_in)."""
    c_out = shape[0]
    k = 1
    for s in shape[1:]:
        k *= s
    return t[:c_out, :k].reshape(shape)


def input_frac(r: torch.Tensor) -> int:
    """Per-layer power-of-two scale of the raw samples (numerics.choose_frac_bits, 8 bits)."""
    return numerics.choose_frac_bits(r, 8)


def normalize_samples(r: torch.Tensor) -> torch.Tensor:
    """Float path: ``r * 2**(f - 7)`` (|x| < 1, same scale as the integer path)."""
    f = input_frac(r)
    return r * (2.0 ** (f - IN_FRAC))


def quantize_samples(r: torch.Tensor) -> torch.Tensor:
    """Integer path: int8 samples ``quantize(r, f, 8)`` (int64 tensor), read as q * 2**-7."""
    return numerics.quantize(r, input_frac(r), 8)


def normalize_targets(dw: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Targets divided by the layer's gradient RMS; returns (targets, rms)."""
    t = grad_targets(dw)
    rms = float(t.pow(2).mean().sqrt())
    if rms == 0.0:
        return torch.zeros_like(t), 0.0
    return t / rms, rms


# ---------------------------------------------------------------------------
# Integer golden of the hardware reorganization (predictor_hw/reorg.py)
# ---------------------------------------------------------------------------

def _log2_exact(n: int, what: str) -> int:
    if n < 1 or n & (n - 1):
        raise ReorgError(f"{what}={n} must be a power of two (the mean is a shift)")
    return n.bit_length() - 1


def pool_factors(h: int, w: int, p: int, name: str = "layer") -> tuple[int, int]:
    """(fh, fw) of :func:`fit_map` for an H x W map: integer pool factors (1 = pad)."""
    if h < 1 or w < 1:
        raise ReorgError(f"{name}: zero-size map {h}x{w}")
    for size in (h, w):
        if size > p and size % p:
            raise ReorgError(f"{name}: map side {size} is larger than the predictor input {p} "
                             "and not a multiple of it")
    return max(h // p, 1), max(w // p, 1)


def reorg_sums_int(y_int, kind: str, p: int, name: str = "layer"):
    """Exact integer sums behind the samples: (C_out, P, P) int64 and the count
    (batch x pool window) they must be divided by.  ``y_int`` is (B, C, H, W) for
    ``kind='conv'`` and (B, N) for ``kind='linear'``."""
    y = np.asarray(y_int, dtype=np.int64)
    if kind == "conv":
        if y.ndim != 4:
            raise ReorgError(f"{name}: conv output must be (B, C, H, W), got {y.shape}")
        b, c, h, w = y.shape
        fh, fw = pool_factors(h, w, p, name)
        s = y.sum(0)
        if fh > 1 or fw > 1:
            s = s.reshape(c, h // fh, fh, w // fw, fw).sum(axis=(2, 4))
        s = np.pad(s, ((0, 0), (0, p - s.shape[1]), (0, p - s.shape[2])))
        return s, b * fh * fw
    if kind == "linear":
        if y.ndim != 2:
            raise ReorgError(f"{name}: linear output must be (B, N), got {y.shape}")
        b, n = y.shape
        if n < 1:
            raise ReorgError(f"{name}: zero-size layer (N=0)")
        m = y.sum(0)
        win = p * p
        half = win // 2
        padded = np.pad(m, (half, win - half - 1))
        idx = np.arange(n)[:, None] + np.arange(win)[None, :]
        return padded[idx].reshape(n, p, p), b
    raise ReorgError(f"{name}: unknown layer kind {kind!r} (conv or linear)")


def reorg_samples_int(y_int, y_frac: int, kind: str, p: int, name: str = "layer"):
    """The reorganization in integers: (int8 samples (C_out, 1, P, P), input frac).

    ``y_int`` holds the layer output as the engine stores it (value ``y * 2**-y_frac``).
    Equal bit for bit to ``quantize_samples(layer_samples(layer, dequantize(y)))`` when
    the batch x pool-window count is a power of two (then every mean is exact in float32
    too); anything else raises.  The count becomes a shift: the sums S have scale
    ``2**-(y_frac + log2 count)``, the frac is numerics.choose_frac_bits_int of max |S|,
    and each sample value is S shifted (round half to even, saturated) to that frac.
    """
    s, count = reorg_sums_int(y_int, kind, p, name)
    e = y_frac + _log2_exact(count, f"{name}: batch x pool window")
    f = numerics.choose_frac_bits_int(int(np.abs(s).max()) if s.size else 0, e, 8)
    q = numerics.shift_round_saturate(s, f - e, 8)
    return q.reshape(s.shape[0], 1, p, p), f
