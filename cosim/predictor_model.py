"""Analytic cycle model of the predictor side and of its overlap with the engine
(rtl/accelerator.py), for GP steps run back to back.

Per layer l (in program order over all steps) it computes, from the RTL's structure:

* engine: instruction i of the layer is accepted at ``a_i`` and is busy for
  ``E_i = cyclemodel.instruction_cycles``; the next one can be accepted at
  ``a_i + E_i + 1`` (the engine's IDLE cycle), later if a fence holds it.
  The layer's last write beat fires at ``a + T_rel`` (:func:`last_beat_rel`).
* reorganization unit (predictor_hw/reorg.py): each lane of a beat is registered (s1),
  decoded (sa, sb), its sum read (sc) and written (sw); the bank is handed over
  ``HANDOVER`` = 6 cycles after the last beat, the next descriptor is accepted then and
  the layer is armed one cycle later (the ``wait_arm`` fence of the next layer's first
  instruction); the first descriptor, offered at cycle 0, is taken at cycle ``DESC_SEEN``.
  The finisher starts the scan the cycle after the hand-over (or after the previous
  layer's DONE), reads one sum per cycle (SCAN), then SHIFT x5 and per
  sample FILL (its sums), WAIT (the quantizer pipeline), EMIT
  (``predictor_hw.reorg.emit_cycles``).
* samples FIFO (2 cycles), predictor array job (``predictor_array_cycles`` busy
  cycles, jobs one after another), rows FIFO (2 cycles) and update unit (7 cycles
  per row: ROW, REQ, 2 x RESP at memory latency 2, WRITE); rows come a tile apart
  (>= F steps, the update keeps pace) except the last tile's, which leave one per
  cycle at the job's end: the layer's update is done 7 cycles per such row later.
* ``wait_upd`` fences: the first instruction of a layer in step s+1 waits for that
  layer's update of step s.
The run ends when the last update is done (the harness stops one cycle later).
``pred_busy_cycles`` (the predictor side working: reorg scan/emit, either FIFO holding
data, the array, the update unit with a row in flight) is the union over layers of
[scan start, update done): each layer's span is gap-free.
"""
from __future__ import annotations

from dataclasses import dataclass

from predictor_hw import reorg as RO
from predictor_hw.predictor_array import Geometry, predictor_array_cycles
from . import cyclemodel as cm

HANDOVER = RO.HANDOVER               # last beat -> bank FULL (finisher may start scanning the next cycle)
DESC_SEEN = RO.DESC_SEEN            # a descriptor is taken at the earliest DESC_SEEN cycles after it is offered
ACCEPT_TO_ARMED = HANDOVER + 1        # last beat -> next layer armed (descriptor accepted at the hand-over)
FIFO_LAT = 2             # SyncFIFOBuffered: written at t, readable at t + 2
UPD_ROW = 7              # update unit cycles per row (ROW, REQ, RESP x LAT, CALC, COPY, WRITE) at latency 2


# The update unit's one-cycle states per BP row (predictor_hw/update.py); GRESP and RESP
# each wait the memory's latency on top
BP_ROW_STATES = ("GROW", "GROW2", "GREQ", "REQ", "CALC", "COPY", "WRITE")


def update_from_mem_cycles(cfg, c_out: int, k: int) -> int:
    """Cycles the update unit works on a BP update whose true gradient (int8 [c_out, k])
    it reads from memory (``from_mem``): per row of ``pred_cols`` weights GROW, GROW2, GREQ,
    GRESP x latency, REQ, RESP x latency, CALC, COPY, WRITE; rows back to back (the
    ``working`` span, which is what ``pred_busy_cycles`` counts in a run without GP work)."""
    rows = c_out * -(-k // cfg.pred_cols)
    return rows * (len(BP_ROW_STATES) + 2 * cfg.dram_latency)


def last_beat_rel(cfg, ins: dict) -> int:
    """Cycle (relative to the instruction's acceptance) of its last write beat."""
    R = cfg.rows
    m, n, k = ins["m"], ins["n"], ins["k"]
    nm = -(-m // R)
    S = cm.tile_starts(cfg, m, n, k)
    flush = int(S[-1]) + max(k, cfg.drain_period)
    i_last = m - 1 - (nm - 1) * R
    return cm.row_written(cfg, flush, i_last)


def reorg_emit(cfg, kind: str, c_out: int) -> tuple[int, list[int]]:
    """(cycles from scan start to DONE, sample hand-over offsets from scan start):
    predictor_hw.reorg.emit_cycles (scan one sum per cycle, then per sample FILL, WAIT, EMIT)."""
    return RO.emit_cycles(cfg, kind, c_out)


def union_length(spans) -> int:
    """Cycles covered by the union of half-open intervals [start, end)."""
    total, cur = 0, None
    for a, b in sorted(spans):
        if cur is None or a > cur[1]:
            total += cur[1] - cur[0] if cur else 0
            cur = [a, b]
        else:
            cur[1] = max(cur[1], b)
    return total + (cur[1] - cur[0] if cur else 0)


def last_tile_rows(cfg, k: int) -> int:
    """Gradient rows of a sample's last fc tile (predictor_hw.predictor_array.Geometry)."""
    g = Geometry(cfg)
    return g.rows_of(k) - (g.n_kb(k) - 1) * g.R


@dataclass
class LayerSpec:
    name: str
    kind: str
    c_out: int
    fan_in: int
    instrs: list               # the layer's engine instructions (dicts)


def gp_timeline(cfg, layers: list[LayerSpec], steps: int, gates_per_layer: bool = False) -> dict:
    """Cycle-level timeline of ``steps`` GP steps; returns the counters it predicts
    (and, with ``gates_per_layer``, the fence cycles in front of each layer)."""
    nl = len(layers)
    seq = [layers[i] for _ in range(steps) for i in range(nl)]
    t = 0                         # next cycle the engine can accept an instruction
    # cycle the reorg can take the next descriptor (bank free & previous handed over): the
    # first is offered at cycle 0 and taken a cycle later (its checks are registered first)
    armed_free = DESC_SEEN
    bank_free = [0, 0]
    fin_free = 0                  # finisher free
    arr_free = 0                  # array free for the next job
    upd_free = 0                  # update unit free
    upd_done = []                 # cycle each layer's update is done (counter visible)
    gate = 0
    gates = []
    spans = []
    eng_busy = 0
    arr_busy = 0
    rows = 0
    for idx, L in enumerate(seq):
        bank = idx % 2
        # descriptor accept: the previous layer handed over and this layer's bank is free
        arm = max(armed_free, bank_free[bank]) + 1
        first = True
        for ins in L.instrs:
            ready = t
            if first:
                ready = max(ready, arm)
                if idx >= nl:
                    ready = max(ready, upd_done[idx - nl])
                gate += ready - t
                gates.append(ready - t)
                first = False
            a = ready
            E = cm.instruction_cycles(cfg, ins)
            eng_busy += E
            last_beat = a + last_beat_rel(cfg, ins)
            t = a + E + 1
        handed = last_beat + HANDOVER
        armed_free = handed
        # finisher
        scan = max(handed + 1, fin_free)
        done_rel, offs = reorg_emit(cfg, L.kind, L.c_out)
        fin_free = scan + done_rel
        bank_free[bank] = fin_free
        # array job: first sample readable from the FIFO
        first_sample = scan + offs[0] + FIFO_LAT
        start = max(first_sample, arr_free)
        ac = predictor_array_cycles(cfg, L.c_out, L.fan_in)
        arr_busy += ac["busy_cycles"]
        job_end = start + ac["busy_cycles"]
        arr_free = job_end + 1
        rows += ac["out_beats"]
        # update: the last fc tile's rows leave the array one per cycle, the last at job_end;
        # earlier rows came a tile (>= F steps) apart and were done long before
        rl = last_tile_rows(cfg, L.fan_in)
        upd_end = max(job_end - rl + 1 + FIFO_LAT, upd_free) + rl * UPD_ROW
        upd_free = upd_end
        upd_done.append(upd_end)
        spans.append((scan, upd_end))
    # the harness sees the unit idle one cycle after the last WRITE, the engine BUSY_TAIL
    # cycles after its IDLE cycle
    end = max(t + cm.BUSY_TAIL, upd_free + 1)
    extra = {"gates": gates, "spans": spans} if gates_per_layer else {}
    return dict(**extra, run_cycles=end, gate_cycles=gate, pred_busy_cycles=union_length(spans), busy_cycles=eng_busy, array_busy_cycles=arr_busy,
                pred_rows=rows, samples=sum(L.c_out for L in seq),
                upd_elems=sum(L.c_out * L.fan_in for L in seq), upd_layers=len(seq),
                retired=sum(len(L.instrs) for L in seq))


def specs_from_run(run) -> list[LayerSpec]:
    """LayerSpecs of a cosim.accel_sim.GpRun (its first step)."""
    nl = len(run.layers)
    return [LayerSpec(Ld["name"], Ld["kind"], Ld["geom"].cout, Ld["cap"].fan_in, run.fwd_instr[i])
            for i, Ld in enumerate(run.layers[:nl])]
