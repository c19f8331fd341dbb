"""Number formats, defined once.

Every quantization, rounding and saturation rule of the project lives here and is
used by the RTL generator (widths), the golden model, the PyTorch reference and the
tests alike.  Functions work on numpy integer arrays and on torch integer tensors
with the same code (only operators, ``where`` and ``clip`` are used).

Formats
-------
* Operands are signed two's-complement integers of ``op_bits`` (8 or 16).
* A tensor's real value is ``q * 2**-frac`` with one power-of-two scale per tensor
  (``frac`` may be negative).
* Products are exact; sums accumulate exactly in ``acc_bits`` (32 by default).  A
  configuration is only built if no reachable K can overflow (see
  :func:`acc_bits_needed`).
* Requantization from the accumulator to an operand format is an arithmetic right
  shift by ``shift`` bits with round-half-to-even, then saturation to the signed
  range of the output width.  ReLU (if asked) is applied after requantization and
  the ReLU mask is ``out > 0`` of the requantized value: that is the derivative
  PyTorch's ReLU uses on the fake-quantized tensor.
"""
from __future__ import annotations

import math

import numpy as np

try:  # torch is optional for the pure-numpy golden model
    import torch
except ImportError:  # pragma: no cover
    torch = None


SUPPORTED_OP_BITS = (4, 8, 12, 16)


class NumericsError(ValueError):
    """A value or format that the number system cannot represent."""


def int_range(bits: int) -> tuple[int, int]:
    """Inclusive (lo, hi) of a signed two's-complement integer of ``bits`` bits."""
    if bits < 2:
        raise NumericsError(f"bits={bits}: a signed format needs at least 2 bits")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def acc_bits_needed(op_bits: int, k: int) -> int:
    """Smallest signed accumulator width that holds any sum of ``k`` products.

    The worst product is (-2**(b-1))**2 = 2**(2b-2); k of them need
    2b-2 + ceil(log2 k) magnitude bits plus a sign bit.
    """
    if k < 1:
        raise NumericsError(f"k={k}: a dot product needs at least one term")
    worst = k * (1 << (2 * op_bits - 2))
    return worst.bit_length() + 1


def max_k(op_bits: int, acc_bits: int) -> int:
    """Largest K whose worst-case dot product still fits ``acc_bits``."""
    return ((1 << (acc_bits - 1)) - 1) // (1 << (2 * op_bits - 2))


def _is_torch(x) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def _where(c, a, b):
    return torch.where(c, a, b) if _is_torch(c) else np.where(c, a, b)


def _as_int64(x):
    if _is_torch(x):
        return x.to(torch.int64)
    return np.asarray(x, dtype=np.int64)


def saturate(x, bits: int):
    """Clamp integers into the signed range of ``bits`` bits."""
    lo, hi = int_range(bits)
    x = _as_int64(x)
    return torch.clamp(x, lo, hi) if _is_torch(x) else np.clip(x, lo, hi)


def round_shift_rne(x, shift: int):
    """``x / 2**shift`` rounded half to even, for integer ``x`` and ``shift >= 0``.

    This is exactly what the RTL epilogue computes: floor shift, then add one when
    the dropped bits exceed half, or equal half and the kept value is odd.
    """
    if shift < 0:
        raise NumericsError(f"shift={shift}: requantization only shifts right")
    x = _as_int64(x)
    if shift == 0:
        return x
    if shift >= 64:
        # |x| <= 2**63 <= 2**(shift-1): every int64 rounds to 0 (the tie -2**63 / 2**64 goes to
        # the even 0); and int64 shifts by 64 or more are not defined (numpy takes them mod 64)
        return x * 0
    q = x >> shift
    rem = x - (q << shift)
    half = 1 << (shift - 1)
    round_up = (rem > half) | ((rem == half) & ((q & 1) == 1))
    return q + _where(round_up, 1, 0)


def requantize(acc, shift: int, out_bits: int, relu: bool = False):
    """Accumulator values -> output format.  Returns ``(out, mask)``.

    ``mask`` is 1 where the (requantized) output is positive, the bit the engine
    writes beside a ReLU output; it is computed whether or not ``relu`` is set.
    """
    out = saturate(round_shift_rne(acc, shift), out_bits)
    mask = out > 0
    if relu:
        out = _where(mask, out, 0)
    return out, mask


def check_fits(x, bits: int, what: str):
    """Raise a clear error if any integer of ``x`` is outside ``bits`` bits."""
    lo, hi = int_range(bits)
    x = _as_int64(x)
    if x.numel() if _is_torch(x) else x.size:
        mn, mx = int(x.min()), int(x.max())
        if mn < lo or mx > hi:
            raise NumericsError(f"{what}: values span [{mn}, {mx}], outside the {bits}-bit range [{lo}, {hi}]")
    return x


# ---------------------------------------------------------------------------
# Real <-> integer (power-of-two per-tensor scales)
# ---------------------------------------------------------------------------

def choose_frac_bits(x, bits: int, max_frac: int = 24) -> int:
    """Largest ``frac`` such that ``round(x * 2**frac)`` fits ``bits`` bits.

    A tensor of zeros gets ``max_frac``.  Non-finite values are an error.
    """
    if _is_torch(x):
        if not bool(torch.isfinite(x).all()):
            raise NumericsError("cannot choose a scale for a tensor with NaN or Inf")
        amax = float(x.detach().abs().max()) if x.numel() else 0.0
    else:
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise NumericsError("cannot choose a scale for a tensor with NaN or Inf")
        amax = float(np.abs(x).max()) if x.size else 0.0
    if amax == 0.0:
        return max_frac
    _, hi = int_range(bits)
    # amax * 2**frac <= hi + 0.5 (values that round to hi are fine)
    frac = math.floor(math.log2((hi + 0.5) / amax))
    while amax * 2.0 ** frac >= hi + 0.5:
        frac -= 1
    return min(frac, max_frac)


def quantize(x, frac: int, bits: int):
    """Real -> signed integer: ``sat(round_half_even(x * 2**frac))``."""
    if _is_torch(x):
        q = torch.round(x.detach().to(torch.float64) * (2.0 ** frac)).to(torch.int64)
    else:
        q = np.round(np.asarray(x, dtype=np.float64) * (2.0 ** frac)).astype(np.int64)
    return saturate(q, bits)


def dequantize(q, frac: int):
    """Signed integer -> real (float32 for torch, float64 for numpy)."""
    if _is_torch(q):
        return q.to(torch.float32) * (2.0 ** -frac)
    return np.asarray(q, dtype=np.float64) * (2.0 ** -frac)


def fake_quant(x, bits: int, frac: int | None = None):
    """Quantize-dequantize a torch tensor with a straight-through gradient.

    The forward value is exactly what the engine holds; the backward passes the
    gradient through unchanged (the standard STE).  ``frac`` defaults to the
    per-tensor scale from :func:`choose_frac_bits`.
    """
    if frac is None:
        frac = choose_frac_bits(x, bits)
    q = dequantize(quantize(x, frac, bits), frac).to(x.dtype)
    return x + (q - x).detach()


def requant_shift(frac_a: int, frac_b: int, frac_out: int) -> int:
    """Shift that takes an accumulator of scale 2**-(fa+fb) to scale 2**-fo."""
    shift = frac_a + frac_b - frac_out
    if shift < 0:
        raise NumericsError(
            f"output scale 2**-{frac_out} is finer than the product scale 2**-{frac_a + frac_b}: "
            "the engine only shifts right")
    return shift


# ---------------------------------------------------------------------------
# Golden integer GEMM (the arithmetic of the MAC array)
# ---------------------------------------------------------------------------

def gemm_int(a, b, acc_bits: int, c=None):
    """Exact integer GEMM ``a @ b (+ c)`` with the accumulator-overflow check.

    Any partial sum outside ``acc_bits`` raises (the hardware wraps, which would
    be a silent error): since all terms are exact, checking the bound on the sum
    of absolute values proves no partial sum can leave the range.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    out = a @ b
    bound = np.abs(a) @ np.abs(b)
    if c is not None:
        c = np.asarray(c, dtype=np.int64)
        out = out + c
        bound = bound + np.abs(c)
    lo, hi = int_range(acc_bits)
    if bound.size and int(bound.max()) > hi:
        raise NumericsError(f"accumulator overflow risk: a partial sum can reach {int(bound.max())}, "
                            f"beyond the {acc_bits}-bit accumulator")
    return out


# ---------------------------------------------------------------------------
# Integer-only scale choice and shifts (tensor reorganization, weight update)
# ---------------------------------------------------------------------------

def choose_frac_bits_int(amax: int, exp: int, bits: int, max_frac: int = 24) -> int:
    """:func:`choose_frac_bits` for a tensor whose values are integers ``S * 2**-exp``
    with ``max |S| = amax``, in integer arithmetic only (what the hardware computes).

    Largest ``frac`` with ``amax * 2**(frac - exp) < hi + 0.5``, capped at ``max_frac``;
    a zero tensor gets ``max_frac``.  Equal to the float rule for every such tensor
    (tests/test_reorg.py checks it exhaustively on small ``amax``).
    """
    amax = int(amax)
    if amax < 0:
        raise NumericsError(f"amax={amax} must be >= 0")
    if amax == 0:
        return max_frac
    _, hi = int_range(bits)
    g = bits - 1 - amax.bit_length()   # amax * 2**g in [2**(bits-2), 2**(bits-1))

    def too_big(g):                    # 2 * amax * 2**g >= 2*hi + 1, exactly
        return (amax << (g + 1) if g + 1 >= 0 else amax) >= ((2 * hi + 1) << max(0, -(g + 1)))
    while too_big(g):
        g -= 1
    return min(g + exp, max_frac)


def shift_round_saturate(x, g: int, bits: int):
    """``sat(round_half_even(x * 2**g))`` for integers ``x`` and any integer ``g``:
    a left shift (exact) for ``g >= 0``, :func:`round_shift_rne` for ``g < 0``."""
    x = _as_int64(x)
    if g >= 0:
        return saturate(x << g, bits)
    return saturate(round_shift_rne(x, -g), bits)


def shift_round(x, g: int):
    """``round_half_even(x * 2**g)`` without saturation (exact left shift for g >= 0)."""
    x = _as_int64(x)
    return x << g if g >= 0 else round_shift_rne(x, -g)


def sgd_update_int(w, g, g_shift: int, w_bits: int):
    """The integer SGD step of the weight-update unit (predictor_hw/update.py):
    ``w' = sat_{w_bits}(w - round_half_even(g * 2**g_shift))``.

    ``w`` is a weight tensor with frac ``fw``, ``g`` a gradient with frac ``fg``; with a
    power-of-two learning rate ``2**lr_log2`` (and, for a predicted normalized gradient,
    the layer's power-of-two scale ``2**s``), ``g_shift = fw + lr_log2 (+ s) - fg`` makes
    the subtracted term ``lr * g`` on the weight's grid, rounded half to even.

    A left shift past 40 is computed as ``sign(g) * 2**40``: for any nonzero ``g`` the
    exact term exceeds every ``w`` of at most 32 bits by more than the saturation range,
    so the result is the same, and int64 does not overflow.
    """
    if w_bits > 32:
        raise NumericsError(f"sgd_update_int: w_bits={w_bits} > 32")
    if g_shift > 40:
        delta = np.sign(_as_int64(g)) << 40
    else:
        delta = shift_round(g, g_shift)
    return saturate(_as_int64(w) - delta, w_bits)
