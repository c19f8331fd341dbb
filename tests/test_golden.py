"""The golden model and the driver's descriptors against independent references:
numpy matmul, PyTorch conv2d and autograd (float64 on integers: exact)."""
import numpy as np
import pytest

from cosim import driver, golden, reference
from cosim.driver import ConvGeom, DriverError, MemoryImage
from model_sw import numerics
from rtl import isa
from rtl.config import preset

CFG = preset("small")


def run_golden(img, prog):
    acc = np.zeros((CFG.acc_words, CFG.cols), dtype=np.int64)
    for ins in prog:
        assert golden.execute(CFG, ins, img.mem, acc) == 0


@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_gemm_transposes(ta, tb):
    rng = np.random.default_rng(ta * 2 + tb)
    M, N, K = 7, 10, 13
    A = rng.integers(-128, 128, (M, K))
    B = rng.integers(-128, 128, (K, N))
    img = MemoryImage(CFG)
    a = img.put("a", A.T if ta else A)
    b = img.put("b", B.T if tb else B)
    d = img.alloc("d", (M, N))
    ad = driver.matrix_desc(a.base, 1 if ta else K, M if ta else 1)
    bd = driver.matrix_desc(b.base, K if tb else 1, 1 if tb else N)
    run_golden(img, driver.gemm_program(CFG, M, N, K, ad, bd, d_addr=d.base, d_si=N, out_raw=True))
    assert (img.get("d") == A @ B).all()


def test_gemm_split_k_accumulates_and_requantizes():
    rng = np.random.default_rng(5)
    M, N, K = 9, 6, 1500          # K > scratchpad depth: split, partial sums in the accumulator SRAM
    A = rng.integers(-128, 128, (M, K))
    B = rng.integers(-128, 128, (K, N))
    img = MemoryImage(CFG)
    a, b, d = img.put("a", A), img.put("b", B), img.alloc("d", (M, N))
    prog = driver.gemm_program(CFG, M, N, K, driver.matrix_desc(a.base, K, 1),
                               driver.matrix_desc(b.base, 1, N), d_addr=d.base, d_si=N, shift=9)
    assert len(prog) > 1 and prog[1]["accumulate"] == 1 and prog[0]["store"] == 0
    run_golden(img, prog)
    want, _ = numerics.requantize(A @ B, 9, 8)
    assert (img.get("d") == want).all()


GEOMS = [ConvGeom(2, 3, 6, 5, 4, 3, 3, 1, 1), ConvGeom(2, 2, 7, 7, 3, 3, 3, 2, 1),
         ConvGeom(1, 4, 8, 8, 2, 1, 1, 1, 0), ConvGeom(3, 2, 4, 4, 5, 4, 4, 1, 0),
         ConvGeom(1, 2, 9, 8, 3, 5, 3, 2, 2)]


@pytest.mark.parametrize("g", GEOMS, ids=str)
def test_conv_forward_matches_torch(g):
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (g.cin, g.batch, g.h, g.w))
    w = rng.integers(-128, 128, (g.cout, g.cin, g.kh, g.kw))
    img = MemoryImage(CFG)
    xt, wt = img.put("x", x), img.put("w", w)
    y = img.alloc("y", (g.cout, g.batch, g.ho, g.wo))
    a, b = driver.conv_fwd_descs(g, xt.base, wt.base)
    n = g.batch * g.ho * g.wo
    run_golden(img, driver.gemm_program(CFG, g.cout, n, g.cin * g.kh * g.kw, a, b,
                                        d_addr=y.base, d_si=n, out_raw=True))
    assert (img.get("y") == reference.conv_fwd(x, w, g.stride, g.pad)).all()


@pytest.mark.parametrize("g", GEOMS, ids=str)
def test_conv_backward_matches_autograd(g):
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (g.cin, g.batch, g.h, g.w))
    w = rng.integers(-128, 128, (g.cout, g.cin, g.kh, g.kw))
    dy = rng.integers(-128, 128, (g.cout, g.batch, g.ho, g.wo))
    dx_ref, dw_ref = reference.conv_grads(x, w, dy, g.stride, g.pad)
    img = MemoryImage(CFG)
    xt, wt, dyt = img.put("x", x), img.put("w", w), img.put("dy", dy)
    dw = img.alloc("dw", w.shape)
    dx = img.alloc("dx", x.shape)
    n = g.batch * g.ho * g.wo
    kk = g.cin * g.kh * g.kw
    a, b = driver.conv_bwd_weight_descs(g, dyt.base, xt.base)
    prog = driver.gemm_program(CFG, g.cout, kk, n, a, b, d_addr=dw.base, d_si=kk, out_raw=True)
    if g.pad <= min(g.kh, g.kw) - 1:
        a2, b2 = driver.conv_bwd_data_descs(g, dyt.base, wt.base)
        nx = g.batch * g.h * g.w
        prog += driver.gemm_program(CFG, g.cin, nx, g.cout * g.kh * g.kw, a2, b2,
                                    d_addr=dx.base, d_si=nx, out_raw=True)
    run_golden(img, prog)
    assert (img.get("dw") == dw_ref).all()
    if g.pad <= min(g.kh, g.kw) - 1:
        assert (img.get("dx") == dx_ref).all()


def test_epilogue_relu_and_mask_match_numerics():
    rng = np.random.default_rng(3)
    M, N, K = 5, 9, 20
    A = rng.integers(-128, 128, (M, K))
    B = rng.integers(-128, 128, (K, N))
    img = MemoryImage(CFG)
    a, b = img.put("a", A), img.put("b", B)
    d, mk = img.alloc("d", (M, N)), img.alloc("mask", (M, N))
    run_golden(img, driver.gemm_program(CFG, M, N, K, driver.matrix_desc(a.base, K, 1),
                                        driver.matrix_desc(b.base, 1, N), d_addr=d.base, d_si=N,
                                        shift=7, relu=True, mask_addr=mk.base, mask_si=N))
    out, mask = numerics.requantize(A @ B, 7, 8, relu=True)
    assert (img.get("d") == out).all() and (img.get("mask") == mask).all()
    assert 0 < mask.sum() < mask.size


def test_golden_int8_gemm_vs_float_within_quantization_tolerance():
    """The quantized GEMM against PyTorch fp32: error bounded by the input and
    output rounding (stated tolerance: 2**-frac_out per element plus the
    propagated input rounding, here measured relative to max |y|)."""
    import torch
    rng = np.random.default_rng(4)
    a = rng.standard_normal((8, 32)).astype(np.float32)
    b = rng.standard_normal((32, 16)).astype(np.float32)
    fa, fb = numerics.choose_frac_bits(a, 8), numerics.choose_frac_bits(b, 8)
    y = (torch.tensor(a) @ torch.tensor(b)).numpy()
    fo = numerics.choose_frac_bits(y, 8)
    qa, qb = numerics.quantize(a, fa, 8), numerics.quantize(b, fb, 8)
    out, _ = numerics.requantize(numerics.gemm_int(qa, qb, 32), numerics.requant_shift(fa, fb, fo), 8)
    err = np.abs(numerics.dequantize(out, fo) - y).max() / np.abs(y).max()
    assert err < 0.05, err


def test_driver_rejects_bad_input_naming_the_field():
    img = MemoryImage(CFG)
    with pytest.raises(DriverError, match="M=0"):
        driver.gemm_program(CFG, 0, 4, 4, driver.matrix_desc(0, 4, 1), driver.matrix_desc(0, 1, 4),
                            d_addr=0, d_si=4)
    with pytest.raises(DriverError, match="write address out of range"):
        driver.gemm_program(CFG, 4, 4, 4, driver.matrix_desc(0, 4, 1), driver.matrix_desc(0, 1, 4),
                            d_addr=CFG.mem_words - 3, d_si=4)
    with pytest.raises(DriverError, match="reads outside"):
        driver.gemm_program(CFG, 4, 4, 4, driver.matrix_desc(CFG.mem_words - 2, 4, 1),
                            driver.matrix_desc(0, 1, 4), d_addr=0, d_si=4)
    with pytest.raises(DriverError, match="stride=3"):
        ConvGeom(1, 1, 8, 8, 1, 3, 3, 3, 1).check(CFG)
    with pytest.raises(DriverError, match="does not fit external memory"):
        img.alloc("huge", (CFG.mem_words + 1,))
    ins = {"opcode": 7, "m": 1, "n": 1, "k": 1}
    with pytest.raises(DriverError, match="unknown opcode"):
        driver.validate(CFG, ins)
    assert golden.check(CFG, {**ins, "opcode": isa.OP_GEMM, "m": 64, "k": 512}) == isa.ERR_SPAD_A
