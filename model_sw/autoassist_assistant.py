"""AutoAssist's Assistant: features, labels, logistic regression, shrink rule, integer inference.

The Assistant predicts, per training instance, the probability ``p`` that the Boss's
loss on it is "high" (above the running mean of the Boss's batch losses):

    p = sigmoid(w . f(x) + u[y])

with ``f(x)`` a feature vector (see the two feature sets below) and ``u[y]`` a
per-class bias.  It is trained by plain SGD (official code: lr 0.01, L2 1e-3) on
the losses the Boss reports back; the label of an instance is
``loss_i > EMA(batch mean loss)`` (:class:`LossEMA`).

Shrink rule (``base_prob`` = 0.3 for images in the official code): draw
``u ~ U(0, 1)``; keep the instance if ``u < base_prob``, otherwise keep it if
``(u - base_prob) / (1 - base_prob) < p``.  Hence
``P(keep) = base_prob + (1 - base_prob) * p``.

Feature sets
------------
``pixels``  the flattened input (64 values in [0, 1] for digits): the official one.
``loss``    3 values from the Boss's last look at the instance: its loss (clipped to
            [0, 8]), its margin ``z_y - max_{j != y} z_j`` / 4 (clipped to [-2, 2]) and
            an "unseen" flag (1 until the Boss has trained on it once).  Much cheaper
            (3 MACs instead of 64 per decision); it needs a per-instance table of 2
            numbers that the Boss's reports keep up to date.

Integer inference (for the predictor MAC array; see docs/autoassist.md)
-----------------------------------------------------------------------
:func:`assistant_logit_int` is the whole inference in integers: int8 features
(per-tensor power-of-two scale ``2**-fx``), int8 weights (``2**-fw``), one int32
dot product per instance plus the class bias ``u_int[y]`` held as an int32 at the
accumulator's scale ``2**-(fx + fw)``.  The result is the int32 logit at scale
``2**-(fx + fw)``.  All scales come from :mod:`model_sw.numerics`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import numerics

FEATURE_SETS = ("pixels", "loss")
OP_BITS = 8       # features and weights
ACC_BITS = 32     # accumulator and class bias


def check_base_prob(base_prob) -> float:
    """``base_prob`` must be a real number in [0, 1]; anything else is a ValueError naming it."""
    ok = isinstance(base_prob, (int, float, np.floating, np.integer)) and not isinstance(base_prob, bool)
    if not ok or not math.isfinite(float(base_prob)) or not 0.0 <= float(base_prob) <= 1.0:
        raise ValueError(f"base_prob={base_prob!r} is outside [0, 1]: it is the probability of keeping "
                         "an instance regardless of the Assistant")
    return float(base_prob)


def shrink_keep(p, u, base_prob: float) -> np.ndarray:
    """The shrink rule: boolean keep mask for probabilities ``p`` and uniform draws ``u``."""
    base_prob = check_base_prob(base_prob)
    p = np.asarray(p, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    keep = u < base_prob
    if base_prob < 1.0:
        keep = keep | ((u - base_prob) / (1.0 - base_prob) < p)
    return keep


def keep_probability(p, base_prob: float):
    """Expected keep rate of the shrink rule: ``base_prob + (1 - base_prob) * p``."""
    base_prob = check_base_prob(base_prob)
    return base_prob + (1.0 - base_prob) * np.asarray(p, dtype=np.float64)


@dataclass
class LossEMA:
    """Running mean of the Boss's batch losses: ``m <- decay * m + (1 - decay) * batch_mean``.

    The first batch sets ``m``.  ``update`` folds a batch in and returns the labels
    ``loss_i > m`` of that batch, ``m`` already including it (our choice; the
    official code leaves the order implicit).
    """
    decay: float = 0.75
    value: float | None = None

    def __post_init__(self):
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"EMA decay={self.decay} must be in [0, 1)")

    def update(self, losses) -> np.ndarray:
        losses = np.asarray(losses, dtype=np.float64)
        if losses.size == 0:
            return np.zeros(0, dtype=bool)
        m = float(losses.mean())
        self.value = m if self.value is None else self.decay * self.value + (1.0 - self.decay) * m
        return losses > self.value


def sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


class Assistant:
    """Logistic regression ``p = sigmoid(w . f + u[y])`` trained by SGD with L2."""

    def __init__(self, n_features: int, n_classes: int = 10, lr: float = 0.01, l2: float = 1e-3):
        if n_features < 1 or n_classes < 1:
            raise ValueError(f"n_features={n_features}, n_classes={n_classes} must be >= 1")
        if not (lr > 0 and math.isfinite(lr)) or not (l2 >= 0 and math.isfinite(l2)):
            raise ValueError(f"lr={lr} must be > 0 and l2={l2} >= 0")
        self.w = np.zeros(n_features)
        self.u = np.zeros(n_classes)
        self.lr, self.l2 = lr, l2
        self.updates = 0

    def logit(self, f, y) -> np.ndarray:
        return np.asarray(f, dtype=np.float64) @ self.w + self.u[np.asarray(y)]

    def prob(self, f, y) -> np.ndarray:
        return sigmoid(self.logit(f, y))

    def train_step(self, f, y, labels) -> float:
        """One SGD step on the mean logistic loss of the batch (+ l2/2 * |params|^2)."""
        f = np.asarray(f, dtype=np.float64)
        y = np.asarray(y)
        t = np.asarray(labels, dtype=np.float64)
        n = len(t)
        if n == 0:
            return 0.0
        p = self.prob(f, y)
        g = (p - t) / n
        gw = f.T @ g + self.l2 * self.w
        gu = np.bincount(y, weights=g, minlength=len(self.u)) + self.l2 * self.u
        self.w -= self.lr * gw
        self.u -= self.lr * gu
        self.updates += 1
        eps = 1e-12
        return float(-np.mean(t * np.log(p + eps) + (1 - t) * np.log(1 - p + eps)))

    def decide_macs(self) -> int:
        """MACs of one decision: the dot product (the class bias is an add)."""
        return int(self.w.size)

    def train_macs(self) -> int:
        """MACs to train on one instance: forward dot product + weight-gradient outer product."""
        return 2 * int(self.w.size)


class ConstantAssistant(Assistant):
    """Control: p is a constant (the shrink rule becomes uniform random sampling)."""

    def __init__(self, p: float, n_classes: int = 10):
        super().__init__(1, n_classes)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"constant p={p} must be in [0, 1]")
        self.p = p

    def prob(self, f, y):
        return np.full(len(np.asarray(y)), self.p)

    def train_step(self, f, y, labels) -> float:
        return 0.0

    def decide_macs(self) -> int:
        return 0

    def train_macs(self) -> int:
        return 0


class PixelFeatures:
    """The flattened input: static, nothing to update."""
    name = "pixels"

    def __init__(self, x_train):
        self.x = np.asarray(x_train, dtype=np.float64).reshape(len(x_train), -1)
        self.n = self.x.shape[1]

    def __call__(self, idx) -> np.ndarray:
        return self.x[np.asarray(idx)]

    def update(self, idx, losses, margins):
        pass


class LossFeatures:
    """[last loss clipped to [0, 8], last margin / 4 clipped to [-2, 2], unseen flag] per instance."""
    name = "loss"
    n = 3

    def __init__(self, n_train: int):
        self.loss = np.zeros(n_train)
        self.margin = np.zeros(n_train)
        self.unseen = np.ones(n_train)

    def __call__(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        return np.stack([self.loss[idx], self.margin[idx], self.unseen[idx]], axis=1)

    def update(self, idx, losses, margins):
        idx = np.asarray(idx)
        self.loss[idx] = np.clip(np.asarray(losses, dtype=np.float64), 0.0, 8.0)
        self.margin[idx] = np.clip(np.asarray(margins, dtype=np.float64) / 4.0, -2.0, 2.0)
        self.unseen[idx] = 0.0


def make_features(name: str, x_train):
    if name == "pixels":
        return PixelFeatures(x_train)
    if name == "loss":
        return LossFeatures(len(x_train))
    raise ValueError(f"unknown feature set {name!r}; choose one of {', '.join(FEATURE_SETS)}")


# ---------------------------------------------------------------------------
# Integer inference
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class IntAssistant:
    """The Assistant's parameters in the MAC array's formats.

    ``w_int`` int8 at scale ``2**-fw``; ``u_int`` int32 at the accumulator's scale
    ``2**-(fx + fw)`` (the features' ``fx`` is fixed when quantizing, e.g. 6 for
    digits pixels k/16 in [0, 1], which are then exact).
    """
    w_int: np.ndarray
    u_int: np.ndarray
    fx: int
    fw: int

    @property
    def acc_frac(self) -> int:
        return self.fx + self.fw


def quantize_features(f, fx: int | None = None) -> tuple[np.ndarray, int]:
    """Features -> int8 with a per-tensor power-of-two scale (numerics.choose_frac_bits)."""
    if fx is None:
        fx = numerics.choose_frac_bits(f, OP_BITS)
    return np.asarray(numerics.quantize(f, fx, OP_BITS)), fx


def quantize_assistant(a: Assistant, fx: int) -> IntAssistant:
    fw = numerics.choose_frac_bits(a.w, OP_BITS)
    w_int = np.asarray(numerics.quantize(a.w, fw, OP_BITS))
    u_int = np.asarray(numerics.quantize(a.u, fx + fw, ACC_BITS))
    return IntAssistant(w_int, u_int, fx, fw)


def assistant_logit_int(x_int, w_int, u_int, y, acc_bits: int = ACC_BITS) -> np.ndarray:
    """Integer Assistant logit: ``z[n] = sum_k x_int[n, k] * w_int[k] + u_int[y[n]]``.

    x_int: (N, K) int8 features, w_int: (K,) int8 weights, u_int: (classes,) class
    biases at the accumulator scale, y: (N,) labels.  Exact integer arithmetic
    (numerics.gemm_int); raises numerics.NumericsError if an operand leaves its
    format or any partial sum could overflow ``acc_bits``.  Returns int64 values
    that fit ``acc_bits``; the real logit is ``z * 2**-(fx + fw)``.
    """
    x_int = numerics.check_fits(np.asarray(x_int), OP_BITS, "assistant features")
    w_int = numerics.check_fits(np.asarray(w_int), OP_BITS, "assistant weights")
    u_int = numerics.check_fits(np.asarray(u_int), acc_bits, "assistant class bias")
    y = np.asarray(y, dtype=np.int64)
    if x_int.ndim != 2 or w_int.ndim != 1 or x_int.shape[1] != w_int.shape[0] or y.shape != (x_int.shape[0],):
        raise ValueError(f"shapes: x_int {x_int.shape}, w_int {w_int.shape}, y {y.shape}: "
                         "need (N, K), (K,), (N,)")
    if y.size and (y.min() < 0 or y.max() >= len(u_int)):
        raise ValueError(f"labels span [{y.min()}, {y.max()}], outside the {len(u_int)} class biases")
    z = numerics.gemm_int(x_int, w_int[:, None], acc_bits, c=u_int[y][:, None])[:, 0]
    return z


def logit_int_error_bound(f, ia: IntAssistant, a: Assistant) -> np.ndarray:
    """Per-instance bound on |z_int * 2**-(fx+fw) - (w . f + u[y])| (no saturation).

    x.w - xq.wq = x.(w - wq) + (x - xq).wq, so the error is at most
    sum_k |x_k| * 2**-(fw+1) + |wq_k| * 2**-(fx+1), plus 2**-(fx+fw+1) for the bias.
    """
    f = np.asarray(f, dtype=np.float64)
    wq = numerics.dequantize(ia.w_int, ia.fw)
    return (np.abs(f).sum(1) * 2.0 ** -(ia.fw + 1) + np.abs(wq).sum() * 2.0 ** -(ia.fx + 1)
            + 2.0 ** -(ia.acc_frac + 1))
