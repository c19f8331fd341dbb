"""The engine's RTL on Verilator, driven through cocotb (tb/server.py): every
result bit-exact against the golden model, every busy-cycle count exact against
the analytic cycle model, bad input answered by an error status."""
import numpy as np
import pytest
import torch

from cosim.cnn_pass import CnnPass
from cosim.driver import ConvGeom, MemoryImage
from cosim import driver, golden
from cosim.execute import MismatchError, run_checked
from model_sw.data import load_digits_split
from model_sw.models import CNN
from rtl import isa
from rtl.config import preset
from tests.rtl_cases import conv_case, gemm_case, raw_gemm

CFG = preset("small")


def gathered_bytes(cfg, prog):
    """External bytes the gathers must read: the elements inside the operands (the
    golden model's gather masks), each once per instruction."""
    return cfg.op_bytes * sum(int(golden.gather(cfg, ins["a"], ins["m"], ins["k"])[1].sum())
                              + int(golden.gather(cfg, ins["b"], ins["n"], ins["k"])[1].sum())
                              for ins in prog)


def test_random_gemms_bit_exact_and_cycle_exact(sim):
    rng = np.random.default_rng(11)
    for trial in range(24):
        M, N, K = (int(v) for v in rng.integers(1, 30, 3))
        if trial % 6 == 0:
            K = 1
        if trial % 6 == 1:
            K = int(rng.integers(100, 700))      # > scratchpad share: split K, accumulate-into
        img, prog, _ = gemm_case(CFG, rng, M, N, K, ta=bool(trial & 1), tb=bool(trial & 2),
                                 relu=bool(trial & 4), mask=trial % 3 == 0, out_raw=trial % 5 == 0)
        res = run_checked(sim, CFG, img, prog, what=f"gemm {M}x{N}x{K} #{trial}")
        assert res.counters["rd_bytes"] == gathered_bytes(CFG, prog)


def test_gemm_equals_numpy(sim):
    rng = np.random.default_rng(3)
    img, prog, want = gemm_case(CFG, rng, 13, 11, 37, out_raw=True)
    run_checked(sim, CFG, img, prog)
    assert (img.get("d") == want).all()


@pytest.mark.parametrize("kind", ["fwd", "bwd_weight", "bwd_data"])
@pytest.mark.parametrize("g", [ConvGeom(2, 3, 6, 5, 4, 3, 3, 1, 1), ConvGeom(2, 2, 7, 7, 5, 3, 3, 2, 1),
                               ConvGeom(1, 3, 8, 8, 2, 5, 5, 2, 2)], ids=str)
def test_conv_layers(sim, g, kind):
    img, prog = conv_case(CFG, np.random.default_rng(7), g, kind)
    res = run_checked(sim, CFG, img, prog, what=f"conv {kind} {g}")
    assert res.counters["rd_bytes"] == gathered_bytes(CFG, prog)


def test_random_backpressure_still_bit_exact(sim):
    rng = np.random.default_rng(5)
    for trial, stall in enumerate((32, 128, 200)):
        img, prog, _ = gemm_case(CFG, rng, 9, 14, 23, mask=True, relu=True)
        res = run_checked(sim, CFG, img, prog, stall_prob=stall, stall_seed=trial + 3)
        assert res.counters["busy_cycles"] > res.model_cycles      # it did stall
        assert res.counters["stall_cycles"] > 0


def test_fault_injection_is_caught(sim):
    rng = np.random.default_rng(9)
    img, prog, _ = gemm_case(CFG, rng, 8, 8, 8, out_raw=True)
    with pytest.raises(MismatchError, match=r"first at d\[2, 3\]"):
        run_checked(sim, CFG, img, prog, fault_addr=img.tensors["d"].base + 2 * 8 + 3)


@pytest.mark.parametrize("bad,code", [
    (dict(opcode=9), isa.ERR_OPCODE),
    (dict(k=0), isa.ERR_ZERO_DIM),
    (dict(m=64, k=200), isa.ERR_SPAD_A),
    (dict(n=64, k=200), isa.ERR_SPAD_B),
    (dict(store=0, m=64, n=64, k=2), isa.ERR_ACC),
    (dict(d_addr=(1 << 16) - 5), isa.ERR_ADDR_WRITE),
    # each bound's terms on their own: a negative row stride below 0, a column stride
    # past the top, and the same for the mask write (which shares the column stride)
    (dict(d_addr=5, d_si=-4), isa.ERR_ADDR_WRITE),
    (dict(d_addr=(1 << 16) - 20, d_si=1, d_sj=8), isa.ERR_ADDR_WRITE),
    (dict(write_mask=1, mask_addr=2, mask_si=-4), isa.ERR_ADDR_WRITE),
    (dict(write_mask=1, mask_addr=(1 << 16) - 20, mask_si=1, d_si=1, d_sj=8), isa.ERR_ADDR_WRITE),
    (dict(shift=40, out_raw=0), isa.ERR_SHIFT),
])
def test_bad_instruction_raises_error_status_and_touches_nothing(sim, bad, code):
    img = MemoryImage(CFG)
    img.put("all", np.arange(128) - 64)
    ins = raw_gemm(CFG, **bad)
    res = run_checked(sim, CFG, img, [ins])          # golden expects the same code, memory unchanged
    assert res.error == code
    assert (img.get("all") == np.arange(128) - 64).all()
    # nor does it read or fill a scratchpad (no gather started: each has its own start copy)
    assert (res.counters["rd_bytes"], res.counters["spad_writes"], res.counters["compute_cycles"]) == (0, 0, 0), res.counters


@pytest.mark.parametrize("mn,acc_addr", [(4, 124), (4, 125), (4, 127), (8, 112), (8, 113), (9, 92), (9, 93)])
def test_accumulator_bound_is_exact(sim, mn, acc_addr):
    """ERR_ACC holds exactly when the instruction's accumulator rows (R per tile) pass the
    SRAM's end: the bound written from the ISA's rule, checked at its edge."""
    img = MemoryImage(CFG)
    img.put("all", np.arange(128) - 64)
    rows = -(-mn // CFG.rows) * -(-mn // CFG.cols) * CFG.rows
    res = run_checked(sim, CFG, img, [raw_gemm(CFG, store=0, m=mn, n=mn, acc_addr=acc_addr)])
    assert res.error == (isa.ERR_ACC if acc_addr + rows > CFG.acc_words else isa.ERR_NONE)


@pytest.mark.parametrize("bounds", [
    dict(d_addr=15, d_si=-4, d_sj=-1),                                  # lowest word 0
    dict(d_addr=(1 << 16) - 1 - 24 - 3, d_si=1, d_sj=8),                # highest word 2**16 - 1
    dict(write_mask=1, mask_addr=3 * 9, mask_si=-9, d_sj=1),            # mask from word 0
    dict(write_mask=1, mask_addr=(1 << 16) - 1 - 3 * 9 - 3, mask_si=9, d_sj=1),
])
def test_writes_reaching_the_memory_edges_run(sim, bounds):
    """The write bounds' checks are not too strict: writes that reach the first or the
    last word exactly run, and memory holds what the golden model writes."""
    img = MemoryImage(CFG)
    img.put("all", np.zeros(CFG.mem_words, dtype=np.int64))    # all of it loaded and compared
    img.mem[200:232] = np.arange(32) % 7 - 3                    # the operands, clear of the writes
    ins = raw_gemm(CFG, a=driver.matrix_desc(200, 4, 1), b=driver.matrix_desc(216, 1, 4), **bounds)
    try:
        res = run_checked(sim, CFG, img, [ins])
    finally:
        # the simulator is shared and later tests load only their own words: leave the
        # words written here at zero, as those tests' golden models assume
        sim.load_mem(np.zeros(CFG.mem_words, dtype=np.int64))
    assert res.error == isa.ERR_NONE


def test_read_out_of_range_flags_error_and_reads_zero(sim):
    img = MemoryImage(CFG)
    img.put("all", np.ones(128, dtype=np.int64))
    ins = raw_gemm(CFG, a={"base": CFG.mem_words - 8, "lane": [{"count": 0xFFFF, "step": {"cb": 4}}, {}, {}],
                            "k": [{"count": 0xFFFF, "step": {"cb": 1}}, {}, {}]})
    res = run_checked(sim, CFG, img, [ins])
    assert res.error == isa.ERR_ADDR_READ


def test_cnn_forward_backward_on_digits(sim):
    torch.manual_seed(0)
    data = load_digits_split()
    model = CNN()
    p = CnnPass(CFG, model, data.x_train[:8], data.y_train[:8])
    for op in p.forward_ops():
        run_checked(sim, CFG, p.img, op.prog, what=f"{op.layer} {op.kind}")
    p.put_logit_grad()
    for ops, host_step in p.backward_stages():
        for op in ops:
            run_checked(sim, CFG, p.img, op.prog, what=f"{op.layer} {op.kind}")
        host_step()
    errs = p.errors_vs_torch()
    # Stated tolerance of 8-bit operands with per-tensor power-of-two scales: max error
    # relative to the tensor's range, <= 0.08 forward and <= 0.25 for weight gradients
    # (they carry the rounding of every tensor before them).
    for k, e in errs.items():
        assert e <= (0.08 if k in ("h1", "h2", "logits") else 0.25), (k, e, errs)


def test_engine_watchdog_reports_a_run_that_does_not_finish(sim):
    from cosim.rtlsim import SimError
    from rtl import isa as _isa
    rng = np.random.default_rng(1)
    img, prog, _ = gemm_case(CFG, rng, 16, 16, 64)
    sim.load_mem(img.mem, 0, img.top)
    sim.load_program([_isa.encode(CFG, ins) for ins in prog])
    with pytest.raises(SimError, match="did not finish in 50 cycles"):
        sim.run(len(prog), watchdog_cycles=50)
    # the simulator is still usable afterwards
    run_checked(sim, CFG, img, prog)


def test_unknown_or_missing_simulator_is_a_clear_error():
    from cosim.rtlsim import SimError, check_simulator
    with pytest.raises(SimError, match="unknown simulator 'modelsim'"):
        check_simulator("modelsim")
