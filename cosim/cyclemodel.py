"""Analytic cycle model of the engine: the exact number of cycles the RTL's
``busy_cycles`` counter advances for one instruction, given the instruction and a
memory that accepts a request every cycle and answers after ``cfg.dram_latency``.

It follows the RTL's structure (see rtl/gather.py, rtl/engine.py, rtl/systolic.py):

* decode, the products (shift-and-add, one bit per cycle: ``mul_cycles`` = the
  longest bit length of M-1, N-1, ceil(M/R), ceil(N/C)), bounds, the
  check (registered), go: ``D = decode_cycles`` = 4 + ``mul_cycles``; the sequencer
  and the gathers start at t = D + 1 (an unknown opcode, a NOP or a zero dimension
  skips the products and retires after 4 cycles; other errors after D);
* each gather: its walker builds a panel's L lane vectors in L cycles, the
  requester issues K requests; panel p's requests start after the hand-over at
      T_0 = D + 1 + L,   T_{p+1} = T_p + max(L + 1, K)
  and word k of the panel is visible to the sequencer at T_p + LAT + WORD_STAGES + k
  (the registered request, the response register, the scratchpad write);
* tiles run back to back in row-major order, one step per cycle, a new tile no
  sooner than max(K, 2R-1) after the previous one and no sooner than word 0 of
  both its panels (later words keep pace, one per cycle):
      S_t = max(S_{t-1} + max(K, 2R-1), readyA(ti), readyB(tj)),   S_0 >= D + 1
  and the flush marker follows the last tile by max(K, 2R-1);
* row i of a tile flushed/replaced at F leaves the array at F + 3 + P + C + 2i
  (``row_leaves``: the registered scratchpad-B address, the scratchpad read, its
  output register, the PE's P product registers (``rtl.systolic.product_stages``: 2
  with ``fmax_logic``, else 1), C - 1 + 2i de-skew/drain-chain cycles
  and the row register), then
  the drain's ``DRAIN_STAGES`` registers (s1: accumulator read, s1x: its data
  registered, s1b: sum and accumulator write-back, s1c: the requantizer's first
  stage, s2: requantized; rows outside M or not stored stop after s1b:
  ``drain_empty``) and the output
  FIFO; each stored row costs one write cycle (the mask travels in the same
  beat), written at ``row_written``; the end test (the last row written, the
  drain empty, the gathers idle) is registered: a running instruction retires
  ``END_TEST_LAG`` = 1 cycle after it holds.
Tile start times are computed with a running maximum in numpy, so the model
costs O(tiles) and extrapolates to layers far too large to simulate.

Sparse execution (docs/sparsity.md):

* ``omask`` (output masking) never changes the timing: the mask reader runs ahead
  of the drain (``rtl.engine.mask_queue_rows``);
* ``compact_a`` (zero-word skipping) depends on the data, so the model takes the
  memory image: A panel p keeps its nonzero words k_0 < k_1 < ... (or one entry
  at k = K-1 if it has none); entry j is visible to the sequencer when the next
  nonzero word of its panel arrives, the last one when the panel's word K-1
  arrives, plus ``COMPACT_LAG`` = 2 (``readyA(p) + k_{j+1} + 2``, resp. ``readyA(p) + K + 1``), and its step also
  needs B's whole panel (``readyB(tj) + K - 1``: the sequencer does not wait for the
  entry's k before it decides, which keeps the side-memory read off the step's
  critical path).  Steps go one per cycle as soon as
  both are in, a tile's first step no sooner than 2R-1 after the previous
  tile's first step; the flush follows the last tile by 2R-1 and its last step
  by 1.  The model walks the steps (O(steps)).
* ``ocompact`` (output-column compaction, one tile row) changes when B's panels
  exist: the mask reader issues one column's mask per cycle (at most
  ``mask_queue_rows`` ahead of the lane walker), a column's mask vector can be
  popped LAT + 2 cycles after its request, and the walker keeps the columns that
  some row needs, C per panel.  :func:`lane_walk` replays these few registers
  cycle by cycle (O(N + panels*K) cycles); the tiles then follow the dense
  recurrence on the panels' hand-over times, the flush waits for the walk's
  end, and the zero-write queue must be empty (3 cycles after its last push)
  and gather A idle (its one panel's last response written, ``4 + R + K + LAT + 3``).
"""
from __future__ import annotations

import numpy as np

from rtl import isa
from rtl.config import AcceleratorConfig
from rtl.systolic import product_stages
from . import golden

DECODE = 4          # DECODE, PRODUCTS (bounds), CHECK, GO; plus MUL's mul_cycles for a GEMM
FIFO_LAT = 2        # SyncFIFOBuffered: a row pushed at X is at the write port at X + 2
DRAIN_STAGES = 5    # s1, s1x, s1b, s1c, s2: a row leaving the array at X is pushed at X + 5
ALL_ROWS_STAGES = 3  # s1, s1x, s1b: every row (s1b writes the accumulator SRAM); only
                     # stored rows inside M go on to s1c and s2
WORD_STAGES = 5     # a gathered word is visible LAT + 5 cycles after its panel's hand-over (stage A:
                    # geometry test and first address add, the request register, LAT, the response
                    # register of rtl/gather.py, the scratchpad write)
def array_in_stages(cfg: AcceleratorConfig) -> int:
    """Scratchpad B read one cycle after the step (its address registered), the read data
    registered before the array, the PE's product registers (rtl.systolic.product_stages)."""
    return 2 + product_stages(cfg)


COMPACT_LAG = 2     # compact_a: an entry counts as final two cycles after its response is written (the
                    # side-memory write is registered, and the sequencer's head entry is a register
                    # loaded from a fresh read a cycle after that write)
END_TEST_LAG = 1    # a running GEMM retires a cycle after its end test holds (the test registered)
BUSY_TAIL = 1       # the engine's `busy` output stays up this many cycles after retirement (the
                    # retirement registered before the counters; busy_cycles does not count them)


def row_leaves(cfg: AcceleratorConfig, flush: int, i: int) -> int:
    """Cycle tile row i leaves the array when the marker that ends its tile entered
    at ``flush``."""
    return flush + 1 + array_in_stages(cfg) + cfg.cols + 2 * i


def drain_empty(cfg: AcceleratorConfig, flush: int) -> int:
    """busy_cycles once the last tile's last row has passed the stages every row
    takes (stored rows inside M take longer: ``row_written``)."""
    return row_leaves(cfg, flush, cfg.rows - 1) + 1 + ALL_ROWS_STAGES


def row_written(cfg: AcceleratorConfig, flush: int, i: int) -> int:
    """Cycle of that row's write beat (the write port accepting every cycle)."""
    return row_leaves(cfg, flush, i) + DRAIN_STAGES + FIFO_LAT


def mul_cycles(cfg: AcceleratorConfig, m: int, n: int) -> int:
    """Cycles of the decode's shift-and-add multiplier (state MUL): one per bit of the
    longest multiplier (M-1, N-1 for the address bounds; ceil(M/R), ceil(N/C) for the
    scratchpad and accumulator checks)."""
    nm, nn = -(-m // cfg.rows), -(-n // cfg.cols)
    return max(1, (m - 1).bit_length(), (n - 1).bit_length(), nm.bit_length(), nn.bit_length())


def decode_cycles(cfg: AcceleratorConfig, m: int, n: int) -> int:
    """Cycles from intake to the sequencer's start (exclusive) of a GEMM that passes
    the zero-dimension check: DECODE, MUL, PRODUCTS, CHECK, GO."""
    return DECODE + mul_cycles(cfg, m, n)


def panel_ready(cfg: AcceleratorConfig, lanes: int, n_panels: int, k: int, dec: int) -> np.ndarray:
    """Cycle at which word 0 of each panel is visible to the sequencer (``dec``: the
    instruction's ``decode_cycles``); the panel's other words follow one per cycle,
    so a tile started then never waits again."""
    t0 = dec + 1 + lanes
    T = t0 + np.arange(n_panels, dtype=np.int64) * max(lanes + 1, k)
    return T + cfg.dram_latency + WORD_STAGES


def tile_starts(cfg: AcceleratorConfig, m: int, n: int, k: int) -> np.ndarray:
    R, C = cfg.rows, cfg.cols
    nm, nn = -(-m // R), -(-n // C)
    dec = decode_cycles(cfg, m, n)
    ra = panel_ready(cfg, R, nm, k, dec)
    rb = panel_ready(cfg, C, nn, k, dec)
    ready = np.maximum(ra[:, None], rb[None, :]).ravel()
    ready[0] = max(ready[0], dec + 1)
    period = max(k, cfg.drain_period)
    idx = np.arange(len(ready), dtype=np.int64)
    # S_t = max_{t' <= t} (ready_t' + (t - t') * period)
    return np.maximum.accumulate(ready - idx * period) + idx * period


def compact_entries(cfg: AcceleratorConfig, ins: dict, mem: np.ndarray) -> list[np.ndarray]:
    """Per A panel, the step indices k of its stored entries in compact mode."""
    R, m, k = cfg.rows, ins["m"], ins["k"]
    nm = -(-m // R)
    addr, en, _ = golden.gather(cfg, ins["a"], m, k)
    A = np.zeros((nm * R, k), dtype=np.int64)
    A[:m] = golden.operand_values(cfg, mem, addr, en)
    nzw = (A.reshape(nm, R, k) != 0).any(axis=1)
    return [np.nonzero(row)[0] if row.any() else np.array([k - 1]) for row in nzw]


def compact_flush(cfg: AcceleratorConfig, ins: dict, mem: np.ndarray) -> int:
    """Cycle of the flush marker of a compact_a instruction (see the module doc)."""
    R, C = cfg.rows, cfg.cols
    m, n, k = ins["m"], ins["n"], ins["k"]
    nm, nn = -(-m // R), -(-n // C)
    dec = decode_cycles(cfg, m, n)
    ra = panel_ready(cfg, R, nm, k, dec)
    rb = panel_ready(cfg, C, nn, k, dec)
    P = cfg.drain_period
    start, last = None, dec        # first step of the previous tile, last step so far
    for ti, ks in enumerate(compact_entries(cfg, ins, mem)):
        vis_a = (int(ra[ti]) + COMPACT_LAG + np.append(ks[1:], k - 1)).tolist()
        ks = ks.tolist()
        for tj in range(nn):
            b0 = int(rb[tj])
            b_all = b0 + k - 1           # the tile's whole B panel is in
            t = max(last + 1, vis_a[0], b_all, dec + 1 if start is None else start + P)
            start = last = t
            for j in range(1, len(ks)):
                last = max(last + 1, vis_a[j], b_all)
    return max(start + P, last + 1)


def lane_walk(cfg: AcceleratorConfig, ins: dict, keep: np.ndarray):
    """Gather B's lane walk in ocompact mode, replayed per cycle from start (t = D + 1).

    ``keep[l]``: some output row needs column l.  Returns (hand-over cycles T_p of
    the panels, first cycle the walk is done, last zero-queue push or None)."""
    from rtl.engine import mask_queue_rows
    L, K, N, LAT = cfg.cols, ins["k"], ins["n"], cfg.dram_latency
    mqd = mask_queue_rows(cfg)
    # mask reader: issued (registered) count, request on the bus, requests in flight
    issued, req_v, inflight = 0, False, 0
    fire_at = []                    # cycle each column's mask request is accepted
    last_pop = -1
    w_n = w_cnt = 0
    w_full = w_done = r_active = False
    r_k = 0
    T, zlast = [], None
    t = decode_cycles(cfg, ins["m"], N) + 1
    while not w_done:
        # ---- combinational decisions of cycle t (registers as of its start)
        fire = req_v
        if fire:
            fire_at.append(t)
        can_m = issued < N and inflight + req_v < mqd
        last_issue = r_active and r_k + 1 == K
        transfer = w_full and (not r_active or last_issue)
        no_more = w_cnt == 0 and w_n >= N
        walk = pop = False
        if not w_full and not no_more:
            if w_n >= N:
                walk = True                      # padding lanes of the last panel
            elif w_n < len(fire_at) and t >= max(fire_at[w_n] + LAT + 2, last_pop + 1):
                walk = pop = True
        # ---- register updates at the end of cycle t
        if pop:
            last_pop = t
        inflight += fire - pop
        if can_m:
            issued += 1
        req_v = can_m
        if walk:
            real = w_n < N
            w_n += 1
            if real and not keep[w_n - 1]:
                zlast = t
            else:
                if w_cnt == L - 1:
                    w_full, w_cnt = True, 0
                else:
                    w_cnt += 1
        if not w_full and no_more:
            w_done = True
        if r_active:
            r_k += 1
        if transfer:
            T.append(t)
            r_active, w_full, r_k = True, False, 0
        elif last_issue:
            r_active = False
        t += 1
    return np.array(T, dtype=np.int64), t, zlast


def ocompact_end(cfg: AcceleratorConfig, ins: dict, mem: np.ndarray) -> int:
    """The cycle an ocompact instruction's end test holds (see the module doc; it
    retires ``END_TEST_LAG`` later)."""
    R, C, K, m = cfg.rows, cfg.cols, ins["k"], ins["m"]
    keep = golden.output_mask(cfg, ins, mem).any(axis=0)
    T, walk_done, zlast = lane_walk(cfg, ins, keep)
    period = max(K, cfg.drain_period)
    end = walk_done + 1 if zlast is None else max(walk_done + 1, zlast + 3)
    # gather A (one panel) is idle once its last response is in
    dec = decode_cycles(cfg, m, ins["n"])
    end = max(end, dec + 1 + R + K + cfg.dram_latency + WORD_STAGES - 1)
    if len(T) == 0:
        return end
    ra = int(panel_ready(cfg, R, 1, K, dec)[0])
    ready = np.maximum(T + cfg.dram_latency + WORD_STAGES, ra)
    ready[0] = max(ready[0], dec + 1)
    idx = np.arange(len(T), dtype=np.int64)
    S = np.maximum.accumulate(ready - idx * period) + idx * period
    flush = max(int(S[-1]) + period, walk_done)
    return max(end, drain_empty(cfg, flush), row_written(cfg, flush, m - 1) + 1)


def instruction_cycles(cfg: AcceleratorConfig, ins: dict, mem: np.ndarray | None = None) -> int:
    """busy_cycles of one instruction (decode to retirement); ``mem`` (the memory
    image before the instruction) is needed for compact_a instructions only."""
    m, n, k = ins.get("m", 0), ins.get("n", 0), ins.get("k", 0)
    if ins.get("opcode", isa.OP_GEMM) != isa.OP_GEMM or 0 in (m, n, k):
        return DECODE
    if golden.check(cfg, ins):
        return decode_cycles(cfg, m, n)
    R, C = cfg.rows, cfg.cols
    nm = -(-m // R)
    if ins.get("ocompact", 0):
        if mem is None:
            raise ValueError("instruction_cycles: an ocompact instruction's timing depends on its "
                             "output mask: pass the memory image (mem=...)")
        return ocompact_end(cfg, ins, mem) + END_TEST_LAG
    if ins.get("compact_a", 0):
        if mem is None:
            raise ValueError("instruction_cycles: a compact_a instruction's timing depends on its "
                             "operands: pass the memory image (mem=...)")
        flush = compact_flush(cfg, ins, mem)
    else:
        S = tile_starts(cfg, m, n, k)
        flush = int(S[-1]) + max(k, cfg.drain_period)
    end = drain_empty(cfg, flush)
    if ins.get("store", 1):
        # the last stored row is the last tile's last row inside M
        i_last = m - 1 - (nm - 1) * R
        end = max(end, row_written(cfg, flush, i_last) + 1)
    return end + END_TEST_LAG


def program_cycles(cfg: AcceleratorConfig, prog: list[dict], mem: np.ndarray | None = None) -> int:
    """busy_cycles of a program; with ``mem`` (the image before it) the golden model
    runs alongside, so data-dependent (compact_a) instructions see their operands."""
    return alike_program_cycles(cfg, [prog], mem)[0]


def alike_program_cycles(cfg: AcceleratorConfig, progs: list[list[dict]],
                         mem: np.ndarray | None = None) -> list[int]:
    """busy_cycles of programs that compute the same values instruction by instruction
    (one program with and without zero skipping, say), from ONE golden pass over the
    first: only the sparse modes' cycles depend on the data, not the values written."""
    if len({len(p) for p in progs}) != 1:
        raise ValueError(f"alike programs must have one length each, got {[len(p) for p in progs]}")
    sparse = any(ins.get("compact_a", 0) or ins.get("ocompact", 0) for p in progs for ins in p)
    if mem is None or not sparse:
        return [sum(instruction_cycles(cfg, ins) for ins in p) for p in progs]
    mem = mem.copy()
    acc = np.zeros((cfg.acc_words, cfg.cols), dtype=np.int64)
    totals = [0] * len(progs)
    for step in zip(*progs):
        for i, ins in enumerate(step):
            totals[i] += instruction_cycles(cfg, ins, mem)
        golden.execute(cfg, step[0], mem, acc)
    return totals


def ideal_cycles(cfg: AcceleratorConfig, m: int, n: int, k: int) -> int:
    """ceil(M/R) * ceil(N/C) * K: every cycle a useful step of the array."""
    return -(-m // cfg.rows) * -(-n // cfg.cols) * k


def scalesim_os_cycles(cfg: AcceleratorConfig, m: int, n: int, k: int) -> int:
    """SCALE-Sim v2's output-stationary estimate (folds do not overlap)."""
    R, C = cfg.rows, cfg.cols
    return -(-m // R) * -(-n // C) * (R + C + k - 2) - 1
