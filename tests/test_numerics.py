"""model_sw.numerics' rounding shifts against Python's exact integers (fractions), for
numpy and torch, across the whole shift range the hardware can be asked for."""
from fractions import Fraction

import numpy as np
import pytest
import torch

from model_sw import numerics


def exact_round_half_even(x: int, shift: int) -> int:
    return round(Fraction(x, 1 << shift))        # Python rounds Fractions half to even


VALUES = [0, 1, -1, 2, -2, 3, -3, 5, -5, 127, -128, 1 << 30, -(1 << 30), (1 << 31) - 1, -(1 << 31),
          (1 << 62) + 1, -(1 << 62) - 1, (1 << 63) - 1, -(1 << 63), 12345678901, -98765432109]


@pytest.mark.parametrize("shift", [0, 1, 2, 7, 8, 31, 32, 40, 61, 62, 63, 64, 65, 70, 100])
def test_round_shift_rne_exact(shift):
    want = [exact_round_half_even(v, shift) for v in VALUES]
    assert numerics.round_shift_rne(np.array(VALUES, dtype=np.int64), shift).tolist() == want
    assert numerics.round_shift_rne(torch.tensor(VALUES, dtype=torch.int64), shift).tolist() == want


@pytest.mark.parametrize("g", [-100, -64, -63, -40, -9, -1, 0, 3])
def test_shift_round_saturate_exact(g):
    rng = np.random.default_rng(abs(g))
    x = rng.integers(-(1 << 40), 1 << 40, size=200)
    for bits in (8, 16):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if g >= 0:
            want = [min(max(int(v) << g, lo), hi) for v in x]
        else:
            want = [min(max(exact_round_half_even(int(v), -g), lo), hi) for v in x]
        assert numerics.shift_round_saturate(x, g, bits).tolist() == want
