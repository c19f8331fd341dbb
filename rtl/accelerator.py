"""The Accelerator top: the training engine plus the ADA-GP predictor side.

::

    instr --gate--> Engine --wr--> external memory
                       |  (tap: valid & ready observed, never back-pressured)
                       v
                   ReorgUnit --samples--> PredictorArray --rows--> FIFO --> UpdateUnit
                       ^ rdesc (per layer)        ^ pweights, shift1/2      ^ udesc (per layer)
                                                                            | upd_rd / upd_wr: its
                                                                            v own memory port

Concurrency: the predictor side works on layer L's samples while the engine computes
layer L+1.  Two fences in the instruction word keep it correct and nothing else
waits: ``wait_arm`` holds an instruction (the first of a tapped layer) until the
reorganization unit has armed that layer (``arm_id``), i.e. its bank is free; and
``wait_upd`` holds an instruction until ``wait_upd`` layer updates have finished
(the first instruction that reads a layer's weights in the next step waits for that
layer's update from this step).

Errors: ``error`` packs the engine's status (bits 0-3), the reorganization unit's
(4-7), the predictor array's (8-9) and the update unit's (10-11); each is sticky.
"""
from __future__ import annotations

from amaranth import Module, Signal, Mux, Cat, unsigned
from amaranth.lib import wiring, stream, data, memory
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from predictor_hw.interfaces import grad_row_layout, sample_layout
from predictor_hw.predictor_array import PredictorArray, k_in_range, weight_layout, SHIFT_BITS
from predictor_hw.reorg import ReorgUnit, desc_layout
from predictor_hw.update import UpdateUnit, update_desc_layout, update_wr_layout
from . import isa
from .config import AcceleratorConfig
from .engine import Engine, COUNTER_BITS, counters_layout, mem_wr_layout, zero_wr_layout
from .gather import mem_rd_signature

ROWS_FIFO = 8
# Samples FIFO between the reorganization unit and the array: the reorg unit empties
# a bank in P*P + ~7 cycles per conv sample (reorg.emit_cycles), far fewer than the
# array's job per sample, so its two banks are free again long before the array has
# used the samples, and the next layers can be armed.
PRED_COUNTERS = (
    "pred_busy_cycles",   # predictor side working: reorg scan/emit, sample FIFO, array, row FIFO, update
    "gate_cycles",        # an instruction waited at a fence (the engine idle because of the predictor)
    "samples",            # predictor samples handed to the array
    "pred_rows",          # predicted gradient rows out of the array
    "upd_elems",          # weights updated
    "upd_layers",         # layer updates finished
    "array_busy_cycles",  # the array's own busy counter
)


class SyncFIFORegOut(wiring.Component):
    """A FIFO that behaves as ``amaranth.lib.fifo.SyncFIFOBuffered(width, depth)`` cycle
    for cycle (the same ``w_rdy``, ``r_rdy``, ``level`` and data order: written at t,
    readable at t + 2) but whose ``r_data`` are flip-flops, not a block RAM's read data
    (an ECP5 DP16KD without its output register: ~5.6 ns clock-to-out).

    The storage (``depth - 1`` words, block RAM) is read one cycle ahead: its address is
    the head *after* this cycle's move into the output register (``consume`` or the next
    word), so the head's word is on the read port's data when it moves; a word written at
    that address in the cycle it is read is forwarded from a register (``fwd``, ``wd_q``).
    (A read port declared transparent would be emitted as an asynchronous read at a
    registered address, and Yosys would merge the output register into the block RAM.)
    Depth 1 is SyncFIFOBuffered's single register (a write every other cycle).
    """

    def __init__(self, width: int, depth: int):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth={depth!r}: a FIFO holds at least one word")
        self.width, self.depth = width, depth
        super().__init__({
            "w_data": In(width), "w_en": In(1), "w_rdy": Out(1),
            "r_data": Out(width), "r_en": In(1), "r_rdy": Out(1),
            "level": Out(range(depth + 1)),
            "nonempty": Out(1),          # level != 0 without the level's adder (for Fmax)
        })

    def elaborate(self, platform):
        m = Module()
        if self.depth == 1:
            m.d.comb += [self.w_rdy.eq(self.level == 0), self.r_rdy.eq(self.level == 1),
                         self.nonempty.eq(self.level != 0)]
            with m.If(self.w_en & self.w_rdy):
                m.d.sync += [self.r_data.eq(self.w_data), self.level.eq(1)]
            with m.If(self.r_en & self.r_rdy):
                m.d.sync += self.level.eq(0)
            return m
        inner = self.depth - 1
        m.submodules.storage = mem = memory.Memory(shape=self.width, depth=inner, init=[])
        wp = mem.write_port()
        rp = mem.read_port()
        inner_level = Signal(range(inner + 1))
        produce, consume = Signal(range(inner)), Signal(range(inner))

        def incr(v):
            return Mux(v == inner - 1, 0, v + 1)

        do_write = self.w_en & self.w_rdy
        do_inner_read = (inner_level != 0) & (~self.r_rdy | self.r_en)
        m.d.comb += [self.w_rdy.eq(inner_level != inner),
                     wp.addr.eq(produce), wp.data.eq(self.w_data), wp.en.eq(do_write),
                     rp.addr.eq(Mux(do_inner_read, incr(consume), consume)),
                     self.level.eq(inner_level + self.r_rdy),
                     self.nonempty.eq((inner_level != 0) | self.r_rdy)]
        with m.If(do_write):
            m.d.sync += produce.eq(incr(produce))
        fwd, wd_q = Signal(), Signal(self.width)
        # produce == rp.addr, as two compares of registers chosen by the read decision (for
        # Fmax: the decision waits for the consumer's ready; the compare is not behind it)
        m.d.sync += [fwd.eq(do_write & Mux(do_inner_read, produce == incr(consume), produce == consume)),
                     wd_q.eq(self.w_data)]
        # The output register's ~150 enables do not wait for the inner level: it loads
        # whenever its word is gone or taken, valid or not (r_rdy says which), so the
        # level's compare drives only the local control (for Fmax: one wide enable net
        # from the level to beside the array split the FIFO's control across the die).
        with m.If(~self.r_rdy | self.r_en):
            m.d.sync += self.r_data.eq(Mux(fwd, wd_q, rp.data))
        with m.If(do_inner_read):
            m.d.sync += [consume.eq(incr(consume)), self.r_rdy.eq(1)]
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        with m.If(do_write & ~do_inner_read):
            m.d.sync += inner_level.eq(inner_level + 1)
        with m.If(do_inner_read & ~do_write):
            m.d.sync += inner_level.eq(inner_level - 1)
        return m


def accel_instr_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({
        "ins": isa.instr_layout(cfg),
        "wait_arm": unsigned(1),
        "arm_id": unsigned(8),
        "wait_upd": unsigned(16),
    })


def accel_instr_width(cfg: AcceleratorConfig) -> int:
    return accel_instr_layout(cfg).size


def encode(cfg: AcceleratorConfig, ins: dict, wait_arm: int = 0, arm_id: int = 0, wait_upd: int = 0) -> int:
    """An accelerator instruction word: the engine's encoding plus the fences."""
    if not 0 <= arm_id < 256 or not 0 <= wait_upd < 1 << 16:
        raise ValueError(f"arm_id={arm_id} must be in 0..255 and wait_upd={wait_upd} in 0..65535")
    iw = isa.instr_width(cfg)
    return isa.encode(cfg, ins) | (int(bool(wait_arm)) << iw) | (arm_id << (iw + 1)) | (wait_upd << (iw + 9))


def sample_entry_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One samples-FIFO entry: a predictor sample, its layer's fan-in K (the array latches
    it per job) and whether the array runs it (``k_in_range``, computed on the FIFO's write
    side so that the compare is not in front of the array's job-start decision)."""
    return data.StructLayout({
        "sample": sample_layout(cfg),
        "k": unsigned(cfg.dim_bits),
        "k_ok": unsigned(1),
    })


def pred_counters_layout() -> data.StructLayout:
    return data.StructLayout({n: unsigned(COUNTER_BITS) for n in PRED_COUNTERS})


def error_fields(err: int) -> dict:
    return {"engine": err & 15, "reorg": (err >> 4) & 15, "array": (err >> 8) & 3, "update": (err >> 10) & 3}


class Accelerator(wiring.Component):
    def __init__(self, cfg: AcceleratorConfig):
        self.cfg = cfg
        super().__init__({
            "instr": In(stream.Signature(accel_instr_layout(cfg))),
            "rd_a": Out(mem_rd_signature(cfg, cfg.rows)),
            "rd_b": Out(mem_rd_signature(cfg, cfg.cols)),
            "wr": Out(stream.Signature(mem_wr_layout(cfg))),
            "rd_m": Out(mem_rd_signature(cfg, cfg.cols)),          # the engine's ReLU-mask reads (sparsity)
            "wz": Out(stream.Signature(zero_wr_layout(cfg))),       # the engine's zero writes (ocompact)
            "rdesc": In(stream.Signature(desc_layout(cfg))),
            "udesc": In(stream.Signature(update_desc_layout(cfg))),
            "pweights": In(stream.Signature(weight_layout(cfg))),
            "shift1": In(SHIFT_BITS),
            "shift2": In(SHIFT_BITS),
            "upd_rd": Out(mem_rd_signature(cfg, cfg.pred_cols)),
            "upd_wr": Out(stream.Signature(update_wr_layout(cfg))),
            "busy": Out(1),
            "error": Out(12),
            "counters": Out(counters_layout(cfg)),
            "pcounters": Out(pred_counters_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.engine = eng = Engine(cfg)
        m.submodules.reorg = ro = ReorgUnit(cfg)
        m.submodules.array = pa = PredictorArray(cfg, k_ok_port=True)
        m.submodules.update = up = UpdateUnit(cfg)
        rl = grad_row_layout(cfg)
        m.submodules.rows_fifo = rf = SyncFIFOBuffered(width=rl.size, depth=ROWS_FIFO)
        # the FIFO's read data are flip-flops: the array's job-start decision reads them
        el = sample_entry_layout(cfg)
        m.submodules.samples_fifo = sf = SyncFIFORegOut(width=el.size, depth=cfg.pred_max_cout)
        sf_in = data.View(el, sf.w_data)
        sf_out = data.View(el, sf.r_data)

        # engine <-> memory, and the tap
        wiring.connect(m, eng.rd_a, wiring.flipped(self.rd_a))
        wiring.connect(m, eng.rd_b, wiring.flipped(self.rd_b))
        wiring.connect(m, eng.wr, wiring.flipped(self.wr))
        wiring.connect(m, eng.rd_m, wiring.flipped(self.rd_m))
        wiring.connect(m, eng.wz, wiring.flipped(self.wz))
        m.d.comb += [ro.tap.valid.eq(eng.wr.valid), ro.tap.ready.eq(self.wr.ready),
                     ro.tap.payload.eq(eng.wr.payload)]

        # instruction gate (fences)
        ins = self.instr.payload
        ok = Signal()
        m.d.comb += ok.eq((~ins.wait_arm | (ro.armed & (ro.armed_id == ins.arm_id)))
                          & (up.layers_done >= ins.wait_upd))
        m.d.comb += [eng.instr.payload.eq(ins.ins), eng.instr.valid.eq(self.instr.valid & ok),
                     self.instr.ready.eq(eng.instr.ready & ok)]

        # predictor side
        wiring.connect(m, wiring.flipped(self.rdesc), ro.desc)
        m.d.comb += [sf_in.sample.eq(ro.samples.payload), sf_in.k.eq(ro.layer_k),
                     sf_in.k_ok.eq(k_in_range(cfg, ro.layer_k)),
                     sf.w_en.eq(ro.samples.valid),
                     ro.samples.ready.eq(sf.w_rdy),
                     pa.samples.payload.eq(sf_out.sample), pa.samples.valid.eq(sf.r_rdy),
                     sf.r_en.eq(pa.samples.ready)]
        wiring.connect(m, wiring.flipped(self.pweights), pa.weights)
        m.d.comb += [pa.k.eq(sf_out.k), pa.k_ok.eq(sf_out.k_ok), pa.mode.eq(0), pa.shift1.eq(self.shift1),
                     pa.shift2.eq(self.shift2),
                     pa.feats.valid.eq(0), pa.logits.ready.eq(1)]
        m.d.comb += [rf.w_data.eq(pa.rows.payload.as_value()), rf.w_en.eq(pa.rows.valid),
                     pa.rows.ready.eq(rf.w_rdy),
                     up.rows.payload.eq(rf.r_data), up.rows.valid.eq(rf.r_rdy), rf.r_en.eq(up.rows.ready)]
        wiring.connect(m, wiring.flipped(self.udesc), up.desc)
        m.d.comb += up.retired.eq(eng.counters.retired)
        wiring.connect(m, up.mem, wiring.flipped(self.upd_rd))
        wiring.connect(m, up.wr, wiring.flipped(self.upd_wr))

        pred_busy = Signal()
        m.d.comb += pred_busy.eq(ro.emitting | sf.nonempty | pa.busy | (rf.level != 0) | up.working)
        # a pending update descriptor is work too (a BP update waits for the engine's dW)
        m.d.comb += [self.busy.eq(eng.busy | pred_busy | ro.busy | up.busy | self.udesc.valid),
                     self.error.eq(Cat(eng.error, ro.error, pa.error, up.error)),
                     self.counters.eq(eng.counters)]
        pc = self.pcounters
        incs = {
            "pred_busy_cycles": pred_busy,
            "gate_cycles": self.instr.valid & eng.instr.ready & ~ok,
            "samples": ro.samples.valid & ro.samples.ready,
            "pred_rows": pa.rows.valid & pa.rows.ready,
            "upd_elems": None,
            "upd_layers": None,
            "array_busy_cycles": None,
        }
        # Each counter adds its event a cycle late, from a register: the events are
        # decisions spread across the die (pred_busy ORs five units' flags, the gate
        # decodes the instruction buffer's payload), and feeding one straight into a
        # 48-bit carry chain was the ULX3S board build's critical path. The totals are
        # unchanged: the counters are read after the run ends (busy low for a cycle).
        for name, inc in incs.items():
            if inc is not None:
                inc_q = Signal(name=f"{name}_inc")
                m.d.sync += [inc_q.eq(inc), pc[name].eq(pc[name] + inc_q)]
        m.d.comb += [pc.upd_elems.eq(up.elems), pc.upd_layers.eq(up.layers_done),
                     pc.array_busy_cycles.eq(pa.counters.busy_cycles)]
        return m
