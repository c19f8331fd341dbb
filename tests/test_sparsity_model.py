"""Golden model and cycle model of sparse execution (no simulator): the golden
result is the dense result then masking (checked against numpy), the cycle model
needs the operands for data-dependent modes and behaves as the scheme predicts.
(Its exactness against the RTL is checked in tests/test_sparsity.py.)"""
import numpy as np
import pytest

from cosim import cyclemodel, golden
from cosim.execute import golden_run
from model_sw import numerics
from rtl.config import preset
from cosim.bench_sparsity import mask_iid, mask_pixels, masked_gemm_case

CFG = preset("default")


@pytest.mark.parametrize("dens", [1.0, 0.5, 0.05, 0.0])
def test_golden_is_dense_then_masked(dens):
    rng = np.random.default_rng(1)
    M, N, K = 8, 50, 30
    om = mask_iid(rng, (M, N), dens)
    for oc in (False, True):
        img, prog, A, B = masked_gemm_case(CFG, rng, M, N, K, mask_iid(rng, (M, K), dens), om,
                                           compact=True, ocompact=oc)
        img.mem[img.tensors["d"].base:img.tensors["d"].base + M * N] = -5
        mem, err = golden_run(CFG, img, prog)
        q, _ = numerics.requantize(A @ B, 6, CFG.op_bits, False)
        t = img.tensors["d"]
        assert err == 0
        assert (mem[t.base:t.base + t.size].reshape(M, N) == np.asarray(q) * om).all()


def test_data_dependent_modes_need_the_memory_image():
    rng = np.random.default_rng(2)
    for kw in (dict(compact=True), dict(compact=False, ocompact=True)):
        img, prog, _, _ = masked_gemm_case(CFG, rng, 8, 16, 8, np.ones((8, 8), dtype=np.int64),
                                           np.ones((8, 16), dtype=np.int64), **kw)
        with pytest.raises(ValueError, match="pass the memory image"):
            cyclemodel.instruction_cycles(CFG, prog[0])
        assert cyclemodel.program_cycles(CFG, prog, img.mem) > 0


def test_skipping_follows_word_density_when_reuse_is_high():
    """A layer too big to simulate: with pixel-structured masks and 16 tiles of
    reuse each way, zero-word skipping approaches 1/density; with i.i.d. masks the
    words (R elements) are rarely all zero and it cannot."""
    R, C = CFG.rows, CFG.cols
    M, N, K = 16 * R, 16 * C, 64
    speed = {}
    for name, gen in (("pixel", mask_pixels), ("iid", mask_iid)):
        g = gen(np.random.default_rng(3), (M, K), 0.25)
        img, prog, _, _ = masked_gemm_case(CFG, np.random.default_rng(4), M, N, K, g, compact=True)
        dense = cyclemodel.program_cycles(CFG, [{**i, "compact_a": 0} for i in prog])
        speed[name] = dense / cyclemodel.program_cycles(CFG, prog, img.mem)
    assert speed["pixel"] > 2.5, speed
    assert speed["iid"] < 1.2, speed


def test_all_zero_output_mask_costs_a_walk_not_a_computation():
    rng = np.random.default_rng(5)
    M, N, K = 8, 128, 64
    img, prog, _, _ = masked_gemm_case(CFG, rng, M, N, K, np.ones((M, K), dtype=np.int64),
                                       np.zeros((M, N), dtype=np.int64), compact=False, ocompact=True)
    dense = cyclemodel.program_cycles(CFG, [{**i, "ocompact": 0} for i in prog])
    sparse = cyclemodel.program_cycles(CFG, prog, img.mem)
    # the lane walk scans one column per cycle; no tile is computed
    assert N <= sparse < N + 4 * K < dense


def test_transposed_program_puts_the_other_operand_on_the_a_side():
    """gemm_program_t computes D = A.B as D^T = B^T.A^T (B on the engine's A side,
    where compact_a skips its zero words) and writes D in its own layout."""
    from cosim import driver
    from cosim.driver import MemoryImage
    rng = np.random.default_rng(6)
    M, N, K = 5, 19, 23
    A = rng.integers(-128, 128, (M, K))
    B = rng.integers(-128, 128, (K, N)) * (rng.random((K, N)) < 0.3)
    img = MemoryImage(CFG)
    a, b, d = img.put("a", A), img.put("b", B), img.alloc("d", (M, N))
    prog = driver.gemm_program_t(CFG, M, N, K, driver.matrix_desc(a.base, K, 1),
                                 driver.matrix_desc(b.base, 1, N), d_addr=d.base, d_si=N, d_sj=1,
                                 out_raw=True, compact_a=True)
    assert prog[0]["m"] == N and prog[0]["n"] == M and prog[0]["compact_a"] == 1
    mem, err = golden_run(CFG, img, prog)
    assert err == 0
    assert (mem[d.base:d.base + M * N].reshape(M, N) == A @ B).all()


@pytest.mark.parametrize("name,gen", [("pixel", mask_pixels), ("iid", mask_iid)])
def test_cheaper_skipping_keeps_the_cheaper_program_from_one_golden_pass(name, gen):
    """The trainer's choice between zero skipping and the dense walk: the one shared
    golden pass gives each program's cycles as modelling each program on its own does
    (over a program of two instructions), and the kept program is the cheaper one with
    the same result: at 2x2 tiles pixel masks make skipping pay, i.i.d. masks do not."""
    from dataclasses import dataclass
    from cosim.train import cheaper_skipping

    @dataclass
    class Op:
        prog: list
    R, C = CFG.rows, CFG.cols
    M, N, K = 2 * R, 2 * C, 64
    g = gen(np.random.default_rng(6), (M, K), 0.25)
    img, prog, _, _ = masked_gemm_case(CFG, np.random.default_rng(7), M, N, K, g, compact=True)
    prog = prog + prog
    dense = [{**i, "compact_a": 0} for i in prog]

    def alone(p):                            # each program modelled on its own memory copy
        mem, acc, total = img.mem.copy(), np.zeros((CFG.acc_words, CFG.cols), dtype=np.int64), 0
        for ins in p:
            total += cyclemodel.instruction_cycles(CFG, ins, mem)
            golden.execute(CFG, ins, mem, acc)
        return total

    want = [alone(dense), alone(prog)]
    assert cyclemodel.alike_program_cycles(CFG, [dense, prog], img.mem) == want
    kept = cheaper_skipping(CFG, Op(prog), img.mem).prog
    assert kept == (dense if want[0] <= want[1] else prog)
    assert (kept is prog) == (name == "pixel")
    assert (golden_run(CFG, img, kept)[0] == golden_run(CFG, img, prog)[0]).all()
    with pytest.raises(ValueError, match="one length"):
        cyclemodel.alike_program_cycles(CFG, [dense, prog[:1]], img.mem)
