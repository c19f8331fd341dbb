"""Properties of the analytic cycle model (its exactness against the RTL is checked
in the RTL tests on every simulated program)."""
import pytest

from cosim import cyclemodel
from cosim.driver import matrix_desc
from rtl.config import PRESETS, preset


def gemm(cfg, m, n, k):
    return {"opcode": 1, "m": m, "n": n, "k": k, "store": 1, "out_raw": 1,
            "a": matrix_desc(0, k, 1), "b": matrix_desc(0, 1, n), "d_addr": 0, "d_si": n, "d_sj": 1}


@pytest.mark.parametrize("name", ["small", "default", "large"])
def test_no_idle_array_between_tiles_goal(name):
    """M, N >= 4R and K >= 64 (memory keeping up): <= 1.10 x ceil(M/R)ceil(N/C)K."""
    cfg = preset(name)
    R, C = cfg.rows, cfg.cols
    worst = 0.0
    for fm in (4, 5, 8, 16):
        for fn in (4, 7, 8):
            for k in (64, 100, 128, 256):
                m, n = fm * R, fn * C
                if -(-m // R) * k > cfg.spad_a_words or -(-n // C) * k > cfg.spad_b_words:
                    continue
                ratio = cyclemodel.instruction_cycles(cfg, gemm(cfg, m, n, k)) / cyclemodel.ideal_cycles(cfg, m, n, k)
                worst = max(worst, ratio)
                # and it beats SCALE-Sim's output-stationary estimate
                assert cyclemodel.instruction_cycles(cfg, gemm(cfg, m, n, k)) < cyclemodel.scalesim_os_cycles(cfg, m, n, k)
    assert 1.0 < worst <= 1.10, worst


def test_small_k_is_limited_by_the_drain_period():
    cfg = preset("default")
    one = cyclemodel.instruction_cycles(cfg, gemm(cfg, 64, 64, 1))
    # 64 tiles, each at least 2R-1 cycles apart
    assert one >= 64 * cfg.drain_period


def test_bad_instruction_costs_decode_only():
    cfg = preset("small")
    assert cyclemodel.instruction_cycles(cfg, {**gemm(cfg, 4, 4, 4), "m": 0}) == cyclemodel.DECODE
