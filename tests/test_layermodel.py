"""The per-layer closed form (cosim.layermodel) against the instruction-level model
on the driver's real programs, and against the RTL's counters."""
from collections import Counter

import numpy as np
import pytest

from cosim import cyclemodel, driver, golden, layermodel as L, networks
from cosim.driver import ConvGeom, DriverError, MemoryImage
from rtl.config import preset
from tests.rtl_cases import conv_case, gemm_case

CFG = preset("default")        # the RTL check below runs on it


def matrix_gemm(M, N, K, relu=False, mask=False, out_raw=False):
    return L.Gemm("gemm", "fwd", M, N, K, driver.matrix_desc(0, K, 1), driver.matrix_desc(0, 1, N),
                  M * K, K * N, relu=relu, mask=mask, out_raw=out_raw)


def conv_gemm(g, kind):
    gm = next(x for x in L.conv_gemms(g, "conv") if x.op == kind)
    gm.out_raw = True              # rtl_cases.conv_case writes raw sums
    gm.relu = gm.mask = False
    return gm


def rtl_test_programs():
    """(cfg, Gemm, program) for every program the RTL tests simulate, rebuilt with the same seeds."""
    out = []
    small = preset("small")
    rng = np.random.default_rng(11)                      # test_engine_rtl random GEMMs
    for trial in range(24):
        M, N, K = (int(v) for v in rng.integers(1, 30, 3))
        if trial % 6 == 0:
            K = 1
        if trial % 6 == 1:
            K = int(rng.integers(100, 700))
        kw = dict(relu=bool(trial & 4), mask=trial % 3 == 0, out_raw=trial % 5 == 0)
        _, prog, _ = gemm_case(small, rng, M, N, K, ta=bool(trial & 1), tb=bool(trial & 2), **kw)
        out.append((small, matrix_gemm(M, N, K, **kw), prog))
    for M, N, K in ((13, 11, 37), (9, 14, 23), (8, 8, 8), (16, 16, 64), (5, 7, 9), (8, 3, 1), (6, 9, 40)):
        _, prog, _ = gemm_case(small, np.random.default_rng(0), M, N, K, out_raw=True)
        out.append((small, matrix_gemm(M, N, K, out_raw=True), prog))
    for shape in ((32, 32, 64), (37, 21, 9), (8, 64, 1), (64, 40, 300)):    # test_engine_default
        _, prog, _ = gemm_case(CFG, np.random.default_rng(sum(shape)), *shape, relu=True, mask=True)
        out.append((CFG, matrix_gemm(*shape, relu=True, mask=True), prog))
    wide = preset("wide16")
    for M, N, K, raw in ((9, 7, 33, True), (5, 12, 200, False)):
        _, prog, _ = gemm_case(wide, np.random.default_rng(0), M, N, K, out_raw=raw)
        out.append((wide, matrix_gemm(M, N, K, out_raw=raw), prog))
    convs = [(small, g) for g in (ConvGeom(2, 3, 6, 5, 4, 3, 3, 1, 1), ConvGeom(2, 2, 7, 7, 5, 3, 3, 2, 1),
                                  ConvGeom(1, 3, 8, 8, 2, 5, 5, 2, 2), ConvGeom(1, 2, 6, 6, 3, 3, 3, 2, 1))]
    convs.append((CFG, ConvGeom(4, 8, 8, 8, 16, 3, 3, 2, 1)))
    for cfg, g in convs:
        for kind in L.OPS:
            _, prog = conv_case(cfg, np.random.default_rng(7), g, kind)
            out.append((cfg, conv_gemm(g, kind), prog))
    return out


def digits_and_network_programs():
    """The digits CNN's layers (cosim.cnn_pass geometry, batch 32) and small network layers."""
    geoms = [ConvGeom(32, 1, 8, 8, 8, 3, 3, 1, 1), ConvGeom(32, 8, 8, 8, 16, 3, 3, 2, 1),
             ConvGeom(32, 16, 4, 4, 10, 4, 4, 1, 0)]
    digits = len(geoms)
    for key, n in (("lenet5/cifar10", 2), ("alexnet/cifar10", 2), ("resnet18/cifar10", 1),
                   ("mobilenetv2/cifar10", 4)):
        for l in networks.build(key).layers[:n]:
            geoms.append(ConvGeom(1, l.cin // l.groups, l.h, l.w, l.cout // l.groups, l.k, l.k,
                                  l.stride, l.pad))
    out = []
    for cfg in (CFG, preset("small"), preset("large")):
        for g in geoms if cfg.name != "large" else geoms[:digits]:
            for kind in L.OPS:
                try:
                    _, prog = conv_case(cfg, np.random.default_rng(0), g, kind)
                except DriverError:
                    continue            # wider than this preset's driver rule: see the fallback test
                out.append((cfg, conv_gemm(g, kind), prog))
    _, prog, _ = gemm_case(CFG, np.random.default_rng(0), 128, 128, 64)      # BERT scores, one head
    out.append((CFG, matrix_gemm(128, 128, 64), prog))
    return out


def gathered_elements(cfg, prog):
    return sum(int(golden.gather(cfg, ins["a"], ins["m"], ins["k"])[1].sum())
               + int(golden.gather(cfg, ins["b"], ins["n"], ins["k"])[1].sum()) for ins in prog)


def check_against_program(cfg, gm, prog):
    p = L.plan(cfg, gm)
    assert not p.fallback
    assert p.shapes() == Counter((i["m"], i["n"], i["k"], i["accumulate"], i["store"]) for i in prog)
    cost = L.gemm_cost(cfg, gm)
    assert cost["busy_cycles"] == cyclemodel.program_cycles(cfg, prog)
    assert cost["rd_bytes"] == cfg.op_bytes * gathered_elements(cfg, prog)
    assert cost["retired"] == len(prog)


def test_closed_form_equals_instruction_model_on_rtl_test_programs():
    cases = rtl_test_programs()
    assert len(cases) >= 50
    for cfg, gm, prog in cases:
        check_against_program(cfg, gm, prog)


def test_closed_form_equals_instruction_model_on_digits_cnn_and_network_layers():
    cases = digits_and_network_programs()
    assert len(cases) >= 60
    assert any(len(prog) > 4 for _, _, prog in cases)          # real splitting is exercised
    for cfg, gm, prog in cases:
        check_against_program(cfg, gm, prog)


def test_valid_counts_by_brute_force():
    """im2col / dilated-dY valid counts against golden.gather on the full (unsplit) views."""
    for g in (ConvGeom(2, 3, 7, 6, 4, 3, 3, 2, 1), ConvGeom(1, 2, 9, 9, 3, 5, 5, 4, 2),
              ConvGeom(1, 1, 5, 5, 1, 1, 1, 2, 0)):
        big = preset("large").replace(spad_b_words=1 << 14, spad_a_words=1 << 14, acc_bits=64)
        _, b = driver.conv_fwd_descs(g, 0, 0)
        assert L.im2col_valid(g) == golden.gather(big, b, g.batch * g.ho * g.wo, g.cin * g.kh * g.kw)[1].sum()
        _, b = driver.conv_bwd_data_descs(g, 0, 0)
        assert L.dilated_dy_valid(g) == golden.gather(big, b, g.batch * g.h * g.w, g.cout * g.kh * g.kw)[1].sum()


def test_fallback_plan_for_rows_wider_than_the_driver_allows():
    g = ConvGeom(1, 64, 40, 40, 64, 3, 3, 1, 1)
    img = MemoryImage(CFG)
    x, w = img.alloc("x", (64, 1, 40, 40)), img.alloc("w", (64, 64, 3, 3))
    a, b = driver.conv_fwd_descs(g, x.base, w.base)
    with pytest.raises(DriverError, match="cannot be split"):
        driver.gemm_program(CFG, 64, 1600, 576, a, b, d_addr=0, d_si=1600, out_raw=True)
    gm = conv_gemm(g, "fwd")
    p = L.plan(CFG, gm)
    assert p.fallback and len(p.k_sizes) > 1
    total = 0
    for (m, n, k, acc, st), c in p.shapes().items():
        assert golden.check(CFG, L._probe(m, n, k, not acc, st)) == 0
        total += c * m * n * k
    assert total == gm.m * gm.n * gm.k          # the instructions tile M x N x K exactly
    cost = L.gemm_cost(CFG, gm)
    assert cost["fallback"] and cost["acc_writes"] > 0 and cost["busy_cycles"] >= cost["ideal_cycles"]


def test_unmappable_layer_names_layer_and_preset():
    gm = conv_gemm(ConvGeom(1, 4, 300, 300, 4, 3, 3, 1, 1), "fwd")
    gm.layer = "huge"
    with pytest.raises(L.PlanError, match=r"layer huge \(fwd.*preset 'small'"):
        L.plan(preset("small"), gm)


def test_depthwise_uses_one_array_row():
    net = networks.build("mobilenetv2/cifar10")
    dw = next(l for l in net.layers if l.groups > 1)
    for gm in L.layer_gemms(dw, 8):
        assert gm.repeat == dw.groups and gm.m == 1      # one output channel per group
        c = L.gemm_cost(CFG, gm)
        assert c["macs"] / (c["busy_cycles"] * CFG.rows * CFG.cols) <= 1 / CFG.rows


# ---------------------------------------------------------------- the RTL's own counters
def test_counters_equal_the_rtl(sim):
    """Every counter of the closed form equals the RTL's after running the program (Verilator)."""
    from cosim.execute import run_checked
    cases = []
    for g in (ConvGeom(4, 8, 8, 8, 16, 3, 3, 2, 1), ConvGeom(1, 3, 8, 8, 2, 5, 5, 2, 2),
              ConvGeom(2, 40, 6, 6, 12, 3, 3, 1, 1)):
        for kind in L.OPS:
            img, prog = conv_case(CFG, np.random.default_rng(1), g, kind)
            cases.append((img, prog, conv_gemm(g, kind)))
    for M, N, K, kw in ((20, 30, 1100, dict(out_raw=True)), (37, 21, 9, dict(relu=True, mask=True))):
        img, prog, _ = gemm_case(CFG, np.random.default_rng(3), M, N, K, **kw)
        cases.append((img, prog, matrix_gemm(M, N, K, **kw)))
    assert any(i["accumulate"] for _, prog, _ in cases for i in prog)
    for img, prog, gm in cases:
        res = run_checked(sim, CFG, img, prog, what=f"{gm.op} {gm.m}x{gm.n}x{gm.k}")
        want = L.gemm_cost(CFG, gm)
        got = {k: res.counters[k] for k in L.COUNTER_KEYS}
        assert got == {k: want[k] for k in L.COUNTER_KEYS}, (gm.op, gm.m, gm.n, gm.k)
