"""Shared RTL test cases, run on Verilator (full set) and Icarus (subset)."""
import numpy as np

from cosim import driver
from cosim.driver import ConvGeom, MemoryImage
from rtl import isa


def gemm_case(cfg, rng, M, N, K, ta=False, tb=False, relu=False, mask=False, out_raw=False, shift=8):
    img = MemoryImage(cfg)
    A = rng.integers(-128, 128, (M, K))
    B = rng.integers(-128, 128, (K, N))
    a = img.put("a", A.T if ta else A)
    b = img.put("b", B.T if tb else B)
    d = img.alloc("d", (M, N))
    mk = img.alloc("mask", (M, N)) if mask else None
    prog = driver.gemm_program(
        cfg, M, N, K, driver.matrix_desc(a.base, 1 if ta else K, M if ta else 1),
        driver.matrix_desc(b.base, K if tb else 1, 1 if tb else N), d_addr=d.base, d_si=N,
        shift=shift, relu=relu, out_raw=out_raw, mask_addr=mk.base if mk else None,
        mask_si=N if mk else None)
    return img, prog, A @ B


def conv_case(cfg, rng, g: ConvGeom, kind: str):
    img = MemoryImage(cfg)
    x = img.put("x", rng.integers(-128, 128, (g.cin, g.batch, g.h, g.w)))
    w = img.put("w", rng.integers(-128, 128, (g.cout, g.cin, g.kh, g.kw)))
    dy = img.put("dy", rng.integers(-128, 128, (g.cout, g.batch, g.ho, g.wo)))
    if kind == "fwd":
        y = img.alloc("y", (g.cout, g.batch, g.ho, g.wo))
        a, b = driver.conv_fwd_descs(g, x.base, w.base)
        n = g.batch * g.ho * g.wo
        return img, driver.gemm_program(cfg, g.cout, n, g.cin * g.kh * g.kw, a, b, d_addr=y.base,
                                        d_si=n, out_raw=True)
    if kind == "bwd_weight":
        dw = img.alloc("dw", (g.cout, g.cin, g.kh, g.kw))
        kk = g.cin * g.kh * g.kw
        a, b = driver.conv_bwd_weight_descs(g, dy.base, x.base)
        return img, driver.gemm_program(cfg, g.cout, kk, g.batch * g.ho * g.wo, a, b,
                                        d_addr=dw.base, d_si=kk, out_raw=True)
    dx = img.alloc("dx", (g.cin, g.batch, g.h, g.w))
    a, b = driver.conv_bwd_data_descs(g, dy.base, w.base)
    n = g.batch * g.h * g.w
    return img, driver.gemm_program(cfg, g.cin, n, g.cout * g.kh * g.kw, a, b, d_addr=dx.base,
                                    d_si=n, out_raw=True)


def raw_gemm(cfg, **over):
    """A hand-made instruction (bypassing the driver's checks) for bad-input tests."""
    ins = {"opcode": isa.OP_GEMM, "m": 4, "n": 4, "k": 4, "store": 1, "out_raw": 1,
           "a": driver.matrix_desc(0, 4, 1), "b": driver.matrix_desc(16, 1, 4),
           "d_addr": 64, "d_si": 4, "d_sj": 1}
    ins.update(over)
    return ins


def check_gemms_and_conv(sim, cfg, rng, label: str, conv_stall: int = 0):
    """Three GEMM shapes (transposed operands, ReLU, mask written) and a bwd_data
    convolution on ``sim``, each checked by ``run_checked`` (bit-exact and cycle-exact)."""
    from cosim.execute import run_checked
    for M, N, K, ta, tb in ((5, 7, 9, False, True), (8, 3, 1, True, False), (6, 9, 40, False, False)):
        img, prog, _ = gemm_case(cfg, rng, M, N, K, ta=ta, tb=tb, relu=True, mask=True)
        run_checked(sim, cfg, img, prog, what=f"{label} gemm {M}x{N}x{K}")
    img, prog = conv_case(cfg, rng, ConvGeom(1, 2, 6, 6, 3, 3, 3, 2, 1), "bwd_data")
    run_checked(sim, cfg, img, prog, what=f"{label} conv bwd_data", stall_prob=conv_stall)
