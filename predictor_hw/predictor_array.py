"""Predictor MAC array: the ADA-GP gradient predictor (and the AutoAssist Assistant)
on a small ``pred_rows x pred_cols`` int8 MAC array with its own weight SRAMs.

Golden function: :func:`model_sw.adagp_predictor.predictor_forward_int` (predictor
mode) and :func:`model_sw.autoassist_assistant.assistant_logit_int` (Assistant
mode); :func:`golden_rows` / :func:`golden_logits` put their results in the
stream formats of this unit.  Cycle model: :func:`predictor_array_cycles`,
:func:`assistant_cycles` (equal to the counters, see docs/predictor.md).

Lanes: PE (r, j) is lane ``l = r * pred_cols + j``; ``L = pred_rows * pred_cols``.
Every PE multiplies two int8 operands and accumulates exactly in int32.

Predictor mode (``mode = 0``), one sample (1 x P x P int8) at a time:

* conv 1->C 3x3 pad 1: rows = channels, columns = output pixels.  A conv *tile*
  is (channel group ``cg`` of R channels, pixel tile ``pt`` of ``pred_cols``
  pixels) and takes 9 steps, one per tap: PE (r, j) gets the conv weight of
  channel ``cg*R + r`` at that tap (conv SRAM word ``cg*9 + tap``, lane r) and
  the sample pixel under tap for pixel ``pt*pred_cols + j`` (im2col by
  addressing the sample buffer; zero outside the image).  Pixels are numbered
  window-major (all pixels of one pool window are consecutive), so the pool is
  a sum over neighbouring columns (and over consecutive tiles if a window is
  wider than the array).
* when a tile is done (captured at the next tile's first step, or a drain
  step): requantize with ReLU by ``shift1``, sum each pool x pool window,
  requantize by log2(pool^2), store into the feature buffer ``h[f]``,
  f = channel * Q^2 + window (the predictor's flatten order).
* fc: lane l of fc tile ``kb`` computes output ``kb*L + l``; one step per
  feature f: ``acc += h[f] * w2[kb*L + l, f]`` (fc SRAM word ``kb*F + f``).
  Only the first ``k`` outputs are computed: tiles stop at ceil(k/L), lanes
  with ``kb*L + l >= k`` are gated (no MAC, no count).
* a finished fc tile is requantized by ``shift2`` into the output buffer and
  leaves as up to R gradient rows (``grad_row_layout``: pred_cols values, ``en``,
  channel, col = first fan-in index of the row, ``last`` on the layer's last
  row).  Rows wholly at or beyond ``k`` are not sent.

Assistant mode (``mode = 1``): ``feats`` beats carry feature f of L instances
(lane l = instance l of the group, with its label and an enable); lane l does
``acc = u[y_l] + sum_f x[l, f] * w[f]`` over ``k`` features (weight from the
Assistant SRAM, broadcast), then a drain step sends the L int32 logits.

Schedule (deterministic): the sequencer takes one *step* per cycle unless it
waits (a sample not yet in the buffer, a feature beat not valid, or the output
buffer still holding rows when a tile must be captured: stalls).  The step
decision itself is a register, computed one cycle ahead (docs/fpga.md, "Fmax
round 5").  SRAM data is there in the cycle after the step (the block RAMs are
read one cycle ahead into registers); the operands and the product are registered
(``MAC_STAGES``) and the MACs happen 1 + MAC_STAGES cycles later.  Captures are
pipelined too (``CAP_FC``, ``CAP_CONV``); when the fc phase would read a feature of
the last conv tile before it lands, CDRAIN waits ``Geometry.cdrain_wait`` steps
(0 for the presets' geometry).

Configuration inputs ``mode``, ``k``, ``shift1``, ``shift2`` are latched when a
job starts (first sample / feature beat while idle).  ``k == 0`` or
``k > pred_kmax`` sets ``error = 1`` (sticky) and the job's input is dropped
up to its ``last`` beat without any output.  Weights are written through the
``weights`` stream while idle (``pack_predictor_weights``,
``pack_assistant_weights``); an address beyond a memory sets ``error = 2``.
"""
from __future__ import annotations


import numpy as np
from amaranth import Module, Signal, Mux, Array, Cat, Const, signed, unsigned
from amaranth.hdl import Assert, Format
from amaranth.lib import wiring, stream, data, memory
from amaranth.lib.wiring import In, Out

from model_sw import numerics
from model_sw.adagp_predictor import PredictorSizeError, predictor_forward_int
from model_sw.autoassist_assistant import assistant_logit_int
from rtl.config import AcceleratorConfig
from rtl.copies import COPY_KINDS, register_copies
from rtl.dsp import registered_product
from rtl.epilogue import Requantize, below_guard_mask, or_all, round_saturate, shift_onehot, shift_round_bit

from .interfaces import PRED_OP_BITS, grad_row_layout, sample_layout

ACC_BITS = 32
COUNTER_BITS = 32
SHIFT_BITS = 6
ASSIST_CLASSES = 16          # class-bias registers of the Assistant mode
LABEL_BITS = 4
COUNTERS = (
    "busy_cycles",   # a job in flight (from the cycle after it started to its last output beat)
    "step_cycles",   # the sequencer took a step (MAC step or drain step)
    "stall_cycles",  # busy, but waiting for input, or for output space
    "macs",          # useful multiply-accumulates (masked lanes are not counted)
    "in_beats",      # samples / feature beats consumed by jobs
    "out_beats",     # gradient rows / logit beats sent
    "errors",        # jobs refused (bad k) and bad weight addresses
)
ERR_NONE, ERR_K, ERR_WADDR = 0, 1, 2
# Pipeline (for Fmax; docs/predictor.md "Pipeline and cycles"): a step issues its SRAM reads;
# MAC_STAGES registers follow before the accumulators (the operands after the SRAMs and the
# feature multiplexer, then the product), so a tile's sums are complete MAC_STAGES cycles
# later than without them.  A capture then goes through CAP_FC registers to the output buffer
# (the requantizer's shift-and-round-bit stage) and through CAP_CONV registers to the feature
# registers h (the requantizer's first stage, its int8 result, the pool sum).
MAC_STAGES = 2
CAP_FC = 1
CAP_CONV = 3
TGT_CONV, TGT_FC, TGT_AW, TGT_AU = 0, 1, 2, 3


class PredictorArrayError(ValueError):
    """Bad input for the predictor array (caught on the driver side, before the hardware)."""


# --------------------------------------------------------------------------------------------
# geometry (shared by the RTL, the packers, the golden formatting and the cycle model)
# --------------------------------------------------------------------------------------------

class Geometry:
    def __init__(self, cfg: AcceleratorConfig):
        self.cfg = cfg
        self.R, self.Cc = cfg.pred_rows, cfg.pred_cols
        self.L = self.R * self.Cc
        self.P, self.C, self.pool = cfg.pred_p, cfg.pred_channels, cfg.pred_pool
        self.P2 = self.P * self.P
        self.Q = self.P // self.pool
        self.Q2 = self.Q * self.Q
        self.F = cfg.pred_features
        self.pool2 = self.pool * self.pool
        self.pshift = self.pool2.bit_length() - 1
        self.n_cg = -(-self.C // self.R)
        self.n_pt = -(-self.P2 // self.Cc)
        self.conv_steps = self.n_cg * self.n_pt * 9
        self.wpt = max(1, self.Cc // self.pool2)      # whole windows per pixel tile
        self.tpw = max(1, self.pool2 // self.Cc)      # pixel tiles per window
        self.spw = min(self.Cc, self.pool2)           # columns of one window in a tile
        self.kmax = cfg.pred_kmax
        self.n_kb_max = -(-self.kmax // self.L)
        self.conv_depth = self.n_cg * 9
        self.fc_depth = self.n_kb_max * self.F
        self.aw_depth = self.kmax
        self.data_bits = max(PRED_OP_BITS * self.L, ACC_BITS)
        # The last conv tile's features reach h 1 + MAC_STAGES + CAP_CONV cycles after the
        # CDRAIN step; the fc step for feature f reads h 2 + f cycles after it (plus the
        # wait steps), so CDRAIN waits until the earliest such feature has landed.
        self.cdrain_wait = max(0, MAC_STAGES + CAP_CONV - self.last_tile_fmin())

    def last_tile_fmin(self) -> int:
        """Smallest feature index the last conv tile writes (F if it writes none): the
        capture code's mapping (channel group n_cg-1, pixel tile n_pt-1)."""
        tcg, tpt = self.n_cg - 1, self.n_pt - 1
        if tpt % self.tpw != self.tpw - 1:
            return self.F
        fs = [c * self.Q2 + w for r in range(self.R) for u in range(self.wpt)
              for c in [tcg * self.R + r] for w in [tpt * self.wpt + u if self.tpw == 1 else tpt // self.tpw]
              if c < self.C and w < self.Q2]
        return min(fs, default=self.F)

    def pixel(self, pi: int):
        """Window-major pixel number -> (y, x), or None beyond the image."""
        if pi >= self.P2:
            return None
        w, s = divmod(pi, self.pool2)
        wy, wx = divmod(w, self.Q)
        sy, sx = divmod(s, self.pool)
        return wy * self.pool + sy, wx * self.pool + sx

    def tap_source(self, pt: int, t: int, j: int):
        """Sample index (y*P + x) read by column j at tap t of pixel tile pt, or None (zero)."""
        px = self.pixel(pt * self.Cc + j)
        if px is None:
            return None
        y, x = px[0] + t // 3 - 1, px[1] + t % 3 - 1
        if 0 <= y < self.P and 0 <= x < self.P:
            return y * self.P + x
        return None

    def n_kb(self, k: int) -> int:
        return -(-k // self.L)

    def rows_of(self, k: int) -> int:
        """Gradient rows per sample."""
        return -(-k // self.Cc)


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


# --------------------------------------------------------------------------------------------
# stream payloads of this unit (the samples / grad rows ones are in interfaces.py)
# --------------------------------------------------------------------------------------------

def weight_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One SRAM word write.  target 0: conv word (lanes 0..R-1 = w1[cg*R + r, tap]);
    1: fc word (lane l = w2[kb*L + l, f]); 2: Assistant weight (byte 0);
    3: Assistant class bias (bits 0..31, addr = class)."""
    g = Geometry(cfg)
    return data.StructLayout({
        "target": unsigned(2),
        "addr": unsigned(_bits(max(g.conv_depth, g.fc_depth, g.aw_depth, ASSIST_CLASSES)) + 1),
        "data": unsigned(g.data_bits),
    })


def feat_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """Assistant input: feature f of a group of L instances (lane l = instance l)."""
    L = cfg.pred_rows * cfg.pred_cols
    return data.StructLayout({
        "x": data.ArrayLayout(signed(PRED_OP_BITS), L),
        "y": data.ArrayLayout(unsigned(LABEL_BITS), L),
        "en": unsigned(L),
        "last": unsigned(1),     # on the last feature beat of the job's last group
    })


def logit_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    L = cfg.pred_rows * cfg.pred_cols
    return data.StructLayout({
        "z": data.ArrayLayout(signed(ACC_BITS), L),
        "en": unsigned(L),
        "group": unsigned(cfg.dim_bits),
        "last": unsigned(1),
    })


def counters_layout() -> data.StructLayout:
    return data.StructLayout({n: unsigned(COUNTER_BITS) for n in COUNTERS})


def _rq_cfg(cfg: AcceleratorConfig, lanes: int) -> AcceleratorConfig:
    """A configuration view for rtl.epilogue.Requantize: int32 -> int8 over ``lanes``."""
    return cfg.replace(name=f"{cfg.name}-pred-rq{lanes}", cols=lanes, op_bits=PRED_OP_BITS,
                       acc_bits=ACC_BITS)


def requant_int8(m: Module, xs, shift, below, onehot, relu) -> list:
    """numerics.requantize(x, shift, 8, relu) of the int32 values ``xs`` (registers), in two
    register stages: the shifted value and its round-up bit are registered (``shift``, its
    guard mask ``below`` and its one-hot ``onehot``, shift_onehot, registered by the caller;
    the rule of ``shift_round_bit``, up = guard & (sticky | q[0]), with the guard bit
    x[shift-1] and q[0] = x[shift] as AND-ORs by the one-hot instead of two 32-way
    multiplexers on the shift; shifts are 0..31, check_shift); from them the
    saturated int8 (returned, combinational: the caller registers it) by
    ``rtl.epilogue.round_saturate`` (range flags on the high bits and an 8-bit rounding add:
    q >= 127 -> 127, q < -128 -> -128, else the low byte + up, which cannot overflow).  ReLU (``relu`` at the second stage) zeroes q < 0, for
    which q + up <= 0.  The result belongs to the ``xs`` of the cycle before.  ``shift`` may
    be a list, one (equal) copy per value (for Fmax: a shared shift drives every lane's
    shifter)."""
    shifts = shift if isinstance(shift, (list, tuple)) else [shift] * len(xs)
    outs = []
    for l, x in enumerate(xs):
        q_x, up_x = shift_round_bit(x, shifts[l], below, onehot)
        q, up = Signal(signed(len(x)), name=f"rq_q{l}"), Signal(name=f"rq_up{l}")
        m.d.sync += [q.eq(q_x), up.eq(up_x)]
        sat, _ = round_saturate(q, up, PRED_OP_BITS)      # the engine's stage-2 rule
        outs.append(Mux(relu & q[-1], 0, sat))
    return outs


# --------------------------------------------------------------------------------------------
# the component
# --------------------------------------------------------------------------------------------

def k_in_range(cfg: AcceleratorConfig, k):
    """A job's fan-in is one the array runs: 1 <= k <= pred_kmax (else ERR_K).  Works on
    ints and on Amaranth values (the array, and the Accelerator where k enters the samples
    FIFO)."""
    return (k != 0) & (k <= cfg.pred_kmax)


class PredictorArray(wiring.Component):
    """``k_ok_port``: the job's ``k_in_range`` comes from the driver on a port ``k_ok``
    beside ``k`` instead of being computed here (the Accelerator computes it where k enters
    the samples FIFO, for Fmax: the 16-bit compare is then not in front of the job-start
    decision; ``check_step`` asserts the port equals the rule)."""

    def __init__(self, cfg: AcceleratorConfig, check_step: bool = False, k_ok_port: bool = False):
        self.cfg = cfg
        self.geo = Geometry(cfg)
        self.check_step = check_step       # simulation: assert the registered step each cycle
        self.k_ok_port = k_ok_port
        ports = {"k_ok": In(1)} if k_ok_port else {}
        super().__init__({
            **ports,
            "samples": In(stream.Signature(sample_layout(cfg))),
            "feats": In(stream.Signature(feat_layout(cfg))),
            "weights": In(stream.Signature(weight_layout(cfg))),
            "rows": Out(stream.Signature(grad_row_layout(cfg))),
            "logits": Out(stream.Signature(logit_layout(cfg))),
            "mode": In(1),
            "k": In(cfg.dim_bits),
            "shift1": In(SHIFT_BITS),
            "shift2": In(SHIFT_BITS),
            "busy": Out(1),
            "error": Out(2),
            "counters": Out(counters_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, g = self.cfg, self.geo
        R, Cc, L, F = g.R, g.Cc, g.L, g.F
        dw = cfg.dim_bits
        op = signed(PRED_OP_BITS)

        # The step decision is a register (``step_q``, computed one cycle ahead from the next
        # values of the registers it depends on), not logic in front of ~350 clock enables.
        # The registers it reads get an explicit next value ``<name>_nx`` (a comb signal);
        # ``sync += x.eq(v)`` writes ``x_nx`` for those and is ``m.d.sync`` for all others.
        nx = {}

        def with_nx(sig):
            n = Signal.like(sig, name=f"{sig.name}_nx")
            m.d.comb += n.eq(sig)
            m.d.sync += sig.eq(n)
            nx[id(sig)] = n
            return n

        class _Sync:
            def __iadd__(self, stmts):
                for st in (stmts if isinstance(stmts, (list, tuple)) else [stmts]):
                    tgt = nx.get(id(st.lhs))
                    if tgt is None:
                        m.d.sync += st
                    else:
                        m.d.comb += tgt.eq(st.rhs)
                return self
        sync = _Sync()

        # ---------------- weight SRAMs and the class-bias registers ----------------------
        m.submodules.conv_mem = conv_mem = memory.Memory(
            shape=data.ArrayLayout(op, R), depth=g.conv_depth, init=[])
        m.submodules.fc_mem = fc_mem = memory.Memory(
            shape=data.ArrayLayout(op, L), depth=g.fc_depth, init=[])
        m.submodules.aw_mem = aw_mem = memory.Memory(shape=op, depth=g.aw_depth, init=[])
        conv_w, conv_r = conv_mem.write_port(), conv_mem.read_port()
        fc_w, fc_r = fc_mem.write_port(), fc_mem.read_port()
        aw_w, aw_r = aw_mem.write_port(), aw_mem.read_port()
        ubias = Array(Signal(signed(ACC_BITS), name=f"ubias{c}") for c in range(ASSIST_CLASSES))

        # ---------------- job state ----------------------------------------------------------
        IDLE, RUN, TAIL, DROP = range(4)
        CONV, CDRAIN, FC, FDRAIN, AMAC, ADRAIN = range(6)
        state = Signal(2)
        phase = Signal(3)
        mode_r = Signal()
        k_r = Signal(dw)
        sh1, sh2 = Signal(SHIFT_BITS), Signal(SHIFT_BITS)
        err = Signal(2)
        state_nx, phase_nx, mode_r_nx = with_nx(state), with_nx(phase), with_nx(mode_r)
        # phase == CONV / FC / AMAC, registered copies for the operand-issue registers
        iph_conv, iph_fc, iph_amac = Signal(init=1), Signal(), Signal()
        # phase as a one-hot of registers for the sequencer's own step logic (which counter
        # moves at a step, the fc address), registered from phase_nx (for Fmax: a routed
        # critical path ran from `phase` through its decode, ~60 loads, into the fc
        # phase's enables and on to the next step decision)
        PHASES = {CONV: "conv", CDRAIN: "cdrain", FC: "fc", FDRAIN: "fdrain", AMAC: "amac", ADRAIN: "adrain"}
        sph = {ph: Signal(name=f"sph_{nm}", init=int(ph == CONV)) for ph, nm in PHASES.items()}
        m.d.comb += [self.busy.eq(state != IDLE), self.error.eq(err)]
        k_ok = self.k_ok if self.k_ok_port else k_in_range(cfg, self.k)
        if self.check_step and self.k_ok_port:
            job_in = Mux(self.mode, self.feats.valid, self.samples.valid)
            m.d.sync += Assert((state != IDLE) | ~job_in | (k_ok == k_in_range(cfg, self.k)),
                               Format("k_ok {} for k {}", k_ok, self.k))

        # weights: written only while idle
        wb = self.weights.payload
        m.d.comb += self.weights.ready.eq(state == IDLE)
        wfire = self.weights.valid & self.weights.ready
        depth_of = {TGT_CONV: g.conv_depth, TGT_FC: g.fc_depth, TGT_AW: g.aw_depth, TGT_AU: ASSIST_CLASSES}
        waddr_ok = Signal()
        with m.Switch(wb.target):
            for tgt, depth in depth_of.items():
                with m.Case(tgt):
                    m.d.comb += waddr_ok.eq(wb.addr < depth)
        m.d.comb += [
            conv_w.addr.eq(wb.addr), conv_w.data.eq(wb.data[:PRED_OP_BITS * R]),
            conv_w.en.eq(wfire & waddr_ok & (wb.target == TGT_CONV)),
            fc_w.addr.eq(wb.addr), fc_w.data.eq(wb.data[:PRED_OP_BITS * L]),
            fc_w.en.eq(wfire & waddr_ok & (wb.target == TGT_FC)),
            aw_w.addr.eq(wb.addr), aw_w.data.eq(wb.data[:PRED_OP_BITS]),
            aw_w.en.eq(wfire & waddr_ok & (wb.target == TGT_AW)),
        ]
        with m.If(wfire & waddr_ok & (wb.target == TGT_AU)):
            sync += ubias[wb.addr[:LABEL_BITS]].eq(wb.data[:ACC_BITS].as_signed())

        # ---------------- sample buffer ------------------------------------------------------
        sbuf = Signal(data.ArrayLayout(op, g.P2))
        sbuf_full = Signal()
        sbuf_chan = Signal(dw)
        sbuf_last = Signal()
        cur_chan = Signal(dw)        # channel / last of the sample in the fc phase
        cur_last = Signal()
        seen_last = Signal()         # the job's last sample is in: take no more
        sbuf_full_nx = with_nx(sbuf_full)
        seen_last_nx = with_nx(seen_last)

        # ---------------- sequencer counters -------------------------------------------------
        t = Signal(range(9))
        pt = Signal(range(max(2, g.n_pt)))
        cg = Signal(range(max(2, g.n_cg)))
        cs_oh = Signal(g.n_pt * 9, init=1)            # one-hot of the step within the channel group, pt*9 + t
        # the conv phase's counter tests from registers (for Fmax: they decide the phase change
        # to CDRAIN, in front of the phase's one-hot and the next step decision): t == 8 and
        # pt == n_pt - 1 are bits of cs_oh, cg == n_cg - 1 a flag kept beside cg
        t_last = or_all(cs_oh[p * 9 + 8] for p in range(g.n_pt))
        pt_t_last = cs_oh[g.n_pt * 9 - 1]
        cg_last = Signal(init=int(g.n_cg == 1))
        prev_cg = Signal.like(cg)
        prev_pt = Signal.like(pt)
        f = Signal(range(max(2, F, g.kmax)))
        kb = Signal(range(max(2, g.n_kb_max)))
        krem = Signal(signed(dw + 2))                 # k - kb*L
        group = Signal(dw)
        grp_last = Signal()
        tile_first = Signal()                          # fc: no fc tile finished yet for this sample
        f_nz = Signal()                                # f != 0, kept beside f
        k_m1 = Signal(dw)                              # k_r - 1 (Assistant: the last feature)
        k_m2 = Signal(dw)                              # k_r - 2
        k_is1 = Signal()
        # compares in front of the phase change, kept as flags beside their counters
        f_lastF = Signal(init=int(F == 1))             # fc: f == F - 1
        f_lastK = Signal()                             # Assistant: f == k_r - 1
        krem_le = Signal()                             # fc: krem <= L (the sample's last fc tile)
        # fc: krem > l per lane, kept beside krem (for Fmax: the lane enables en1 compared
        # krem after a 5.1 ns hop, a12909c's routed critical path on the ULX3S, 81.45 MHz)
        krem_gt = Signal(L)
        f_nx, f_nz_nx, tile_first_nx = with_nx(f), with_nx(f_nz), with_nx(tile_first)
        cdw = Signal(range(g.cdrain_wait + 1))         # CDRAIN wait steps taken

        # output buffers (registered), their fill state
        ob = Signal(data.ArrayLayout(op, L))
        ob_en = Signal(L)
        ob_rows = Signal(range(R + 1))                 # rows still to send
        ob_row = Signal(range(max(2, R)))              # next row to send
        ob_kb = Signal.like(kb)
        ob_chan = Signal(dw)
        ob_last = Signal()
        lo_z = Signal(data.ArrayLayout(signed(ACC_BITS), L))
        lo_en = Signal(L)
        lo_valid = Signal()
        lo_group = Signal(dw)
        lo_last = Signal()

        # MAC-stage pipeline registers
        v1 = Signal()
        first1 = Signal()
        ph1 = Signal(3)
        # the operand multiplexers' selects, registered with the step: conv weight / Assistant
        # weight / fc weight, and the feature h[f] as a one-hot (an AND-OR, not a 2^n mux tree)
        a_conv1, a_aw1, b_fc1 = Signal(), Signal(), Signal()
        fsel1 = Signal(F)
        en1 = Signal(L)
        b1 = Signal(data.ArrayLayout(op, L))
        y1 = Signal(data.ArrayLayout(unsigned(LABEL_BITS), L))
        ccap1, fcap1, acap1 = Signal(), Signal(), Signal()
        ccg1, cpt1 = Signal.like(cg), Signal.like(pt)
        fcap_kb1 = Signal.like(kb)
        fcap_krem1 = Signal.like(krem)
        fcap_chan1 = Signal(dw)
        fcap_last1 = Signal()
        acap_en1 = Signal(L)
        acap_last1 = Signal()
        acap_group1 = Signal(dw)
        a_en = Signal(L)                               # enables of the group in flight

        # captures in flight: stage 1 (issue register) .. the accumulator stage, and the fc
        # capture's requantizer stage(s); the output buffers count as busy until they land
        fcap_fl = [Signal(name=f"fcap_fl{i}") for i in range(MAC_STAGES + CAP_FC)]
        acap_fl = [Signal(name=f"acap_fl{i}") for i in range(MAC_STAGES)]
        ob_free = (ob_rows == 0) & ~fcap1
        lo_free = ~lo_valid & ~acap1
        for x in fcap_fl:
            ob_free = ob_free & ~x
        for x in acap_fl:
            lo_free = lo_free & ~x

        # ---------------- step condition ------------------------------------------------------
        # step = RUN and, by phase: CONV: sbuf_full; CDRAIN: 1; FC: f != 0 | tile_first |
        # ob_free; FDRAIN: ob_free; AMAC: feats.valid; ADRAIN: lo_free.  All but the AMAC
        # term are decided one cycle ahead from the registers' next values (step_q); the
        # AMAC term is the feature beat's valid, gated by a registered phase flag.
        ob_rows_nx, lo_valid_nx = with_nx(ob_rows), with_nx(lo_valid)
        fcap1_nx, acap1_nx = with_nx(fcap1), with_nx(acap1)
        # ob_rows next == 0, without the capture's row count (fkrem >= 1: a capture loads >= 1
        # row, into an empty buffer, so no row leaves in that cycle)
        ob_empty_nx = ~fcap_fl[-1] & ((ob_rows == 0) | ((ob_rows == 1) & self.rows.ready))
        ob_free_nx = ob_empty_nx & ~fcap1_nx & ~fcap1     # the in-flight flags shift by one
        for x in fcap_fl[:-1]:
            ob_free_nx = ob_free_nx & ~x
        lo_free_nx = ~lo_valid_nx & ~acap1_nx & ~acap1
        for x in acap_fl[:-1]:
            lo_free_nx = lo_free_nx & ~x

        def step_rule(name, st, ph, sbuf_ok, fnz, tfirst, obf, fv, lof):
            """The step condition from (current or next) values of its inputs."""
            out = Signal(name=name)
            with m.If(st == RUN):
                with m.Switch(ph):
                    with m.Case(CONV):
                        m.d.comb += out.eq(sbuf_ok)
                    with m.Case(CDRAIN):
                        m.d.comb += out.eq(1)
                    with m.Case(FC):
                        m.d.comb += out.eq(fnz | tfirst | obf)
                    with m.Case(FDRAIN):
                        m.d.comb += out.eq(obf)
                    with m.Case(AMAC):
                        m.d.comb += out.eq(fv)
                    with m.Case(ADRAIN):
                        m.d.comb += out.eq(lof)
            return out

        # (step_nx and amac_nx, the next step decision and "running in AMAC next", are made
        # below by a Shannon split on ``step``, from the job's start decision on)
        step_nx, amac_nx = Signal(name="step_nx"), Signal(name="amac_nx")
        step_q, amac_q = Signal(), Signal()
        m.d.sync += [step_q.eq(step_nx), amac_q.eq(amac_nx)]
        step = Signal()
        m.d.comb += step.eq(step_q | (amac_q & self.feats.valid))
        # a copy of the decision for the counters, far from the sequencer (stored inverted:
        # Yosys merges flip-flops with the same input); the feature beats taken while running
        # are amac_q & feats.valid (step_q is 0 in AMAC)
        nstep_c, namac_c = Signal(init=1), Signal(init=1)
        m.d.sync += [nstep_c.eq(~step_nx), namac_c.eq(~amac_nx)]
        feat_take = ~namac_c & self.feats.valid
        step_c = ~nstep_c | feat_take
        if self.check_step:
            # simulation only: the registered decision equals the definition, every cycle
            step_def = step_rule("step_def", state, phase, sbuf_full, f != 0, tile_first, ob_free,
                                 self.feats.valid, lo_free)
            flags_ok = ((f_nz == (f != 0)) & ((phase != FC) | ((f_lastF == (f == F - 1)) & (krem_le == (krem <= L))))
                        & ((phase != AMAC) | (f_lastK == (f == k_r - 1))))
            flags_ok = flags_ok & (step_c == step) & (feat_take == (self.feats.valid & self.feats.ready & (state == RUN)))
            # the counters at their start values while idle
            flags_ok = flags_ok & ((state != IDLE) | ((t == 0) & (pt == 0) & (cg == 0) & (cs_oh == 1) & (f == 0)
                                                      & ~f_nz & (f_lastF == (F == 1))))
            # the issue stage's phase flags, and the im2col one-hot at pt*9 + t
            flags_ok = flags_ok & (iph_conv == (phase == CONV)) & (iph_fc == (phase == FC)) & (iph_amac == (phase == AMAC))
            for ph, flag in sph.items():
                flags_ok = flags_ok & (flag == (phase == ph))
            flags_ok = flags_ok & ((state != RUN) | (phase != CONV)
                                   | (cs_oh == (Const(1, 1) << (pt * 9 + t))[:len(cs_oh)]))
            flags_ok = flags_ok & (cg_last == (cg == g.n_cg - 1))
            m.d.sync += Assert((step == step_def) & flags_ok,
                               Format("step {} (definition {}) or a flag wrong (state {}, phase {})",
                                      step, step_def, state, phase))

        # ---------------- job start / input acceptance -------------------------------------
        sp = self.samples.payload
        start = Signal()
        bad = (state == IDLE) & Mux(self.mode, self.feats.valid, self.samples.valid) & ~k_ok
        # samples.ready: idle and in sample mode; dropping a sample job; running a sample job
        # with the buffer free and the last sample not yet in.  Its non-idle part is a
        # register, from the next values (for Fmax: in the Accelerator the ready goes to the
        # samples FIFO's control across the die, and from the job state through logic it
        # was a routed critical path); ``mode`` is an input, so the idle part is a LUT.
        s_rdy_busy, s_idle = Signal(), Signal(init=1)     # s_idle: state == IDLE (see the TAIL below)
        m.d.comb += self.samples.ready.eq(Mux(s_idle, self.mode == 0, s_rdy_busy))
        if self.check_step:
            rdy_def = Mux(state == IDLE, self.mode == 0,
                          (mode_r == 0) & ((state == DROP) | ((state == RUN) & ~sbuf_full & ~seen_last)))
            m.d.sync += Assert(self.samples.ready == rdy_def,
                               Format("samples.ready {} (definition {}, state {})", self.samples.ready, rdy_def, state))
        with m.If(state == IDLE):
            with m.If(self.mode == 0):
                with m.If(self.samples.valid):
                    m.d.comb += start.eq(k_ok)
            with m.Else():
                with m.If(self.feats.valid):
                    m.d.comb += start.eq(k_ok)
                    m.d.comb += self.feats.ready.eq(~k_ok)
            with m.If(bad):
                sync += err.eq(Mux(err == ERR_NONE, ERR_K, err))
                last_in = Mux(self.mode, self.feats.payload.last, sp.last)
                with m.If(~last_in):
                    sync += state.eq(DROP)
        with m.Elif(state == DROP):
            with m.If(mode_r == 0):
                with m.If(self.samples.valid & sp.last):
                    sync += state.eq(IDLE)
            with m.Else():
                m.d.comb += self.feats.ready.eq(1)
                with m.If(self.feats.valid & self.feats.payload.last):
                    sync += state.eq(IDLE)
        with m.Elif((state == RUN) & (phase == AMAC)):
            m.d.comb += self.feats.ready.eq(step)

        s_fire = self.samples.valid & self.samples.ready & ((state == RUN) | start)

        # ---------------- the next step decision, split on this cycle's step --------------
        # step_rule(state_nx, phase_nx, ...) written out twice, for a step this cycle and for
        # none, each from registers and inputs only, with ``step`` the last select (for Fmax:
        # the phase's next value, after the sequencer's step logic, was in front of the
        # step decision and of the phase's one-hot registers).  check_step asserts every
        # cycle that the decision equals step_rule of the current values.
        # A step implies RUN.  At a step, by phase: CONV stays (sbuf_full stays 1) or goes
        # to CDRAIN; CDRAIN stays or goes to FC with tile_first: both step; FC steps again
        # unless its f wraps, then the output buffer decides (with the capture this step
        # may issue); FDRAIN ends the job (TAIL) or goes to CONV (the sample buffer
        # decides); AMAC's own term is the feature beat (not here), after its last feature
        # ADRAIN the logit register decides; ADRAIN ends the job or goes back to AMAC.
        conv_end = t_last & pt_t_last & cg_last
        # s_rdy_busy's next value, (mode_r_nx == 0) & ((state_nx == DROP) | ((state_nx == RUN)
        # & ~sbuf_full_nx & ~seen_last_nx)), written out by the current state from registers
        # and inputs, the step last (for Fmax: through state_nx and sbuf_full_nx it was the
        # estimate's worst path after a78a9da, 9.52 ns, sph_conv -> cur_last -> sbuf_full_nx).
        # It is read only outside IDLE (s_idle selects), so where the next state is IDLE
        # its value does not matter: from IDLE a sample job goes to RUN taking a sample (the
        # buffer is full: 0) or, with a bad k, to DROP (1) or stays; DROP stays DROP or goes
        # to IDLE; RUN in sample mode (no AMAC/ADRAIN) leaves only for TAIL, at FDRAIN's step
        # with the last sample, when seen_last is already 1.  The buffer empties only at
        # CONV's last step and fills when a sample is taken.  check_step asserts
        # samples.ready against its definition every cycle.
        # (A sample taken in RUN fills the buffer, so seen_last's own next value does not
        # matter then: the buffer says 0.)
        s_fire_run = self.samples.valid & s_rdy_busy       # s_fire in RUN (s_idle is 0)
        free_no_step = ~sbuf_full & ~s_fire_run
        free_at_step = Mux(sph[CONV] & conv_end, 1, free_no_step)
        rdy_run = (mode_r == 0) & ~seen_last & Mux(step, free_at_step, free_no_step)
        m.d.sync += s_rdy_busy.eq(Mux(state == IDLE, (self.mode == 0) & ~k_ok,
                                      Mux(state == DROP, mode_r == 0, (state == RUN) & rdy_run)))
        cd_end = (cdw == g.cdrain_wait) if g.cdrain_wait else Const(1, 1)
        fc_end = f_lastF & krem_le
        sbuf_nx0 = sbuf_full | s_fire                    # sbuf_full's next value without a step
        lo_free_nx0 = ~lo_valid_nx & ~acap1              # (acap1 is set only by an ADRAIN step)
        ob_free_fc = ob_empty_nx & ~fcap1 & ~(~f_nz & ~tile_first)   # an FC step's capture
        for x in acap_fl[:-1]:
            lo_free_nx0 = lo_free_nx0 & ~x
        for x in fcap_fl[:-1]:
            ob_free_fc = ob_free_fc & ~x
        ob_free_nx0 = ob_empty_nx & ~fcap1
        for x in fcap_fl[:-1]:
            ob_free_nx0 = ob_free_nx0 & ~x
        sph_at_step = {
            CONV: (sph[CONV] & ~conv_end) | (sph[FDRAIN] & ~cur_last),
            CDRAIN: (sph[CONV] & conv_end) | (sph[CDRAIN] & ~cd_end),
            FC: (sph[CDRAIN] & cd_end) | (sph[FC] & ~fc_end),
            FDRAIN: (sph[FC] & fc_end) | (sph[FDRAIN] & cur_last),
            AMAC: (sph[AMAC] & ~f_lastK) | (sph[ADRAIN] & ~grp_last),
            ADRAIN: (sph[AMAC] & f_lastK) | (sph[ADRAIN] & grp_last),
        }
        step_at_step = (sph[CONV] | sph[CDRAIN] | (sph[FC] & (~f_lastF | ob_free_fc))
                        | (sph[FDRAIN] & ~cur_last & sbuf_nx0) | (sph[AMAC] & f_lastK & lo_free_nx0))
        amac_at_step = sph_at_step[AMAC]                 # (both AMAC cases stay RUN)
        # without a step: RUN stays RUN, IDLE goes to RUN at a start (DROP and TAIL never);
        # the phase holds, or while idle follows the mode
        idle = state == IDLE
        run_nx0 = (state == RUN) | start
        sph_no_step = {ph: Mux(idle, Mux(self.mode, ph == AMAC, ph == CONV), sph[ph]) for ph in PHASES}
        step_no_step = run_nx0 & ((sph_no_step[CONV] & sbuf_nx0) | sph_no_step[CDRAIN]
                                  | (sph_no_step[FC] & (f_nz | tile_first | ob_free_nx0))
                                  | (sph_no_step[FDRAIN] & ob_free_nx0) | (sph_no_step[ADRAIN] & lo_free_nx0))
        m.d.comb += [step_nx.eq(Mux(step, step_at_step, step_no_step)),
                     amac_nx.eq(Mux(step, amac_at_step, run_nx0 & sph_no_step[AMAC]))]
        sph_nx = {ph: Mux(step, sph_at_step[ph], sph_no_step[ph]) for ph in PHASES}
        m.d.sync += [sph[ph].eq(sph_nx[ph]) for ph in PHASES]
        m.d.sync += [iph_conv.eq(sph_nx[CONV]), iph_fc.eq(sph_nx[FC]), iph_amac.eq(sph_nx[AMAC])]
        with m.If(s_fire):
            sync += [sbuf_full.eq(1), seen_last.eq(sp.last)]
        # the buffer follows the sample payload while it is empty (it is read only while full),
        # so its ~150 flip-flops are enabled by a register, not by the handshake (s_fire)
        with m.If(~sbuf_full):
            sync += [sbuf.eq(sp.pix), sbuf_chan.eq(sp.channel), sbuf_last.eq(sp.last)]

        # A job leaves the step counters at their start values (t, pt, cg = 0, cs_oh at step
        # 0, f = 0, f_nz = 0, f_lastF = (F == 1): the last CONV, FC and AMAC steps reset
        # them; check_step asserts it while idle), so the start does not load them again.
        # The job's configuration and first phase follow the inputs in every idle cycle (none
        # of them is used while idle), so the start cycle, the last idle one, latches them
        # and only ``state`` is loaded by the start decision.
        with m.If(state == IDLE):
            sync += [mode_r.eq(self.mode), k_r.eq(self.k), sh1.eq(self.shift1), sh2.eq(self.shift2), group.eq(0),
                     k_m1.eq(self.k - 1), k_m2.eq(self.k - 2), k_is1.eq(self.k == 1), f_lastK.eq(self.k == 1),
                     phase.eq(Mux(self.mode, AMAC, CONV))]
        with m.If(start):
            sync += state.eq(RUN)

        # ---------------- issue stage ----------------------------------------------------------
        sync += [v1.eq(0), ccap1.eq(0), fcap1.eq(0), acap1.eq(0)]
        # The block RAMs (fc, Assistant weights) are read one cycle ahead, at the next step's
        # address, and their data registered (fc_q, aw_q): the operand registers then see
        # registers, not a block RAM's clock-to-out.  The fc address kb*F + f counts up by one
        # per fc step (fc_a0, and fc_a1 = fc_a0 + 1), from 0 after CDRAIN; the Assistant's is
        # f, or f's value after an AMAC step (0 after its last feature), 0 while idle.  A
        # weight written at that address in that cycle (only possible in the cycle a job
        # starts) is forwarded.
        fc_a0, fc_a1 = Signal.like(fc_r.addr), Signal.like(fc_r.addr)
        aw_a1 = Mux(f_lastK, 0, f + 1)
        m.d.comb += [conv_r.addr.eq(cg * 9 + t),
                     fc_r.addr.eq(Mux(sph[CDRAIN], 0, Mux(step_q, fc_a1, fc_a0))),
                     aw_r.addr.eq(Mux(state == IDLE, 0, Mux(amac_q & self.feats.valid, aw_a1, f)))]
        with m.If(step & sph[CDRAIN]):
            sync += [fc_a0.eq(0), fc_a1.eq(1)]
        with m.Elif(step & sph[FC]):
            sync += [fc_a0.eq(fc_a1), fc_a1.eq(fc_a1 + 1)]
        fc_q = Signal(data.ArrayLayout(op, L))
        aw_q, aw_wd, aw_fwd = Signal(op), Signal(op), Signal()
        m.d.sync += [fc_q.eq(fc_r.data), aw_q.eq(Mux(aw_fwd, aw_wd, aw_r.data)),
                     aw_fwd.eq(aw_w.en & (aw_w.addr == aw_r.addr)), aw_wd.eq(aw_w.data)]
        col_ok = [Signal(name=f"col_ok{j}") for j in range(Cc)]
        for j in range(Cc):
            m.d.comb += col_ok[j].eq(pt * Cc + j < g.P2)
        row_ok = [cg * R + r < g.C for r in range(R)]
        # The operand-issue registers (lane enables, b operands, labels, the operand selects)
        # are loaded in every cycle of their phase, not only at a step: they are used only
        # with v1, which only a step sets, so they stay off the step's fan-out.  Their phase
        # is a private one-hot copy (iph_*, registered from phase_nx), so the ~300 loads
        # are not on the decode of ``phase`` that the next-step logic uses.
        fp = self.feats.payload
        sync += [a_conv1.eq(iph_conv), a_aw1.eq(iph_amac), b_fc1.eq(iph_fc),
                 fsel1.eq(Mux(iph_fc, Cat(*[f == i for i in range(F)]), 0))]
        with m.If(iph_conv):
            sync += [en1[r * Cc + j].eq(row_ok[r] & col_ok[j]) for r in range(R) for j in range(Cc)]
            # im2col: column j's operand for step s = pt*9 + t of the channel group, an
            # AND-OR of the sample bytes: byte p is selected when the one-hot cs_oh is at
            # one of the steps at which column j reads p (tap_source), zero elsewhere
            for j in range(Cc):
                steps_of = {}
                for s in range(g.n_pt * 9):
                    src = g.tap_source(s // 9, s % 9, j)
                    if src is not None:
                        steps_of.setdefault(src, []).append(s)
                val = or_all(Mux(or_all(cs_oh[s] for s in ss), sbuf[p].as_unsigned(), 0)
                              for p, ss in sorted(steps_of.items()))
                sync += [b1[r * Cc + j].eq(val) for r in range(R)]
        with m.Elif(iph_fc):
            sync += en1.eq(krem_gt)
        with m.Elif(iph_amac):
            sync += [en1.eq(fp.en), b1.eq(fp.x), y1.eq(fp.y)]
        with m.If(step):
            sync += ph1.eq(phase)
            # (the phase flags are a one-hot: one block at most runs)
            with m.If(sph[CONV]):
                sync += [v1.eq(1), first1.eq(t == 0)]
                with m.If((t == 0) & ((cg != 0) | (pt != 0))):
                    sync += [ccap1.eq(1), ccg1.eq(prev_cg), cpt1.eq(prev_pt)]
                with m.If(t_last):
                    sync += [t.eq(0), prev_cg.eq(cg), prev_pt.eq(pt)]
                    with m.If(pt_t_last):
                        sync += pt.eq(0)
                        with m.If(cg_last):
                            sync += [phase.eq(CDRAIN), cg.eq(0), cg_last.eq(g.n_cg == 1), cs_oh.eq(1),
                                     sbuf_full.eq(0), cur_chan.eq(sbuf_chan), cur_last.eq(sbuf_last)]
                        with m.Else():
                            sync += [cg.eq(cg + 1), cg_last.eq(cg == g.n_cg - 2), cs_oh.eq(1)]
                    with m.Else():
                        sync += [pt.eq(pt + 1), cs_oh.eq(cs_oh.rotate_left(1))]
                with m.Else():
                    sync += [t.eq(t + 1), cs_oh.eq(cs_oh.rotate_left(1))]
            with m.If(sph[CDRAIN]):
                # the last conv tile's capture, then g.cdrain_wait more steps when the fc
                # phase would otherwise read one of its features before it lands in h
                to_fc = [phase.eq(FC), f.eq(0), f_nz.eq(0), f_lastF.eq(F == 1), kb.eq(0), krem.eq(k_r),
                         krem_le.eq(k_r <= L), krem_gt.eq(Cat(*[k_r > l for l in range(L)])),
                         tile_first.eq(1)]
                if g.cdrain_wait:
                    with m.If(cdw == 0):
                        sync += [ccap1.eq(1), ccg1.eq(prev_cg), cpt1.eq(prev_pt)]
                    with m.If(cdw == g.cdrain_wait):
                        sync += to_fc + [cdw.eq(0)]
                    with m.Else():
                        sync += cdw.eq(cdw + 1)
                else:
                    sync += [ccap1.eq(1), ccg1.eq(prev_cg), cpt1.eq(prev_pt)] + to_fc
            with m.If(sph[FC]):
                sync += [v1.eq(1), first1.eq(~f_nz)]
                with m.If(~f_nz & ~tile_first):
                    sync += [fcap1.eq(1), fcap_kb1.eq(kb - 1), fcap_krem1.eq(krem + L),
                                 fcap_chan1.eq(cur_chan), fcap_last1.eq(0)]
                with m.If(f_lastF):
                    sync += [f.eq(0), f_nz.eq(0), f_lastF.eq(F == 1), tile_first.eq(0)]
                    with m.If(krem_le):
                        sync += phase.eq(FDRAIN)
                    with m.Else():
                        sync += [kb.eq(kb + 1), krem.eq(krem - L), krem_le.eq(krem <= 2 * L),
                                 krem_gt.eq(Cat(*[krem > l + L for l in range(L)]))]
                with m.Else():
                    sync += [f.eq(f + 1), f_nz.eq(1), f_lastF.eq(f == F - 2)]
            with m.If(sph[FDRAIN]):
                sync += [fcap1.eq(1), fcap_kb1.eq(kb), fcap_krem1.eq(krem),
                             fcap_chan1.eq(cur_chan), fcap_last1.eq(cur_last)]
                with m.If(cur_last):
                    sync += state.eq(TAIL)
                with m.Else():
                    sync += [phase.eq(CONV), t.eq(0), pt.eq(0), cg.eq(0), cg_last.eq(g.n_cg == 1), cs_oh.eq(1)]
            with m.If(sph[AMAC]):
                sync += [v1.eq(1), first1.eq(~f_nz)]
                with m.If(~f_nz):
                    sync += a_en.eq(fp.en)
                with m.If(f_lastK):
                    sync += [f.eq(0), f_nz.eq(0), f_lastK.eq(k_is1), phase.eq(ADRAIN), grp_last.eq(fp.last)]
                with m.Else():
                    sync += [f.eq(f + 1), f_nz.eq(1), f_lastK.eq(f == k_m2)]
            with m.If(sph[ADRAIN]):
                sync += [acap1.eq(1), acap_en1.eq(a_en), acap_last1.eq(grp_last),
                             acap_group1.eq(group), group.eq(group + 1)]
                with m.If(grp_last):
                    sync += state.eq(TAIL)
                with m.Else():
                    sync += phase.eq(AMAC)

        # ---------------- MAC pipeline ---------------------------------------------------------
        # stage 1 (the issue registers above, SRAM read data valid) -> operand registers
        # (a per row, b per lane) -> product registers (and the Assistant's class bias) ->
        # accumulators.  Everything a stage needs later travels with it (delay lines).
        def delay(sig, n, name):
            """``sig`` delayed by ``n`` register stages (a list: index i = i+1 stages)."""
            out, cur = [], sig
            for i in range(n):
                nxt = Signal.like(cur, name=f"{name}_d{i + 1}")
                m.d.sync += nxt.eq(cur)
                out.append(nxt)
                cur = nxt
            return out

        D = MAC_STAGES
        hp = Array(Signal(op, name=f"h{i}") for i in range(F))
        hval = Signal(PRED_OP_BITS)
        m.d.comb += hval.eq(or_all(Mux(fsel1[i], hp[i].as_unsigned(), 0) for i in range(F)))
        a_r = [Signal(op, name=f"a_r{r}") for r in range(R)]
        b_r = [Signal(op, name=f"b_r{l}") for l in range(L)]
        sync += [a_r[r].eq(hval | Mux(a_conv1, conv_r.data[r].as_unsigned(), 0) | Mux(a_aw1, aw_q.as_unsigned(), 0))
                 for r in range(R)]
        sync += [b_r[l].eq(Mux(b_fc1, fc_q[l], b1[l])) for l in range(L)]
        ph2, = delay(ph1, 1, "ph")
        y2, = delay(y1, 1, "y")
        # the products, registered every cycle (on an ECP5 in the DSP block's own output
        # register, rtl/dsp.py)
        p_r = [registered_product(m, a_r[l // Cc], b_r[l], Const(1, 1), platform=platform, name=f"prod{l}")
               for l in range(L)]
        bias_r = [Signal(signed(ACC_BITS), name=f"bias{l}") for l in range(L)]
        for l in range(L):
            sync += bias_r[l].eq(Mux(ph2 == AMAC, ubias[y2[l]], 0))
        vA = delay(v1, D, "v")[-1]
        firstA = delay(first1, D, "first")[-1]
        enA = delay(en1, D, "en")[-1]
        acc = [Signal(signed(ACC_BITS), name=f"acc{l}") for l in range(L)]
        for l in range(L):
            with m.If(vA):
                with m.If(firstA):
                    sync += acc[l].eq(Mux(enA[l], p_r[l] + bias_r[l], 0))
                with m.Elif(enA[l]):
                    sync += acc[l].eq(acc[l] + p_r[l])

        # captures, aligned with the accumulator stage (A): the tile's sums are complete
        ccap_d = delay(ccap1, D + CAP_CONV, "ccap")
        ccapA = ccap_d[D - 1]
        fcap_d = delay(fcap1, D + CAP_FC, "fcap")
        fcapA = fcap_d[D - 1]
        acap_d = delay(acap1, D, "acap")
        acapA = acap_d[D - 1]
        m.d.comb += [fcap_fl[i].eq(fcap_d[i]) for i in range(D + CAP_FC)]
        m.d.comb += [acap_fl[i].eq(acap_d[i]) for i in range(D)]
        ccg_d = delay(ccg1, D + CAP_CONV, "ccg")
        cpt_d = delay(cpt1, D + CAP_CONV, "cpt")
        fkb = delay(fcap_kb1, D + CAP_FC, "fkb")[-1]
        fkrem = delay(fcap_krem1, D + CAP_FC, "fkrem")[-1]
        fchan = delay(fcap_chan1, D + CAP_FC, "fchan")[-1]
        flast = delay(fcap_last1, D + CAP_FC, "flast")[-1]
        aen = delay(acap_en1, D, "aen")[-1]
        alast = delay(acap_last1, D, "alast")[-1]
        agroup = delay(acap_group1, D, "agroup")[-1]

        # requantize (conv: ReLU by shift1; fc: shift2): numerics.requantize's rule (round half
        # to even, int8 saturation), shared by the lanes, in two stages: A registers the shifted
        # value and the round-up bit (by bit tests and AND-ORs by the shift's one-hot), A+1 saturates (range flags
        # from the shifted value's high bits, an 8-bit rounding add) into rq_out
        # the shift needed at A and its guard mask, chosen one cycle earlier (registers)
        rq_below, rq_oh = Signal(ACC_BITS), Signal(ACC_BITS)
        sh_at_a = Mux(ccap_d[D - 2] if D >= 2 else ccap1, sh1, sh2)
        sync += [rq_below.eq(below_guard_mask(sh_at_a, ACC_BITS)), rq_oh.eq(shift_onehot(sh_at_a, ACC_BITS))]
        rq_out = Signal(data.ArrayLayout(op, L))
        # the lanes' shifters take the shift from copies of distinct kinds with cfg.fmax_logic
        # (for Fmax: one rq_sh drove ~500 loads, 2.6 ns of the estimate's 8.94 ns path after
        # a78a9da into the shifters' five levels)
        copy_kinds = [COPY_KINDS[l % len(COPY_KINDS)] for l in range(L)] if cfg.fmax_logic else [COPY_KINDS[0]]
        rq_shs = register_copies(m, sh_at_a, copy_kinds, "rq_sh")
        rq_shs = rq_shs if cfg.fmax_logic else rq_shs[0]
        m.d.comb += [rq_out[l].eq(v) for l, v in enumerate(requant_int8(m, acc, rq_shs, rq_below, rq_oh, ccap_d[D]))]

        # conv: A+1 registers the int8 results, A+2 the pool-window sum (running over the
        # tiles of a window), A+3 requantizes it by log2(pool^2) into the feature registers
        rqo = Signal(data.ArrayLayout(op, L))
        with m.If(ccap_d[D]):
            sync += rqo.eq(rq_out)
        m.submodules.pq = pq = Requantize(_rq_cfg(cfg, R * g.wpt))
        m.d.comb += [pq.shift.eq(g.pshift), pq.relu.eq(0)]
        # window sums of pool^2 int8 values: PRED_OP_BITS + log2(pool^2) bits are exact
        colsum = [[sum(rqo[r * Cc + u * g.spw + i] for i in range(g.spw))
                   for u in range(g.wpt)] for r in range(R)]
        psum = [[Signal(signed(PRED_OP_BITS + g.pshift + 1), name=f"psum{r}_{u}") for u in range(g.wpt)]
                for r in range(R)]
        win_first = Signal()
        cpt_s, ccg_s = cpt_d[D + 1], ccg_d[D + 2]
        if g.tpw > 1:
            m.d.comb += win_first.eq(cpt_s % g.tpw == 0)
        else:
            m.d.comb += win_first.eq(1)
        for r in range(R):
            for u in range(g.wpt):
                with m.If(ccap_d[D + 1]):
                    sync += psum[r][u].eq(Mux(win_first, colsum[r][u], psum[r][u] + colsum[r][u]))
                m.d.comb += pq.row[r * g.wpt + u].eq(psum[r][u])
        with m.If(ccap_d[D + 2]):
            with m.Switch(ccg_s * g.n_pt + cpt_d[D + 2]):
                for tcg in range(g.n_cg):
                    for tpt in range(g.n_pt):
                        if tpt % g.tpw != g.tpw - 1:
                            continue       # the window goes on in the next tile
                        with m.Case(tcg * g.n_pt + tpt):
                            for r in range(R):
                                c = tcg * R + r
                                for u in range(g.wpt):
                                    w = tpt * g.wpt + u if g.tpw == 1 else tpt // g.tpw
                                    if c < g.C and w < g.Q2:
                                        sync += hp[c * g.Q2 + w].eq(pq.out[r * g.wpt + u])

        # fc capture -> output buffer (A+1)
        with m.If(fcap_d[D]):
            sync += [ob.eq(rq_out), ob_kb.eq(fkb), ob_chan.eq(fchan), ob_last.eq(flast),
                         ob_row.eq(0)]
            sync += [ob_en[l].eq(fkrem > l) for l in range(L)]
            nrows = Mux(fkrem >= L, R, (fkrem + Cc - 1) >> (Cc.bit_length() - 1))
            sync += ob_rows.eq(nrows)

        # assistant capture -> logit register (at A)
        with m.If(acapA):
            sync += [lo_valid.eq(1), lo_en.eq(aen), lo_last.eq(alast), lo_group.eq(agroup)]
            sync += [lo_z[l].eq(Mux(aen[l], acc[l], 0)) for l in range(L)]

        # ---------------- output streams ----------------------------------------------------
        rp = self.rows.payload
        obv = ob.as_value()
        ob_en_v = ob_en
        row_data = Signal(data.ArrayLayout(op, Cc))
        row_en = Signal(Cc)
        with m.Switch(ob_row):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += [row_data.eq(obv[r * Cc * PRED_OP_BITS:(r + 1) * Cc * PRED_OP_BITS]),
                                 row_en.eq(ob_en_v[r * Cc:(r + 1) * Cc])]
        m.d.comb += [
            self.rows.valid.eq(ob_rows != 0),
            rp.en.eq(row_en),
            rp.channel.eq(ob_chan),
            rp.col.eq(ob_kb * L + ob_row * Cc),
            rp.last.eq(ob_last & (ob_rows == 1)),
        ]
        m.d.comb += [rp.data[j].eq(Mux(row_en[j], row_data[j], 0)) for j in range(Cc)]
        row_fire = self.rows.valid & self.rows.ready
        with m.If(row_fire):
            sync += [ob_rows.eq(ob_rows - 1), ob_row.eq(ob_row + 1)]

        lp = self.logits.payload
        m.d.comb += [self.logits.valid.eq(lo_valid), lp.z.eq(lo_z), lp.en.eq(lo_en),
                     lp.group.eq(lo_group), lp.last.eq(lo_last)]
        lo_fire = self.logits.valid & self.logits.ready
        with m.If(lo_fire):
            sync += lo_valid.eq(0)

        tail_end = (row_fire & rp.last) | (lo_fire & lp.last)
        with m.If(state == TAIL):
            with m.If(tail_end):
                sync += state.eq(IDLE)
        # s_idle, state == IDLE as a register, its next value written out by the current state
        # (for Fmax: state_nx == IDLE, through the If-tree's priority of every transition,
        # RUN's included, was the estimate's worst path after e6f4f9a, 9.28 ns, sph_conv ->
        # cur_last -> s_idle): IDLE stays unless a job's first beat arrives and starts or, bad
        # and not its last, goes to DROP; DROP ends at a last beat; TAIL at the last row or
        # logit taken; RUN never goes to IDLE.  check_step asserts it every cycle.
        valid_in = Mux(self.mode, self.feats.valid, self.samples.valid)
        last_in = Mux(self.mode, self.feats.payload.last, sp.last)
        drop_end = Mux(mode_r, self.feats.valid & self.feats.payload.last, self.samples.valid & sp.last)
        m.d.sync += s_idle.eq(Mux(state == IDLE, ~(valid_in & (k_ok | ~last_in)),
                                  Mux(state == DROP, drop_end, (state == TAIL) & tail_end)))
        if self.check_step:
            m.d.sync += Assert(s_idle == (state == IDLE), Format("s_idle {} in state {}", s_idle, state))

        # ---------------- counters ----------------------------------------------------------
        cnt = self.counters
        out_wait = (self.rows.valid & ~self.rows.ready) | (self.logits.valid & ~self.logits.ready)
        in_fire = s_fire | feat_take
        lanes_on = sum((en1[l] for l in range(L)), Const(0, unsigned(_bits(L + 1) + 1)))
        # the MAC count's increment through a register (the count is complete long before
        # the job's last output beat: the last MACs are >= 1 + lat cycles before it)
        macs_inc = Signal.like(lanes_on)
        sync += macs_inc.eq(Mux(v1, lanes_on, 0))
        # so are the input beats (the job's last is long before its last output beat); the
        # beat's handshake (samples.valid, the job start) stays off the counter's adder
        in_inc = Signal()
        sync += in_inc.eq(in_fire)
        # busy (state RUN or TAIL) with cfg.fmax_logic a register from its next value written
        # out by the current state, like s_idle: a start leaves IDLE for RUN, DROP never
        # reaches RUN or TAIL, RUN leaves only for TAIL, TAIL ends at tail_end (for Fmax:
        # e6f4f9a's ULX3S critical path, 83.26 MHz, ran from `state` through this decode
        # across the die, 8.22 ns, into the counter's carry chain).  check_step asserts it.
        busy_now = (state == RUN) | (state == TAIL)
        if cfg.fmax_logic:
            s_busy = Signal()
            m.d.sync += s_busy.eq(Mux(state == IDLE, start, (state == RUN) | ((state == TAIL) & ~tail_end)))
            if self.check_step:
                m.d.sync += Assert(s_busy == busy_now, Format("s_busy {} in state {}", s_busy, state))
        else:
            s_busy = busy_now
        incr = {
            "busy_cycles": s_busy,
            "step_cycles": step_c,
            "stall_cycles": ((state == RUN) & ~step_c) | ((state == TAIL) & out_wait),
            "macs": macs_inc,
            "in_beats": in_inc,
            "out_beats": row_fire | lo_fire,
            "errors": bad | (wfire & ~waddr_ok),
        }
        for name in COUNTERS:
            sync += cnt[name].eq(cnt[name] + incr[name])
        with m.If(wfire & ~waddr_ok & (err == ERR_NONE)):
            sync += err.eq(ERR_WADDR)
        return m


# --------------------------------------------------------------------------------------------
# driver side: checks, weight packing, golden outputs in stream form, cycle model
# --------------------------------------------------------------------------------------------

def check_k(cfg: AcceleratorConfig, k) -> int:
    """The layer's fan-in (predictor) or feature count (Assistant): 1..pred_kmax."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise PredictorArrayError(f"k={k!r} must be an integer")
    if not 1 <= int(k) <= cfg.pred_kmax:
        raise PredictorSizeError(f"k={k}: the predictor array serves 1..{cfg.pred_kmax} outputs "
                                 f"(pred_kmax); a {'zero-size' if k == 0 else 'wider'} layer is refused")
    return int(k)


def check_shift(s, name: str) -> int:
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) < ACC_BITS:
        raise PredictorArrayError(f"{name}={s!r}: a requantization shift must be an integer in 0..{ACC_BITS - 1}")
    return int(s)


def _word(vals, bits: int = PRED_OP_BITS) -> int:
    w = 0
    for i, v in enumerate(vals):
        w |= (int(v) & ((1 << bits) - 1)) << (bits * i)
    return w


def pack_predictor_weights(cfg: AcceleratorConfig, w1, w2) -> list[dict]:
    """Weight-stream beats for the conv weights (C, 1, 3, 3) and fc weights (K, F), int8.
    K may be below pred_kmax (the rest of the fc SRAM is not written)."""
    g = Geometry(cfg)
    w1 = numerics.check_fits(np.asarray(w1), PRED_OP_BITS, "predictor conv weight")
    w2 = numerics.check_fits(np.asarray(w2), PRED_OP_BITS, "predictor fc weight")
    if w1.shape != (g.C, 1, 3, 3):
        raise PredictorArrayError(f"conv weight shape {w1.shape} != ({g.C}, 1, 3, 3) (pred_channels)")
    if w2.ndim != 2 or w2.shape[1] != g.F or not 1 <= w2.shape[0] <= g.kmax:
        raise PredictorArrayError(f"fc weight shape {w2.shape}: need (1..{g.kmax}, {g.F}) (pred_kmax, pred_features)")
    beats = []
    wc = np.zeros((g.n_cg * g.R, 9), dtype=np.int64)
    wc[:g.C] = w1.reshape(g.C, 9)
    for c in range(g.n_cg):
        for tap in range(9):
            beats.append(dict(target=TGT_CONV, addr=c * 9 + tap, data=_word(wc[c * g.R:(c + 1) * g.R, tap])))
    n_kb = g.n_kb(w2.shape[0])
    wf = np.zeros((n_kb * g.L, g.F), dtype=np.int64)
    wf[:w2.shape[0]] = w2
    for kb in range(n_kb):
        for f in range(g.F):
            beats.append(dict(target=TGT_FC, addr=kb * g.F + f, data=_word(wf[kb * g.L:(kb + 1) * g.L, f])))
    return beats


def pack_assistant_weights(cfg: AcceleratorConfig, w_int, u_int) -> list[dict]:
    """Weight-stream beats for the Assistant: int8 weights (K,) and int32 class biases."""
    w_int = numerics.check_fits(np.asarray(w_int), PRED_OP_BITS, "assistant weights")
    u_int = numerics.check_fits(np.asarray(u_int), ACC_BITS, "assistant class bias")
    if w_int.ndim != 1:
        raise PredictorArrayError(f"assistant weights must be a vector, got shape {w_int.shape}")
    check_k(cfg, len(w_int))
    if not 1 <= len(u_int) <= ASSIST_CLASSES:
        raise PredictorArrayError(f"{len(u_int)} classes: the array holds 1..{ASSIST_CLASSES} class biases")
    beats = [dict(target=TGT_AW, addr=i, data=_word([v])) for i, v in enumerate(w_int)]
    beats += [dict(target=TGT_AU, addr=c, data=int(v) & 0xFFFFFFFF) for c, v in enumerate(u_int)]
    return beats


def golden_rows(cfg: AcceleratorConfig, x, params: dict, k: int, channels=None) -> list[dict]:
    """The gradient rows the array must send for samples x (N, 1, P, P): predictor_forward_int's
    outputs [0, k) cut into rows of pred_cols values, in the array's order."""
    g = Geometry(cfg)
    k = check_k(cfg, k)
    out = predictor_forward_int(x, params["w1"], params["w2"], params["shift1"], params["shift2"],
                                pool=cfg.pred_pool, k=k)
    n = out.shape[0]
    channels = list(range(n)) if channels is None else list(channels)
    rows = []
    for i in range(n):
        for r in range(g.rows_of(k)):
            col = r * g.Cc
            en = [int(col + j < k) for j in range(g.Cc)]
            vals = [int(out[i, col + j]) if en[j] else 0 for j in range(g.Cc)]
            rows.append(dict(data=vals, en=en, channel=int(channels[i]), col=col,
                             last=int(i == n - 1 and r == g.rows_of(k) - 1)))
    return rows


def golden_logits(cfg: AcceleratorConfig, x_int, w_int, u_int, y) -> list[dict]:
    """Assistant logits (assistant_logit_int) in the array's beats: groups of L instances."""
    g = Geometry(cfg)
    z = assistant_logit_int(x_int, w_int, u_int, y)
    n = len(z)
    n_groups = -(-n // g.L)
    beats = []
    for gi in range(n_groups):
        lanes = range(gi * g.L, min(n, (gi + 1) * g.L))
        zz = [int(z[i]) for i in lanes] + [0] * (g.L - len(lanes))
        en = [1] * len(lanes) + [0] * (g.L - len(lanes))
        beats.append(dict(z=zz, en=en, group=gi, last=int(gi == n_groups - 1)))
    return beats


def feature_beats(cfg: AcceleratorConfig, x_int, y) -> list[dict]:
    """Assistant input stream: for each group of L instances, one beat per feature."""
    g = Geometry(cfg)
    x_int = numerics.check_fits(np.asarray(x_int), PRED_OP_BITS, "assistant features")
    y = np.asarray(y, dtype=np.int64)
    n, kf = x_int.shape
    check_k(cfg, kf)
    if n == 0:
        raise PredictorArrayError("an empty batch has no instance to score")
    if y.shape != (n,) or y.min() < 0 or y.max() >= ASSIST_CLASSES:
        raise PredictorArrayError(f"labels {y.shape} must be (N,) in 0..{ASSIST_CLASSES - 1}")
    n_groups = -(-n // g.L)
    beats = []
    for gi in range(n_groups):
        idx = list(range(gi * g.L, min(n, (gi + 1) * g.L)))
        pad = g.L - len(idx)
        for fi in range(kf):
            beats.append(dict(x=[int(x_int[i, fi]) for i in idx] + [0] * pad,
                              y=[int(y[i]) for i in idx] + [0] * pad,
                              en=(1 << len(idx)) - 1,        # lane mask
                              last=int(gi == n_groups - 1 and fi == kf - 1)))
    return beats


def predictor_array_cycles(cfg: AcceleratorConfig, n_samples: int, k: int) -> dict:
    """Counters of one predictor job (n_samples samples, fan-in k), the samples always
    available and the output always ready.  Per sample: conv_steps + 1 drain (+ cdrain_wait)
    + ceil(k/L)*F fc steps + 1 drain.  A tile's result can be captured only once the previous
    one's rows have left: an fc capture lands in the output buffer ``lat = 1 + MAC_STAGES +
    CAP_FC`` cycles after its step, so consecutive captures need a gap of (rows of the
    previous) + 1 + lat steps, otherwise the difference is a stall.  After the last drain:
    lat + its rows."""
    g = Geometry(cfg)
    k = check_k(cfg, k)
    if n_samples < 1:
        raise PredictorArrayError(f"n_samples={n_samples}: a job has at least one sample")
    n_kb = g.n_kb(k)
    rows_last = g.rows_of(k) - (n_kb - 1) * g.R        # rows of a sample's last fc tile
    per_sample = g.conv_steps + 1 + g.cdrain_wait + n_kb * g.F + 1
    steps = n_samples * per_sample
    # an fc capture lands in the output buffer lat cycles after its step
    lat = 1 + MAC_STAGES + CAP_FC
    # stalls at captures: within a sample (gap F after a full tile), across samples
    stall_in = (n_kb - 1) * max(0, g.R + 1 + lat - g.F)
    stall_across = max(0, rows_last + 1 + lat - (g.conv_steps + g.F + 2 + g.cdrain_wait))
    stalls = n_samples * stall_in + (n_samples - 1) * stall_across
    tail = lat + rows_last
    macs = n_samples * (g.C * g.P2 * 9 + g.F * k)
    return dict(busy_cycles=steps + stalls + tail, step_cycles=steps, stall_cycles=stalls, macs=macs,
                in_beats=n_samples, out_beats=n_samples * g.rows_of(k))


def assistant_cycles(cfg: AcceleratorConfig, n: int, features: int) -> dict:
    """Counters of one Assistant job: n instances in groups of L, ``features`` steps
    and a drain step per group; a logit beat leaves 2 + MAC_STAGES cycles after its drain
    step, so a capture waits if the previous one is fewer than 3 + MAC_STAGES steps earlier."""
    g = Geometry(cfg)
    features = check_k(cfg, features)
    if n < 1:
        raise PredictorArrayError(f"n={n}: an empty batch has no instance to score")
    groups = -(-n // g.L)
    steps = groups * (features + 1)
    stalls = (groups - 1) * max(0, 3 + MAC_STAGES - (features + 1))
    return dict(busy_cycles=steps + stalls + 2 + MAC_STAGES, step_cycles=steps, stall_cycles=stalls,
                macs=n * features,
                in_beats=groups * features, out_beats=groups)
