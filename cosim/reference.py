"""Independent references for the engine's operations: PyTorch in float64 on
integer-valued tensors (exact for these magnitudes), with autograd for the
backward passes.  Layouts follow the driver: activations [C, B, H, W]."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _t(x):
    return torch.tensor(np.asarray(x, dtype=np.float64))


def conv_fwd(x_cnhw, w, stride, pad) -> np.ndarray:
    y = F.conv2d(_t(x_cnhw).permute(1, 0, 2, 3), _t(w), stride=stride, padding=pad)
    return y.permute(1, 0, 2, 3).numpy()


def conv_grads(x_cnhw, w, dy_cnhw, stride, pad):
    """(dX, dW) by autograd: dX in [Ci, B, H, W], dW like w."""
    x = _t(x_cnhw).permute(1, 0, 2, 3).clone().requires_grad_(True)
    wt = _t(w).clone().requires_grad_(True)
    y = F.conv2d(x, wt, stride=stride, padding=pad)
    y.backward(_t(dy_cnhw).permute(1, 0, 2, 3))
    return x.grad.permute(1, 0, 2, 3).numpy(), wt.grad.numpy()
