"""The main model's training arithmetic, float32 or the engine's (fake-quantized).

Layer walk: the models of model_sw.models are a chain of Conv2d/Linear layers
with a ReLU after every layer but the last, and a flatten before the first Linear
that gets a 4-D input.  :func:`layers` lists them in order and :func:`forward`
runs the chain one layer at a time, calling ``on_output(name, y)`` right after
each layer (the hook that ADA-GP's GP step uses to update a layer right after its
forward); a test checks it equals ``model(x)``.

Quantized mode ("the engine's arithmetic"), all through model_sw.numerics:
* operands are 8-bit with a per-tensor power-of-two scale (choose_frac_bits):
  the layer input x, the weight W and the layer output y (the requantized
  accumulator) in the forward; the output error dL/dy in the backward;
* the conv/linear runs in float32 on those integer grids (the engine's 32-bit
  accumulator is exact; float32 is exact up to 2**24 and the result is
  requantized to 8 bits right after, see docs/adagp.md);
* the weight gradient dW is requantized to 8 bits before the update;
* master weights are 16-bit (per-tensor power-of-two scale); the update
  ``W - lr * dW8`` is rounded back to that 16-bit grid (round half to even,
  numerics.quantize).  The learning rate is a power of two so ``lr * dW8`` is a
  shift, exact.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import numerics

OP_BITS = 8
MASTER_BITS = 16


class NonFiniteError(FloatingPointError):
    """A NaN/Inf in an activation or gradient: training stops, naming layer and step."""


def check_finite(t: torch.Tensor, what: str, name: str, step: int):
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteError(f"non-finite {what} in layer {name!r} at step {step} "
                             f"({bad} of {t.numel()} values are NaN/Inf); training stopped")


def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out = [(n, m) for n, m in model.named_children() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not out:
        raise ValueError(f"{type(model).__name__} has no Conv2d/Linear layers")
    return out


def relu_after(seq: list[tuple[str, nn.Module]]) -> dict[str, bool]:
    """Which layers of the chain are followed by a ReLU: every one but the last (the
    logits), as in model_sw.models (MLP: fc1, fc2; CNN: conv1, conv2).  :func:`forward`
    and ADA-GP's predictor input (adagp_reorg.predictor_input) both use this."""
    return {name: i < len(seq) - 1 for i, (name, _) in enumerate(seq)}


class _QuantGrad(torch.autograd.Function):
    """Identity forward; backward fake-quantizes the incoming gradient to 8 bits."""

    @staticmethod
    def forward(ctx, y, tag):
        ctx.tag = tag
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        name, step = ctx.tag
        check_finite(g, "output gradient", name, step)
        return quant_real(g, OP_BITS), None


def quant_real(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize-dequantize (no autograd) with the per-tensor scale of numerics."""
    f = numerics.choose_frac_bits(x, bits)
    return numerics.dequantize(numerics.quantize(x, f, bits), f).to(x.dtype)


def layer_op(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return torch.nn.functional.conv2d(x, weight, None, layer.stride, layer.padding)
    return torch.nn.functional.linear(x, weight)


def forward(model: nn.Module, x: torch.Tensor, quant: bool, step: int = -1, on_output=None):
    """Run the chain; returns logits.  ``on_output(name, layer, y)`` sees each layer's output
    y before its ReLU (the requantized accumulator in quantized mode); the activation the
    next layer reads, and the engine stores, is ReLU(y) where :func:`relu_after` says so."""
    seq = layers(model)
    relu = relu_after(seq)
    check_finite(x, "input", seq[0][0], step)
    for name, layer in seq:
        if isinstance(layer, nn.Linear) and x.dim() > 2:
            x = x.flatten(1)
        check_finite(layer.weight, "weight", name, step)
        if quant:
            y = layer_op(layer, numerics.fake_quant(x, OP_BITS), numerics.fake_quant(layer.weight, OP_BITS))
            check_finite(y, "activation", name, step)
            y = numerics.fake_quant(y, OP_BITS)
            if torch.is_grad_enabled():
                y = _QuantGrad.apply(y, (name, step))
        else:
            y = layer_op(layer, x, layer.weight)
            check_finite(y, "activation", name, step)
        if on_output is not None:
            on_output(name, layer, y)
        x = torch.relu(y) if relu[name] else y
    return x


def quantize_master(model: nn.Module):
    """Put every weight on its 16-bit master grid (used once at the start in quant mode)."""
    with torch.no_grad():
        for _, layer in layers(model):
            layer.weight.copy_(quant_real(layer.weight, MASTER_BITS))


def check_lr(lr: float, quant: bool):
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"learning rate {lr!r} must be a positive finite number")
    if quant and 2.0 ** round(math.log2(lr)) != lr:
        raise ValueError(f"learning rate {lr} must be a power of two in quantized mode (it is a shift)")


@torch.no_grad()
def apply_update(weight: torch.Tensor, grad: torch.Tensor, lr: float, quant: bool):
    """SGD step ``W -= lr * dW`` in float32, or in the engine's formats."""
    if not quant:
        weight.sub_(lr * grad)
        return
    g8 = quant_real(grad, OP_BITS)
    weight.copy_(quant_real(weight - lr * g8, MASTER_BITS))


def forward_macs(model: nn.Module, x_shape) -> dict[str, int]:
    """Forward MACs per layer for one batch of shape ``x_shape``, from the layer shapes."""
    macs = {}

    def hook(name, layer, y):
        macs[name] = int(y.numel()) * int(layer.weight[0].numel())

    with torch.no_grad():
        forward(model, torch.zeros(x_shape), quant=False, on_output=hook)
    return macs


def backward_macs(fwd: dict[str, int]) -> int:
    """A BP step's backward: weight gradient of every layer + data gradient of all but the first."""
    names = list(fwd)
    return sum(fwd.values()) + sum(fwd[n] for n in names[1:])
