"""Analytic cycle model of the engine: the exact number of cycles the RTL's
``busy_cycles`` counter advances for one instruction, given the instruction and a
memory that accepts a request every cycle and answers after ``cfg.dram_latency``.

It follows the RTL's structure (see rtl/gather.py, rtl/engine.py, rtl/systolic.py):

* decode, products, check: 3 cycles; the sequencer and the gathers start at t=4;
* each gather: its walker builds a panel's L lane vectors in L cycles, the
  requester issues K requests; panel p's requests start after the hand-over at
      T_0 = 4 + L,   T_{p+1} = T_p + max(L + 1, K)
  and word k of the panel is visible to the sequencer at T_p + LAT + 3 + k;
* tiles run back to back in row-major order, one step per cycle, a new tile no
  sooner than max(K, 2R-1) after the previous one and no sooner than word 0 of
  both its panels (later words keep pace, one per cycle):
      S_t = max(S_{t-1} + max(K, 2R-1), readyA(ti), readyB(tj)),   S_0 >= 4
  and the flush marker follows the last tile by max(K, 2R-1);
* row i of a tile flushed/replaced at F leaves the array at F + 1 + C + 2i, then
  two drain stages and the output FIFO; each stored row costs one write cycle
  (the mask travels in the same beat).
Tile start times are computed with a running maximum in numpy, so the model
costs O(tiles) and extrapolates to layers far too large to simulate.
"""
from __future__ import annotations

import numpy as np

from rtl import isa
from rtl.config import AcceleratorConfig
from . import golden

DECODE = 3          # DECODE, PRODUCTS, CHECK
FIFO_LAT = 2        # SyncFIFOBuffered: a row pushed at X is at the write port at X + 2


def panel_ready(cfg: AcceleratorConfig, lanes: int, n_panels: int, k: int) -> np.ndarray:
    """Cycle at which word 0 of each panel is visible to the sequencer; the panel's
    other words follow one per cycle, so a tile started then never waits again."""
    t0 = DECODE + 1 + lanes
    T = t0 + np.arange(n_panels, dtype=np.int64) * max(lanes + 1, k)
    return T + cfg.dram_latency + 3


def tile_starts(cfg: AcceleratorConfig, m: int, n: int, k: int) -> np.ndarray:
    R, C = cfg.rows, cfg.cols
    nm, nn = -(-m // R), -(-n // C)
    ra = panel_ready(cfg, R, nm, k)
    rb = panel_ready(cfg, C, nn, k)
    ready = np.maximum(ra[:, None], rb[None, :]).ravel()
    ready[0] = max(ready[0], DECODE + 1)
    period = max(k, cfg.drain_period)
    idx = np.arange(len(ready), dtype=np.int64)
    # S_t = max_{t' <= t} (ready_t' + (t - t') * period)
    return np.maximum.accumulate(ready - idx * period) + idx * period


def instruction_cycles(cfg: AcceleratorConfig, ins: dict) -> int:
    """busy_cycles of one instruction (decode to retirement)."""
    if golden.check(cfg, ins) or ins.get("opcode", isa.OP_GEMM) == isa.OP_NOP:
        return DECODE
    R, C = cfg.rows, cfg.cols
    m, n, k = ins["m"], ins["n"], ins["k"]
    nm = -(-m // R)
    S = tile_starts(cfg, m, n, k)
    period = max(k, cfg.drain_period)
    flush = int(S[-1]) + period
    def leaves(capture, i):
        return capture + 1 + C + 2 * i
    last_row = leaves(flush, R - 1)
    end = last_row + 2                           # s1 and s2 stages empty
    if ins.get("store", 1):
        # the last stored row is the last tile's last row inside M
        i_last = m - 1 - (nm - 1) * R
        x = leaves(flush, i_last)
        end = max(end, x + 2 + FIFO_LAT + 1)
    return end


def program_cycles(cfg: AcceleratorConfig, prog: list[dict]) -> int:
    return sum(instruction_cycles(cfg, ins) for ins in prog)


def ideal_cycles(cfg: AcceleratorConfig, m: int, n: int, k: int) -> int:
    """ceil(M/R) * ceil(N/C) * K: every cycle a useful step of the array."""
    return -(-m // cfg.rows) * -(-n // cfg.cols) * k


def scalesim_os_cycles(cfg: AcceleratorConfig, m: int, n: int, k: int) -> int:
    """SCALE-Sim v2's output-stationary estimate (folds do not overlap)."""
    R, C = cfg.rows, cfg.cols
    return -(-m // R) * -(-n // C) * (R + C + k - 2) - 1
