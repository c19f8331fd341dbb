"""Sparse execution on the RTL (Verilator, `small`): hardware ReLU masking (omask),
zero-word skipping (compact_a) and output-column compaction (ocompact), at every
density on random and real masks.  Every run is checked bit-exactly against the
golden model and its busy cycles exactly against the cycle model (run_checked);
results are also compared with an independent numpy reference (dense product,
requantized by model_sw.numerics, then masked)."""
import numpy as np
import pytest
import torch

from cosim import driver
from cosim.cnn_pass import CnnPass
from cosim.driver import DriverError, MemoryImage
from cosim.execute import golden_run, run_checked
from model_sw import numerics
from model_sw.data import load_digits_split
from model_sw.models import CNN
from rtl import isa
from rtl.config import preset
from tests.rtl_cases import raw_gemm
from cosim.bench_sparsity import mask_iid, mask_pixels, masked_gemm_case

CFG = preset("small")
DENSITIES = (1.0, 0.5, 0.25, 0.1, 0.05, 0.0)


def reference(A, B, om, shift=6):
    """numpy: dense product, requantized (model_sw.numerics), then masked."""
    q, _ = numerics.requantize(A @ B, shift, CFG.op_bits, False)
    q = np.asarray(q)
    return q if om is None else q * om


@pytest.mark.parametrize("gen", [mask_iid, mask_pixels], ids=["iid", "pixel"])
def test_masked_gradient_skipping_every_density(sim, gen):
    """compact_a + omask: the gradient operand has zero words, the output is masked."""
    rng = np.random.default_rng(3)
    for dens in DENSITIES:
        M, N, K = 11, 14, 37
        g = gen(rng, (M, K), dens)
        om = gen(rng, (M, N), dens)
        img, prog, A, B = masked_gemm_case(CFG, rng, M, N, K, g, om, compact=True)
        res = run_checked(sim, CFG, img, prog, what=f"compact+omask {gen.__name__} d={dens}")
        assert (img.get("d") == reference(A, B, om)).all()
        assert res.counters["mask_rd_bits"] == M * N      # each mask bit inside the operand, once
        if dens == 0.0:   # every A word zero: one (zero) step per tile, at the drain period
            assert res.counters["compute_cycles"] == -(-M // CFG.rows) * -(-N // CFG.cols)


@pytest.mark.parametrize("gen", [mask_iid, mask_pixels], ids=["iid", "pixel"])
def test_output_column_compaction_every_density(sim, gen):
    """ocompact: only columns some row needs are computed; the rest are zero-written."""
    rng = np.random.default_rng(4)
    for dens in DENSITIES:
        for M, N, K in ((4, 45, 9), (3, 30, 16), (6, 21, 5)):   # M > R splits into row groups
            om = gen(rng, (M, N), dens)
            g = np.ones((M, K), dtype=np.int64)
            img, prog, A, B = masked_gemm_case(CFG, rng, M, N, K, g, om, compact=False, ocompact=True)
            img.mem[img.tensors["d"].base:img.tensors["d"].base + M * N] = 77   # stale data
            res = run_checked(sim, CFG, img, prog, what=f"ocompact {gen.__name__} d={dens} {M}x{N}x{K}")
            assert (img.get("d") == reference(A, B, om)).all()
            assert res.counters["mask_rd_bits"] == M * N  # each mask bit inside the operand, once
            cols = sum(int(om[r:r + CFG.rows].any(axis=0).sum()) for r in range(0, M, CFG.rows))
            full = sum(-(-c // CFG.cols) for c in [int(om[r:r + CFG.rows].any(axis=0).sum())
                                                   for r in range(0, M, CFG.rows)])
            assert res.counters["compute_cycles"] == full * K, (cols, full)


def test_sparse_modes_under_backpressure(sim):
    rng = np.random.default_rng(5)
    for trial, stall in enumerate((64, 160)):
        om = mask_pixels(rng, (4, 40), 0.3)
        img, prog, A, B = masked_gemm_case(CFG, rng, 4, 40, 12, mask_pixels(rng, (4, 12), 0.3), om,
                                           compact=True, ocompact=bool(trial))
        run_checked(sim, CFG, img, prog, stall_prob=stall, stall_seed=trial + 7)
        assert (img.get("d") == reference(A, B, om)).all()


def test_mask_queue_runs_dry_under_backpressure(sim):
    """omask with short K (a tile drains every few cycles) and the mask port stalled most
    cycles: the mask queue empties, so stage 1's rows must wait for their mask rows (the
    stall's mask-queue term and its level flags)."""
    rng = np.random.default_rng(21)
    for K, stall in ((1, 200), (2, 230), (1, 240)):
        M, N = 12, 20
        om = mask_iid(rng, (M, N), 0.5)
        img, prog, A, B = masked_gemm_case(CFG, rng, M, N, K, np.ones((M, K), dtype=np.int64), om,
                                           compact=False)
        res = run_checked(sim, CFG, img, prog, stall_prob=stall, stall_seed=K + stall,
                          what=f"omask K={K} stall={stall}")
        assert (img.get("d") == reference(A, B, om)).all()
        assert res.counters["stall_cycles"] > 0


def test_zero_write_queue_fills_under_backpressure(sim):
    """ocompact with (almost) every column dropped and the zero-write port stalled most
    cycles: gather B's lane walk fills the 4-entry zero-write queue and must wait for
    room (rtl.engine: its registered copy of the queue's ready); no zero write is lost."""
    rng = np.random.default_rng(9)
    for dens, stall in ((0.0, 200), (0.1, 230), (0.0, 128)):
        om = mask_pixels(rng, (4, 120), dens) if dens else np.zeros((4, 120), dtype=np.int64)
        img, prog, A, B = masked_gemm_case(CFG, rng, 4, 120, 9, np.ones((4, 9), dtype=np.int64), om,
                                           compact=False, ocompact=True)
        img.mem[img.tensors["d"].base:img.tensors["d"].base + 4 * 120] = 77   # stale data
        res = run_checked(sim, CFG, img, prog, stall_prob=stall, stall_seed=5)
        assert (img.get("d") == reference(A, B, om)).all()
        # each element of a dropped column is cleared once; kept columns are not cleared
        # (a zero write there would be overwritten by the data: only the count sees it)
        assert res.zero_lanes == 4 * int((~om.any(axis=0)).sum()), res.zero_lanes


def test_ocompact_ring_more_panels_than_the_info_ring(sim):
    """ocompact as a ring with more kept panels (~27) than the panel-info ring's 16
    entries (its index wraps), with and without memory back-pressure: bit-exact, and
    cycle-exact without back-pressure.  (The info ring never fills here: gather B hands
    a panel over per K cycles, no faster than the drain empties one.)"""
    rng = np.random.default_rng(6)
    for stall in (None, 200):
        om = mask_pixels(rng, (4, 120), 0.9)
        img, prog, A, B = masked_gemm_case(CFG, rng, 4, 120, 9, np.ones((4, 9), dtype=np.int64), om,
                                           compact=False, ocompact=True)
        if stall is None:
            run_checked(sim, CFG, img, prog, what="ocompact ring 4x120x9")
        else:
            run_checked(sim, CFG, img, prog, stall_prob=stall, stall_seed=3)
        assert (img.get("d") == reference(A, B, om)).all()


def test_ocompact_ring_word_counts_wrap(sim):
    """ocompact as a ring streaming more B words (75 panels x K=64 = 4800) than gather
    B's word counters hold (2**ptr_bits = 4096 at `small`): the counters wrap and the
    sequencer's modular compares (rtl.engine.carry_gt with ring_bits) keep the timing exact."""
    from rtl.gather import ring_ptr_bits
    M, N, K = 4, 300, 64
    assert -(-N // CFG.cols) * K > 2 ** ring_ptr_bits(CFG.spad_b_words)
    rng = np.random.default_rng(8)
    om = np.ones((M, N), dtype=np.int64)
    om[:, rng.choice(N, 7, replace=False)] = 0          # a few dropped columns
    img, prog, A, B = masked_gemm_case(CFG, rng, M, N, K, np.ones((M, K), dtype=np.int64), om,
                                       compact=False, ocompact=True)
    res = run_checked(sim, CFG, img, prog, what="ocompact ring wrap 4x300x64")
    assert (img.get("d") == reference(A, B, om)).all()
    assert res.counters["compute_cycles"] == -(-int(om.any(axis=0).sum()) // CFG.cols) * K


def test_digits_cnn_backward_with_hardware_masks(sim):
    """The digits CNN's forward and backward pass with the ReLU masks applied by the
    engine (no host step) and every sparse mode on, on its real masks."""
    torch.manual_seed(0)
    data = load_digits_split()
    model = CNN()
    p = CnnPass(CFG, model, data.x_train[:4], data.y_train[:4], sparse=True)
    q = CnnPass(CFG, model, data.x_train[:4], data.y_train[:4])      # same layout, dense programs
    for op in p.forward_ops():
        run_checked(sim, CFG, p.img, op.prog, what=f"{op.layer} {op.kind}")
    q.forward_ops()
    q.put_logit_grad()          # allocates g_logits like p (its values are not used)
    p.put_logit_grad()
    modes = set()
    dense_ops = [op for ops, _ in q.backward_stages() for op in ops]
    for ops, _ in p.backward_stages():
        for op in ops:
            g_dense = None
            dop = dense_ops.pop(0)
            if op.kind == "bwd_data":   # what the host used to do: dense result * mask
                assert dop.out == op.out and q.img.tensors[op.out].base == p.img.tensors[op.out].base
                plain = [{k: v for k, v in ins.items() if k != "omask"} for ins in dop.prog]
                mem, _ = golden_run(CFG, p.img, plain)
                t = p.img.tensors[op.out]
                g_dense = mem[t.base:t.base + t.size].reshape(t.shape)
            run_checked(sim, CFG, p.img, op.prog, what=f"{op.layer} {op.kind} sparse")
            modes |= {k for ins in op.prog for k in ("omask", "ocompact", "compact_a") if ins.get(k)}
            if g_dense is not None:
                act = {"g_h2": "h2", "g_h1": "h1"}[op.out]
                assert (p.img.get(op.out) == g_dense * p.img.get("mask_" + act)).all()
    assert modes == {"omask", "ocompact", "compact_a"}
    errs = p.errors_vs_torch()
    for k, e in errs.items():      # the tolerances of test_engine_rtl's dense pass
        assert e <= (0.08 if k in ("h1", "h2", "logits") else 0.25), (k, e, errs)


@pytest.mark.parametrize("bad,code", [
    (dict(omask=1, store=0, om_addr=100, om_si=4, om_sj=1), isa.ERR_MASK_SHAPE),
    (dict(omask=1, ocompact=1, m=8, om_addr=100, om_si=4, om_sj=1), isa.ERR_MASK_SHAPE),
    (dict(ocompact=1), isa.ERR_MASK_SHAPE),
    (dict(omask=1, ocompact=1, write_mask=1, mask_addr=200, mask_si=4, om_addr=100, om_si=4),
     isa.ERR_MASK_SHAPE),
    (dict(omask=1, om_addr=(1 << 16) - 6, om_si=4, om_sj=1), isa.ERR_MASK_ADDR),
    (dict(omask=1, om_addr=3, om_si=-4, om_sj=1), isa.ERR_MASK_ADDR),
])
def test_bad_mask_gives_error_status_and_touches_nothing(sim, bad, code):
    img = MemoryImage(CFG)
    img.put("all", np.arange(128) - 64)
    ins = raw_gemm(CFG, **bad)
    res = run_checked(sim, CFG, img, [ins])
    assert res.error == code
    assert (img.get("all") == np.arange(128) - 64).all()


def test_driver_names_the_bad_mask():
    cfg = CFG
    a, b = driver.matrix_desc(0, 4, 1), driver.matrix_desc(16, 1, 4)
    with pytest.raises(DriverError, match=r"om_addr=65530 .*span leaves memory"):
        driver.gemm_program(cfg, 4, 4, 4, a, b, d_addr=64, d_si=4, om_addr=65530, om_si=4)
    with pytest.raises(DriverError, match="ocompact needs the output mask"):
        driver.gemm_program(cfg, 4, 4, 4, a, b, d_addr=64, d_si=4, ocompact=True)
    with pytest.raises(DriverError, match=r"ocompact needs K=900 in one instruction"):
        driver.gemm_program(cfg, 4, 4, 900, driver.matrix_desc(0, 900, 1), driver.matrix_desc(0, 1, 4),
                            d_addr=64, d_si=4, om_addr=100, om_si=4, ocompact=True)
    with pytest.raises(DriverError, match=r"omask=1 with store=0"):
        driver.validate(cfg, raw_gemm(cfg, omask=1, store=0, om_addr=100), "layer")


def test_transposed_program_skips_the_sparse_b_operand(sim):
    """The sparse operand on the B side: gemm_program_t moves it to the engine's A side."""
    rng = np.random.default_rng(9)
    M, N, K = 6, 13, 29
    A = rng.integers(-128, 128, (M, K))
    B = rng.integers(-128, 128, (K, N)) * mask_pixels(rng, (N, K), 0.2).T
    img = MemoryImage(CFG)
    a, b, d = img.put("a", A), img.put("b", B), img.alloc("d", (M, N))
    prog = driver.gemm_program_t(CFG, M, N, K, driver.matrix_desc(a.base, K, 1),
                                 driver.matrix_desc(b.base, 1, N), d_addr=d.base, d_si=N, d_sj=1,
                                 out_raw=True, compact_a=True)
    res = run_checked(sim, CFG, img, prog, what="transposed compact_a")
    assert (img.get("d") == A @ B).all()
    assert res.counters["compute_cycles"] < -(-N // CFG.rows) * -(-M // CFG.cols) * K
