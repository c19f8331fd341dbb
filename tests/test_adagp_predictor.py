"""Predictor: masking, size errors, cost model, quantized path bit-exact with the integer function."""
import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from model_sw import numerics
from model_sw.adagp_predictor import (GradPredictor, PredictorBank, PredictorConfig, PredictorSizeError,
                                      predictor_forward_int)

FAN = {"conv1": 9, "conv2": 72, "fc": 256}
NOUT = {"conv1": 8, "conv2": 16, "fc": 10}


def _batch(quant, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, k in FAN.items():
        x = torch.randn(NOUT[n], 1, 4, 4, generator=g)
        if quant:
            x = numerics.quantize(x, numerics.choose_frac_bits(x, 8), 8)
        else:
            x = x / x.abs().max()
        out[n] = (x, torch.randn(NOUT[n], k, generator=g))
    return out


def test_shared_predictor_masks_small_layers():
    bank = PredictorBank(FAN, "shared")
    assert bank.k_max == 256
    net = bank.nets["conv1"]
    assert net is bank.nets["fc"]  # one network for every layer
    b = _batch(False)
    torch.nn.init.normal_(net.fc.weight)
    for n in FAN:
        p = bank.predict(n, b[n][0])
        assert p.shape == (NOUT[n], FAN[n])
        torch.testing.assert_close(p, net(b[n][0])[:, :FAN[n]])
    # training on conv1 only: masked fc rows (outputs >= 9) get no gradient and do not move
    before = net.fc.weight.detach().clone()
    bank.train_step({"conv1": b["conv1"]})
    after = net.fc.weight.detach()
    assert torch.equal(after[9:], before[9:])
    assert not torch.equal(after[:9], before[:9])


def test_per_layer_variant_sizes():
    bank = PredictorBank(FAN, "per_layer")
    assert {n: bank.nets[n].k_max for n in FAN} == FAN
    assert len({id(v) for v in bank.nets.values()}) == 3


def test_layer_larger_than_predictor_is_an_error():
    with pytest.raises(PredictorSizeError, match="'fc'.*256.*128"):
        PredictorBank(FAN, "shared", k_max=128)
    with pytest.raises(ValueError, match="unknown predictor mode"):
        PredictorBank(FAN, "bogus")


def test_predictor_macs_formula():
    cfg = PredictorConfig()
    bank = PredictorBank(FAN, "shared", cfg)
    bank.set_out_channels(NOUT)
    conv = cfg.channels * 16 * 9
    want = sum(NOUT[n] * (conv + cfg.features * FAN[n]) for n in FAN)  # masked outputs are not computed
    assert bank.forward_macs() == want
    assert bank.train_macs() == sum(NOUT[n] * (2 * conv + 3 * cfg.features * FAN[n]) for n in FAN)


def test_quantized_forward_is_bit_exact_with_integer_function():
    torch.manual_seed(0)
    bank = PredictorBank(FAN, "shared", quant=True)
    net = bank.nets["fc"]
    torch.nn.init.normal_(net.fc.weight, std=0.2)
    b = _batch(True, seed=5)
    for _ in range(3):
        bank.train_step(b)  # calibrates frac_h / frac_out
    ip = net.int_params()
    for n in FAN:
        x = b[n][0]
        got = bank.predict(n, x)  # torch fake-quant path, real values
        ref = predictor_forward_int(x.numpy(), ip["w1"], ip["w2"], ip["shift1"], ip["shift2"], ip["pool"], k=FAN[n])
        assert np.abs(ref).max() > 0
        assert np.array_equal(got.detach().double().numpy() * 2.0 ** ip["frac_out"], ref[:, :FAN[n]].astype(np.float64))
        assert not ref[:, FAN[n]:].any()


def test_integer_function_against_float64_reference():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(5, 1, 4, 4))
    w1 = rng.integers(-128, 128, size=(8, 1, 3, 3))
    w2 = rng.integers(-128, 128, size=(20, 32))
    out = predictor_forward_int(x, w1, w2, shift1=9, shift2=10, pool=2)
    # reference: float64 conv via torch, then the numerics rounding rules
    acc1 = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w1, dtype=torch.float64),
                                      padding=1).round().long()
    h = numerics.requantize(acc1, 9, 8, relu=True)[0]
    s = torch.nn.functional.avg_pool2d(h.double(), 2) * 4
    hp = numerics.requantize(s.round().long(), 2, 8)[0].reshape(5, 32)
    acc2 = hp.double() @ torch.tensor(w2, dtype=torch.float64).T
    ref = numerics.requantize(acc2.round().long(), 10, 8)[0]
    assert np.array_equal(out, ref.numpy())
    with pytest.raises(numerics.NumericsError, match="predictor input"):
        predictor_forward_int(x * 2, w1, w2, 9, 10)


def test_uncalibrated_quant_predictor_refuses_export():
    with pytest.raises(RuntimeError, match="calibrated"):
        GradPredictor(9, quant=True).int_params()
