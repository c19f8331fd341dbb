"""Weight-update unit: ``w <- sat(w - round(lr * g))`` on a weight tensor in the
engine's external memory, through its own memory port (read request/response and a
write stream), one gradient row at a time.  Golden: ``model_sw.numerics.sgd_update_int``
(and ``shift_round_saturate`` for the optional 8-bit operand copy), for weight tensors
whose values are in the 16-bit range (the unit reads a slot's low 16 bits).

GP steps: the rows are the predictor array's predicted (normalized) gradient rows
(``grad_row_layout``: int8 values of output channel ``channel`` at fan-in indices
``col .. col+pred_cols-1``, ``en`` per lane).  The integer scaling (documented in
docs/predictor.md): the array's output has frac ``fo`` (int_params()["frac_out"]); model_sw
de-normalizes by the layer's scale ``2**s`` (Trainer._gp_scale, a power of two in the
quantized mode) and multiplies by the learning rate ``2**lr_log2``; the weight tensor has
frac ``fw``; so ``g_shift = fw + lr_log2 + s - fo`` (one rounding shift, no multiplier).
BP steps apply true gradients through the same rows interface (int8 dW rows at frac
``fg``: ``g_shift = fw + lr_log2 - fg``).

Addressing without multipliers: rows arrive channel by channel (col 0 first), so the
row's base ``w_base + channel * k`` is a running sum (+k at every new channel); a
channel out of order is an error.  Optional copy: with ``copy8`` each updated weight is
also written, shifted right by ``d8`` (round half to even, saturated to 8 bits), to the
8-bit operand tensor at ``w8_base`` that the engine's next forward reads.
"""
from __future__ import annotations

from amaranth import Module, Signal, Mux, Cat, signed, unsigned
from amaranth.hdl import Assert, Format
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from rtl.config import AcceleratorConfig
from rtl.copies import COPY_KINDS, register_copies
from rtl.epilogue import (below_guard_mask, or_all, saturate_bits, shift_onehot, shift_round_bit,
                          table_lookup)
from rtl.gather import mem_rd_signature
from rtl.skid import offered_for
from .interfaces import grad_row_layout, PRED_OP_BITS

ERR_ORDER = 1          # a row's channel/col is not the next one expected
ERR_ADDR = 2           # the weight tensor leaves external memory
SH_LEFT_MAX = 24       # g_shift clamps (exact: see UpdateUnit.elaborate)
SH_RIGHT_MAX = 9
COUNTER_BITS = 48


class UpdateError(ValueError):
    """An update the unit cannot do; the message names the value."""


def copy_saturation_bounds(d8: int) -> tuple[int, int]:
    """(hi, lo) for the 8-bit copy ``sat8(round_half_even(w / 2**d8))`` of a 16-bit ``w``:
    it is 127 iff ``w >= hi`` and -128 iff ``w <= lo`` (rounding is monotone, so each
    saturated end is a half-line).  With d8 >= 1, round(w / 2**d8) >= 127 iff w / 2**d8 >
    126.5 (the tie 126.5 goes to the even 126) and <= -128 iff w / 2**d8 <= -127.5 (the
    tie goes to the even -128).  Clamped one past the 16-bit range where an end is out of
    reach, so both fit 18-bit signed compares.  (The unit's low path is exact up to the
    end values themselves, so ``>`` for ``>=`` would do as well; the tests move the bounds
    further to fail.)"""
    if not 0 <= d8 <= 16:
        raise UpdateError(f"copy_saturation_bounds: d8={d8} outside 0..16 (the unit clamps at 16)")
    if d8 == 0:
        return 127, -128
    return min(253 * (1 << (d8 - 1)) + 1, 1 << 15), max(-255 * (1 << (d8 - 1)), -(1 << 15) - 1)


def update_desc_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({
        "w_base": unsigned(cfg.mem_addr_bits),   # weight tensor [C_out, k] (row-major)
        "k": unsigned(cfg.dim_bits),             # fan-in (row stride)
        "c_out": unsigned(cfg.dim_bits),
        "g_shift": signed(7),                    # lr * g on the weight grid: round(g * 2**g_shift)
        "w16": unsigned(1),                      # weights are 16-bit (else 8-bit)
        "copy8": unsigned(1),                    # also write the 8-bit operand copy
        "w8_base": unsigned(cfg.mem_addr_bits),
        "d8": unsigned(5),                       # copy = sat8(round(w' >> d8))
        "from_mem": unsigned(1),                 # BP: gradient rows read from memory (int8 dW at g_base)
        "g_base": unsigned(cfg.mem_addr_bits),
        "after": unsigned(16),                   # start once the engine has retired this many instructions
    })


def update_wr_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    L = cfg.pred_cols
    return data.StructLayout({
        "addr": data.ArrayLayout(unsigned(cfg.mem_addr_bits), 2 * L),   # lanes 0..L-1 w, L..2L-1 the copy
        "data": data.ArrayLayout(unsigned(cfg.slot_bits), 2 * L),
        "en": unsigned(2 * L),
    })


def update_descriptor(cfg: AcceleratorConfig, *, w_base: int, c_out: int, k: int, g_shift: int,
                      w_bits: int = 16, w8_base: int | None = None, d8: int = 0,
                      g_base: int | None = None, after: int = 0, name: str = "layer") -> dict:
    """One layer's update.  GP: rows come from the predictor array.  BP (``g_base``
    given): the unit reads the true gradient, int8 [C_out, k] at ``g_base`` (the engine's
    requantized dW), once the engine has retired ``after`` instructions."""
    if c_out < 1 or k < 1:
        raise UpdateError(f"{name}: zero-size weight tensor (C_out={c_out}, k={k})")
    if w_bits not in (8, 16):
        raise UpdateError(f"{name}: w_bits={w_bits} must be 8 or 16")
    if not -63 <= g_shift <= 63:
        raise UpdateError(f"{name}: g_shift={g_shift} outside -63..63")
    if not 0 <= d8 < 32:
        raise UpdateError(f"{name}: d8={d8} outside 0..31")
    if not 0 <= after < 1 << 16:
        raise UpdateError(f"{name}: after={after} outside 0..65535")
    for what, base in (("w_base", w_base), ("w8_base", w8_base), ("g_base", g_base)):
        if base is not None and (base < 0 or base + c_out * k > cfg.mem_words):
            raise UpdateError(f"{name}: {what}={base}: the tensor [{c_out}, {k}] leaves memory of "
                              f"{cfg.mem_words} slots")
    return {"w_base": w_base, "k": k, "c_out": c_out, "g_shift": g_shift, "w16": int(w_bits == 16),
            "copy8": int(w8_base is not None), "w8_base": w8_base or 0, "d8": d8,
            "from_mem": int(g_base is not None), "g_base": g_base or 0, "after": after}


DELTA_EXACT = 18      # delta bits the new weight's subtract keeps (see _new_weight)


def _new_weight(m, w, delta, w16, name):
    """sat(w - delta) to 16 bits (``w16``) or 8, for a weight ``w`` in the 16-bit range,
    with a subtract of DELTA_EXACT + 1 bits instead of delta's full width (for Fmax: the
    full-width subtract and the saturation on its top 20 bits were a routed critical path
    of the Accelerator).  Exact: |w| <= 2**15, so for a delta in signed 18 bits w - delta
    fits signed 19 bits, and a delta outside it saturates the result either way (delta >=
    2**17 gives w - delta < -2**15, delta < -2**17 gives w - delta > 2**15); whether delta
    fits is a test of its top bits, in parallel with the subtract."""
    top = delta[DELTA_EXACT - 1:]
    outside = top.any() & ~top.all()
    diff = Signal(signed(DELTA_EXACT + 1), name=f"{name}_diff")
    m.d.comb += diff.eq(w - delta[:DELTA_EXACT].as_signed())
    high = Mux(w16, (1 << 15) - 1, (1 << 7) - 1)
    low = Mux(w16, -(1 << 15), -(1 << 7))
    nw = Signal(signed(16), name=name)
    m.d.comb += nw.eq(Mux(outside, Mux(delta[-1], high, low),
                          Mux(w16, saturate_bits(diff, 16), saturate_bits(diff, 8))))
    return nw


class UpdateUnit(wiring.Component):
    """Ports: ``desc`` (one per layer, consumed with the layer's ``last`` row), ``rows``,
    ``mem`` (read port, pred_cols lanes), ``wr`` (write stream), ``layers_done`` (count of
    finished layer updates), ``busy`` (a layer's descriptor held), ``working`` (a row in
    flight), ``error`` (sticky), ``elems`` (weights updated)."""

    def __init__(self, cfg: AcceleratorConfig, check_state: bool = False):
        self.cfg = cfg
        self.check_state = check_state     # simulation: assert the kept flags each cycle
        super().__init__({
            "desc": In(stream.Signature(update_desc_layout(cfg))),
            "rows": In(stream.Signature(grad_row_layout(cfg))),
            "mem": Out(mem_rd_signature(cfg, cfg.pred_cols)),
            "wr": Out(stream.Signature(update_wr_layout(cfg))),
            "retired": In(48),          # the engine's retired-instruction counter (BP fence)
            "layers_done": Out(16),
            "busy": Out(1),
            "working": Out(1),
            "error": Out(2),
            "elems": Out(COUNTER_BITS),
        })

    def _read_row(self, m, req, resp, then, base, row, store):
        """Two FSM states: request the row's lanes at ``base + col + j``, then ``store``
        each response lane; go to ``then``."""
        with m.State(req):
            m.d.comb += self.mem.req.valid.eq(1)
            for j in range(self.cfg.pred_cols):
                m.d.comb += self.mem.req.payload.addr[j].eq(base + row.col + j)
            m.d.comb += self.mem.req.payload.en.eq(row.en)
            with m.If(self.mem.req.ready):
                m.next = resp
        with m.State(resp):
            m.d.comb += self.mem.resp.ready.eq(1)
            with m.If(self.mem.resp.valid):
                m.d.sync += [store(j, self.mem.resp.payload[j]) for j in range(self.cfg.pred_cols)]
                m.next = then

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        L = cfg.pred_cols
        aw = cfg.mem_addr_bits
        d = Signal(update_desc_layout(cfg))
        have = Signal()
        row = Signal(grad_row_layout(cfg))
        ch_base = Signal(aw + cfg.dim_bits + 1)      # w_base + channel * k (running)
        g_row = Signal(aw + cfg.dim_bits + 1)        # g_base + channel * k (running, BP)
        c8_base = Signal(aw + cfg.dim_bits + 1)
        exp_ch = Signal(cfg.dim_bits)
        exp_col = Signal(cfg.dim_bits + 1)
        # The row ends its channel (col + L >= k), registered with the row.  The running
        # bases and the expected row move to the next channel when such a row's write is
        # taken (for Fmax: their ~70 enables are WRITE's, not the row acceptance's, which
        # waits for the rows FIFO and the row's compares), so a row is always expected at
        # (exp_ch, exp_col).
        row_ends_ch = Signal()
        first = Signal()
        err = Signal(2)
        m.d.comb += self.error.eq(err)
        # A weight is a 16-bit (or 8-bit, sign-extended) value in its slot, so only the slot's
        # low 16 bits are read: the shift clamp below already relies on weights being in
        # the 16-bit range, and the new weight's subtract and saturation are 35 bits wide,
        # not slot_bits + 35 (for Fmax: the 67-bit subtract at `default` was a routed
        # critical path of the Accelerator).
        W_READ = 16
        wvals = Signal(data.ArrayLayout(signed(W_READ), L))
        # The shift amounts are registered when the descriptor is taken (off the row path)
        # and clamped where the result no longer changes: an int8 gradient shifted right by
        # 9 or more rounds to 0, and shifted left by 24 or more saturates the 16-bit weight
        # either way, so a 32-bit shifter is exact for every g_shift in -63..63.
        sh_l = Signal(range(SH_LEFT_MAX + 1))
        sh_r = Signal(range(SH_RIGHT_MAX + 1))
        # (as tables of the 7-bit shift, for Fmax: the compares, the negation and the selects
        # were carry chains after the descriptor's 3.5 ns hop from the board's register
        # slice, 139afe9's ULX3S critical path, 79.59 MHz)
        gs = self.desc.payload.g_shift
        sh_l_next = table_lookup(gs, lambda v: min(max(v, 0), SH_LEFT_MAX), len(sh_l))
        sh_r_next = table_lookup(gs, lambda v: min(max(-v, 0), SH_RIGHT_MAX), len(sh_r))
        # Also per layer: the rounding masks (bits below the guard bit) of the gradient's
        # right shift and of the copy's shift ``d8``, clamped at 16 where a 16-bit weight
        # rounds to 0 either way (|w| <= 2**15 <= 2**(d8-1), ties to the even 0).
        gw = PRED_OP_BITS + 2                      # x >> sh_r with sh_r <= 9: the guard bit exists
        cw = 16 + 2
        d8c = Signal(range(17))
        below_r = Signal(gw)
        below_c = Signal(cw)
        d8_next = table_lookup(self.desc.payload.d8, lambda v: min(v, 16), len(d8c))
        # The masks follow the registered shifts a cycle later (off the descriptor's path: on a
        # board the descriptor comes from a stream buffer, and clamp + mask in one cycle was the
        # ULX3S build's critical path).
        # With them, the shifts' one-hots (shift_round_bit's AND-OR form of the guard bit and
        # q[0]; d8_oh also reads the copy's bounds below).
        sh_r_oh = Signal(SH_RIGHT_MAX + 1)
        d8_oh = Signal(17)
        m.d.sync += [below_r.eq(below_guard_mask(sh_r, gw)), below_c.eq(below_guard_mask(d8c, cw)),
                     sh_r_oh.eq(shift_onehot(sh_r, len(sh_r_oh))), d8_oh.eq(shift_onehot(d8c, len(d8_oh)))]
        # The copy's saturation bounds for this d8, a small table read through d8_oh (an
        # AND-OR a cycle after it, not a priority chain of compares): the copy's saturated
        # ends are compares of the registered weight with them, beside the shifter, not
        # range tests on the shifter's output (for Fmax: shifter, range tests and their mux
        # were the ULX3S build's critical path).  Final three cycles after the take, long
        # before the first COPY.
        sat_hi, sat_lo = Signal(signed(18)), Signal(signed(18))
        def table(end):
            return or_all(Mux(d8_oh[v], copy_saturation_bounds(v)[end], 0) for v in range(17))
        m.d.sync += [sat_hi.eq(table(0)), sat_lo.eq(table(1))]
        # Per row, three register stages after the weights arrive:
        # * ``deltas``, the rounded, scaled gradient, is loaded every cycle from the held row,
        #   in two register stages: the shift and its round-up bit, then the rounding add and
        #   the choice of direction (for Fmax: the shifter, the rounding bit tests and the add
        #   were one estimated worst path).  The row is stable from the cycle after ROW (GRESP
        #   for BP) until WRITE, i.e. from REQ on, so deltas is fresh two cycles after REQ,
        #   which is CALC at the earliest (REQ, RESP, CALC with a one-cycle memory); the
        #   masks, two cycles behind the descriptor, are fresh by the row's REQ at the
        #   latest.  No state of its own.
        # * CALC: the saturated new weight ``nws``.
        # * COPY: the 8-bit copy's first half, from ``nws``: the shifted value's low 8 bits
        #   ``c_q``, its round-up bit ``c_up`` and the saturated ends ``c_hi``, ``c_lo``.
        #   WRITE drives the beat's copy lanes from them through an 8-bit add and a select
        #   (for Fmax: the shift, rounding and saturation in one cycle were the ULX3S
        #   build's critical path; on a board the beat goes to the memory's beat register).
        deltas = Signal(data.ArrayLayout(signed(PRED_OP_BITS + SH_LEFT_MAX + 2), L))
        nws = Signal(data.ArrayLayout(signed(16), L))
        c_q = Signal(data.ArrayLayout(unsigned(8), L))
        c_up, c_hi, c_lo = Signal(L), Signal(L), Signal(L)
        new_d, new_w, copy_regs, copy_out = [], [], [], []
        # the right shift once more per lane, in copies of distinct kinds (for Fmax: one sh_r
        # register drove every lane's shifter decode, ~130 loads, on an estimated 9.6 ns
        # path); the copies follow sh_r a cycle later, like the masks
        sh_r_lane = (register_copies(m, sh_r, [COPY_KINDS[j % len(COPY_KINDS)] for j in range(L)], "sh_r")
                     if cfg.fmax_logic else [sh_r] * L)
        for j in range(L):
            xg = Signal(signed(gw), name=f"d{j}_x")
            m.d.comb += xg.eq(row.data[j])
            # round_half_even(x / 2**sh_r) = q + up by rtl.epilogue's bit tests (below_r: the
            # mask of the bits under the guard bit); x << sh_l for a left shift
            q, up = shift_round_bit(xg, sh_r_lane[j], below_r, sh_r_oh)
            dq, dup = Signal(signed(gw), name=f"d{j}_q"), Signal(name=f"d{j}_up")
            dl = Signal(signed(PRED_OP_BITS + SH_LEFT_MAX), name=f"d{j}_l")
            m.d.sync += [dq.eq(q), dup.eq(up), dl.eq(row.data[j] << sh_l)]
            new_d.append(Mux(sh_r != 0, dq + dup, dl))
            new_w.append(_new_weight(m, wvals[j], deltas[j], d.w16, f"nw{j}"))
            xc = Signal(signed(cw), name=f"c{j}_x")
            m.d.comb += xc.eq(nws[j])
            # the copy: saturate(round(nw / 2**d8), 8) as the saturated ends by compares with
            # the layer's bounds, else the low 8 bits of the rounded shift (in between it
            # lies in -127..126, so an 8-bit rounding add is exact)
            cq, cup = shift_round_bit(xc, d8c, below_c, d8_oh)
            copy_regs += [c_q[j].eq(cq[:8]), c_up[j].eq(cup),
                          c_hi[j].eq(nws[j] >= sat_hi), c_lo[j].eq(nws[j] <= sat_lo)]
            nc = Signal(signed(8), name=f"nc{j}")
            m.d.comb += nc.eq(Mux(c_hi[j], 127, Mux(c_lo[j], -128, (c_q[j] + c_up[j])[:8].as_signed())))
            copy_out.append(nc)
        m.d.sync += [deltas[j].eq(new_d[j]) for j in range(L)]
        elems = Signal(COUNTER_BITS)
        m.d.comb += self.elems.eq(elems)
        done = Signal(16)
        m.d.comb += self.layers_done.eq(done)
        m.d.comb += self.busy.eq(have)
        in_write = Signal()
        in_row = Signal()
        # The fence (retired >= after) is registered, and a descriptor is taken only once
        # that register is its own: ``desc_seen``, valid in the previous cycle and not taken
        # then (a stream's payload is held while valid).  For Fmax: ad5a7b9's board critical
        # path ran from the engine's retired counter through the 48-bit compare into the
        # descriptor's ready and on into the register slice in front of it (80.8 MHz).  A
        # descriptor waiting at the head, the normal case, is taken as before; one that
        # arrives, or whose fence opens, waits a cycle more (the BP fence is not cycle-modelled).
        fence_q = Signal()
        m.d.sync += fence_q.eq(self.retired >= self.desc.payload.after)
        desc_seen = offered_for(m, self.desc.valid, self.desc.ready, 1, "desc_seen")
        with m.FSM() as fsm:
            with m.State("DESC"):
                go = (err == 0) & fence_q & desc_seen
                m.d.comb += self.desc.ready.eq(go)
                # The descriptor's registers follow the payload in every DESC cycle and hold
                # from the one that takes it (for Fmax: their ~150 enables are the state, not
                # the acceptance, which waits for a 48-bit compare with the engine's retired
                # count; that compare in front of them was a routed critical path).  Nothing
                # reads them in DESC: the last row's write is done, and the masks that follow
                # sh_r and d8c are final two cycles after the take, by the first REQ.
                m.d.sync += [d.eq(self.desc.payload), ch_base.eq(self.desc.payload.w_base),
                             sh_l.eq(sh_l_next), sh_r.eq(sh_r_next), d8c.eq(d8_next),
                             c8_base.eq(self.desc.payload.w8_base), g_row.eq(self.desc.payload.g_base),
                             exp_ch.eq(0), exp_col.eq(0)]
                with m.If(self.desc.valid & go):
                    m.d.sync += have.eq(1)
                    with m.If(self.desc.payload.from_mem):
                        m.next = "GROW"
                    with m.Else():
                        m.d.sync += in_row.eq(1)
                        m.next = "ROW"
            with m.State("GROW"):      # BP: the next row of the true gradient, made here
                m.d.sync += [row.channel.eq(exp_ch), row.col.eq(exp_col)]
                m.next = "GROW2"
            with m.State("GROW2"):     # the row's lane enables and last flag, from the registered row
                m.d.sync += [row.en.eq(Cat(*[(row.col + j < d.k) for j in range(L)])),
                             row.last.eq((row.channel + 1 == d.c_out) & (row.col + L >= d.k)),
                             row_ends_ch.eq(row.col + L >= d.k)]
                m.next = "GREQ"
            self._read_row(m, "GREQ", "GRESP", "REQ", g_row, row,
                           lambda j, v: row.data[j].eq(Mux(row.en[j], v[:PRED_OP_BITS], 0)))
            with m.State("ROW"):
                with m.If(self.rows.valid):
                    p = self.rows.payload
                    m.d.sync += in_row.eq(0)
                    with m.If((p.channel == exp_ch) & (p.col == exp_col)):
                        m.next = "REQ"
                    with m.Else():
                        m.d.sync += err.eq(ERR_ORDER)
                        m.next = "ERROR"
            self._read_row(m, "REQ", "RESP", "CALC", ch_base, row,
                           lambda j, v: wvals[j].eq(v[:W_READ].as_signed()))
            with m.State("CALC"):
                m.d.sync += [nws[j].eq(new_w[j]) for j in range(L)]
                m.next = "COPY"
            with m.State("COPY"):
                m.d.sync += [*copy_regs, in_write.eq(1)]
                m.next = "WRITE"
            with m.State("WRITE"):
                with m.If(self.wr.ready):
                    m.d.sync += in_write.eq(0)
                    with m.If(row.last):
                        m.d.sync += [done.eq(done + 1), have.eq(0)]
                        m.next = "DESC"
                    with m.Elif(d.from_mem):
                        m.next = "GROW"
                    with m.Else():
                        m.d.sync += in_row.eq(1)
                        m.next = "ROW"
            with m.State("ERROR"):
                pass
        # The write beat's state as a flag of its own (``in_write``, equal to "the FSM is in
        # WRITE": set on COPY's way there, cleared when the beat is taken, WRITE's only way
        # out), for the beat's valid and the enables it takes (for Fmax: the FSM state's
        # decode, ~330 loads, and the acceptance were in front of the bases' ~70 enables)
        m.d.comb += self.wr.valid.eq(in_write)
        # The same for ROW (``in_row``: set on the ways there, cleared when a row is taken,
        # ROW's only way out): the rows' ready and the row register's enables (for Fmax: the
        # state's decode was two LUTs in front of the rows FIFO's read enable, ~77 loads,
        # and its level, the estimate's worst path after c4473a0, 10.05 ns)
        m.d.comb += self.rows.ready.eq(in_row)
        with m.If(in_row & self.rows.valid):
            p = self.rows.payload
            m.d.sync += [row.eq(p), row_ends_ch.eq(p.col + L >= d.k)]
        if self.check_state:
            # simulation only: the flags equal their definitions, every cycle
            m.d.sync += Assert(in_write == fsm.ongoing("WRITE"),
                               Format("in_write {} but FSM in WRITE is {}", in_write, fsm.ongoing("WRITE")))
            m.d.sync += Assert(in_row == fsm.ongoing("ROW"),
                               Format("in_row {} but FSM in ROW is {}", in_row, fsm.ongoing("ROW")))
        for j in range(L):
            m.d.comb += [self.wr.payload.addr[j].eq(ch_base + row.col + j),
                         self.wr.payload.data[j].eq(nws[j]),
                         self.wr.payload.addr[L + j].eq(c8_base + row.col + j),
                         self.wr.payload.data[L + j].eq(copy_out[j])]
        m.d.comb += self.wr.payload.en.eq(row.en | Mux(d.copy8, row.en << L, 0))
        with m.If(in_write & self.wr.ready):
            m.d.sync += elems.eq(elems + sum(row.en[j] for j in range(L)))
            with m.If(row_ends_ch):
                m.d.sync += [exp_ch.eq(exp_ch + 1), exp_col.eq(0), ch_base.eq(ch_base + d.k),
                             c8_base.eq(c8_base + d.k), g_row.eq(g_row + d.k)]
            with m.Else():
                m.d.sync += exp_col.eq(row.col + L)
        m.d.comb += self.working.eq(fsm.ongoing("REQ") | fsm.ongoing("RESP") | fsm.ongoing("CALC")
                                    | fsm.ongoing("COPY") | fsm.ongoing("WRITE")
                                    | fsm.ongoing("GROW") | fsm.ongoing("GROW2") | fsm.ongoing("GREQ")
                                    | fsm.ongoing("GRESP"))
        return m
