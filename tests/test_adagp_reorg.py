"""Tensor reorganization vs explicit loops (independent references)."""
import pytest
import torch
from torch import nn

torch.set_num_threads(1)

from model_sw import numerics
from model_sw import adagp_reorg as R
from model_sw.models import CNN, MLP


def _explicit_conv(y, p):
    b, c, h, w = y.shape
    out = torch.zeros(c, 1, p, p, dtype=torch.float64)
    for ch in range(c):
        m = [[sum(float(y[k, ch, i, j]) for k in range(b)) / b for j in range(w)] for i in range(h)]
        if h >= p:
            f = h // p
            for i in range(p):
                for j in range(p):
                    out[ch, 0, i, j] = sum(m[i * f + a][j * f + bb] for a in range(f) for bb in range(f)) / (f * f)
        else:
            for i in range(h):
                for j in range(w):
                    out[ch, 0, i, j] = m[i][j]
    return out


@pytest.mark.parametrize("shape", [(3, 5, 8, 8), (2, 16, 4, 4), (4, 3, 2, 2), (1, 2, 16, 16)])
def test_conv_samples_match_loop(shape):
    g = torch.Generator().manual_seed(1)
    y = torch.randn(*shape, generator=g)
    s = R.conv_samples(y, 4)
    assert s.shape == (shape[1], 1, 4, 4)
    torch.testing.assert_close(s.double(), _explicit_conv(y, 4), rtol=1e-5, atol=1e-6)


def test_conv_bad_size_is_an_error():
    with pytest.raises(R.ReorgError, match="conv2.*6"):
        R.conv_samples(torch.zeros(2, 3, 6, 6), 4, "conv2")
    with pytest.raises(R.ReorgError, match="myconv"):
        R.conv_samples(torch.zeros(2, 3, 6), 4, "myconv")


@pytest.mark.parametrize("n_out,p", [(10, 4), (64, 4), (3, 2), (20, 3)])
def test_linear_windows_match_loop(n_out, p):
    g = torch.Generator().manual_seed(2)
    y = torch.randn(5, n_out, generator=g)
    s = R.linear_samples(y, p)
    assert s.shape == (n_out, 1, p, p)
    m = y.mean(0)
    w = p * p
    for n in range(n_out):
        flat = s[n, 0].reshape(-1)
        for j in range(w):
            src = n - w // 2 + j
            want = float(m[src]) if 0 <= src < n_out else 0.0
            assert float(flat[j]) == pytest.approx(want, abs=1e-6)
        assert float(flat[w // 2]) == pytest.approx(float(m[n]), abs=1e-6)  # neuron n at the centre


def test_targets_roundtrip_and_fan_in():
    cnn, mlp = CNN(), MLP()
    assert [R.fan_in(m) for m in (cnn.conv1, cnn.conv2, cnn.fc)] == [9, 72, 256]
    assert [R.fan_in(m) for m in (mlp.fc1, mlp.fc2, mlp.fc3)] == [64, 64, 64]
    dw = torch.randn(16, 8, 3, 3)
    t = R.grad_targets(dw)
    assert t.shape == (16, 72)
    for c in range(16):
        assert torch.equal(t[c], dw[c].flatten())
    padded = torch.cat([t, torch.full((16, 184), 99.0)], 1)  # masked columns must be dropped
    assert torch.equal(R.targets_to_grad(padded, dw.shape), dw)
    with pytest.raises(R.ReorgError, match="BatchNorm"):
        R.fan_in(nn.BatchNorm2d(3))


def test_normalized_and_quantized_samples_agree():
    g = torch.Generator().manual_seed(3)
    r = torch.randn(8, 1, 4, 4, generator=g) * 0.03
    f = numerics.choose_frac_bits(r, 8)
    q = R.quantize_samples(r)
    assert torch.equal(q, numerics.quantize(r, f, 8))
    assert int(q.abs().max()) <= 127 and int(q.abs().max()) >= 64  # per-layer power-of-two normalization
    x = R.normalize_samples(r)
    assert float((x - q.float() * 2.0 ** -7).abs().max()) <= 2.0 ** -8 + 1e-9


def test_normalize_targets():
    dw = torch.randn(4, 9)
    t, rms = R.normalize_targets(dw)
    assert rms == pytest.approx(float(dw.pow(2).mean().sqrt()), rel=1e-6)
    assert float(t.pow(2).mean()) == pytest.approx(1.0, rel=1e-5)
    t0, r0 = R.normalize_targets(torch.zeros(3, 3))
    assert r0 == 0.0 and not t0.any()
