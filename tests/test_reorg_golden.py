"""Integer golden of the tensor reorganization (model_sw.adagp_reorg.reorg_samples_int)
vs model_sw's float path quantize_samples(layer_samples(...)) (the independent reference)."""
import numpy as np
import pytest
import torch
from torch import nn

from model_sw import numerics
from model_sw import adagp_reorg as R

torch.set_num_threads(1)
P = 4


def _float_path(layer, y_int, y_frac):
    y = numerics.dequantize(torch.from_numpy(np.asarray(y_int)), y_frac)
    r = R.layer_samples(layer, y, P)
    return R.quantize_samples(r).numpy(), R.input_frac(r)


def test_choose_frac_bits_int_equals_float_rule():
    for amax in list(range(0, 1200)) + [2 ** 20 - 1, 2 ** 20, 255 << 9, (255 << 9) - 1, 2 ** 31 - 1]:
        for exp in (-6, 0, 3, 11, 24, 30):
            x = np.array([amax * 2.0 ** -exp, 0.0])
            assert numerics.choose_frac_bits_int(amax, exp, 8) == numerics.choose_frac_bits(x, 8), (amax, exp)


@pytest.mark.parametrize("g", [-7, -3, -1, 0, 2, 5])
def test_shift_round_saturate_equals_quantize(g):
    x = np.arange(-3000, 3000)
    ref = numerics.quantize(x * 2.0 ** g, 0, 8)
    assert np.array_equal(numerics.shift_round_saturate(x, g, 8), ref)


@pytest.mark.parametrize("shape", [(32, 8, 8, 8), (32, 16, 4, 4), (4, 3, 2, 2), (2, 5, 16, 16),
                                   (8, 4, 1, 1), (16, 3, 4, 8), (1, 2, 32, 32), (2, 6, 3, 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conv_golden_equals_model_sw(shape, seed):
    rng = np.random.default_rng(seed)
    b, c, h, w = shape
    y = rng.integers(-128, 128, size=shape)
    if seed == 1:
        y = np.maximum(y, 0)                     # post-ReLU outputs
    if seed == 2:
        y = y // 37                              # small values: large frac, the cap
    y_frac = int(rng.integers(-3, 25))
    layer = nn.Conv2d(3, c, 3, bias=False)
    q, f = R.reorg_samples_int(y, y_frac, "conv", P)
    ref, rf = _float_path(layer, y, y_frac)
    assert q.shape == ref.shape == (c, 1, P, P)
    assert f == rf
    assert np.array_equal(q, ref)


@pytest.mark.parametrize("n", [1, 3, 10, 64, 300])
@pytest.mark.parametrize("b", [1, 8, 32])
def test_linear_golden_equals_model_sw(n, b):
    rng = np.random.default_rng(n * 7 + b)
    y = rng.integers(-128, 128, size=(b, n))
    y_frac = int(rng.integers(0, 20))
    q, f = R.reorg_samples_int(y, y_frac, "linear", P)
    ref, rf = _float_path(nn.Linear(5, n, bias=False), y, y_frac)
    assert f == rf and np.array_equal(q, ref)


def test_zero_layer_output():
    y = np.zeros((4, 3, 4, 4), dtype=np.int64)
    q, f = R.reorg_samples_int(y, 5, "conv", P)
    ref, rf = _float_path(nn.Conv2d(1, 3, 3), y, 5)
    assert f == rf == 24 and np.array_equal(q, ref) and not q.any()


def test_real_digits_cnn_activations():
    from cosim.bench_predictor import capture_digits
    cap = capture_digits(steps=6)
    assert len(cap.layers) == 3
    for L in cap.layers:
        for y_int in (L.y_pre, L.y_post):
            q, f = R.reorg_samples_int(y_int, L.y_frac, L.kind, P, L.name)
            ref, rf = _float_path(L.module, y_int, L.y_frac)
            assert f == rf and np.array_equal(q, ref), L.name
            assert q.any(), f"{L.name}: an all-zero capture would test nothing"


@pytest.mark.parametrize("shape,kind,msg", [
    ((3, 4, 8, 8), "conv", "power of two"),           # batch 3: the mean is not a shift
    ((4, 4, 12, 12), "conv", "power of two"),         # pool 3x3
    ((4, 4, 6, 6), "conv", "not a multiple"),
    ((4, 0), "linear", "zero-size"),
    ((4, 2, 0, 4), "conv", "zero-size"),
])
def test_unsupported_raises(shape, kind, msg):
    with pytest.raises(R.ReorgError, match=msg):
        R.reorg_samples_int(np.ones(shape, dtype=np.int64), 3, kind, P)
