"""The training engine: instruction intake, two operand-gather DMAs, scratchpads,
the systolic array, the accumulator SRAM, the epilogue and the output writer.

One GEMM instruction (see ``rtl.isa``) runs as:

  decode/check -> A and B gathers stream panels into scratchpads A and B
               -> the sequencer steps through output tiles (ti, tj), K steps each,
                  a step as soon as its A and B words are in the scratchpads, tiles
                  back to back (the array double-buffers results, see rtl.systolic)
               -> rows of finished tiles leave the array, optionally add the
                  accumulator SRAM's partial sums, and are either kept there
                  (store=0) or requantized and written out with their ReLU mask.

Sparsity (docs/sparsity.md): ``omask`` zeroes outputs whose mask bit (read
through the mask port ``rd_m``) is 0; ``compact_a`` steps only A's nonzero words;
``ocompact`` computes only the output columns some row needs (gather B's lane walk
drops the others, the zero-write port ``wz`` clears them, the writer scatters the
kept columns with the offsets from the panel-info ring).

All timing is deterministic given the memory's behaviour, which is what lets
``cosim.cyclemodel`` reproduce the cycle counters exactly.
"""

from amaranth import Module, Signal, Mux, Cat, Const, Value, signed, unsigned
from amaranth.lib import wiring, stream, data, memory
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from . import isa
from .config import AcceleratorConfig
from .copies import COPY_KINDS, register_copies
from .epilogue import Requantize
from .gather import (OperandGather, mem_rd_signature, mem_req_layout, occupancy_room, panel_info_layout,
                     skid_issue)
from .systolic import SystolicArray, product_stages

COUNTER_BITS = 48
COUNTERS = (
    "cycles",          # since reset
    "busy_cycles",     # an instruction in flight
    "compute_cycles",  # the array took a valid step
    "stall_cycles",    # the array wanted to step but waited for operands or output space
    "macs",            # useful multiply-accumulates (inside M x N x K)
    "rd_bytes",        # external bytes read (operand elements x operand bytes)
    "wr_bytes",        # external bytes written for D
    "mask_bits",       # ReLU mask bits written
    "spad_reads",      # scratchpad word reads (A and B)
    "spad_writes",     # scratchpad word writes (A and B)
    "acc_reads",       # accumulator SRAM row reads
    "acc_writes",      # accumulator SRAM row writes
    "retired",         # instructions completed
    "errors",          # instructions that ended with an error status
    "mask_rd_bits",    # output-mask (omask) bits read
)
# the counters an engine built with ``all_counters=False`` keeps (rtl/config.py)
CORE_COUNTERS = ("busy_cycles", "compute_cycles", "stall_cycles", "macs", "retired", "errors")


def buffered_fifo_inner_level(m: Module, fifo: SyncFIFOBuffered, depth: int, name: str):
    """A copy of ``fifo``'s inner level (SyncFIFOBuffered of ``depth``: an inner memory of
    ``depth - 1`` rows and an output register), kept by the FIFO's own rule, for flags
    registered from it (the FIFO's ``level`` adds the output register's valid to it).
    Returns ``next_is(v)``: "the copy's next value is ``v``", by the cases of the
    cycle's write and read, with compares of the copy's register against constants
    beside them (for Fmax: no add or subtract after the pop decision)."""
    inner = Signal(range(depth), name=f"{name}_inner")
    write = fifo.w_en & fifo.w_rdy
    inner_read = (inner != 0) & (~fifo.r_rdy | fifo.r_en)
    up, down = write & ~inner_read, inner_read & ~write
    m.d.sync += inner.eq(Mux(up, inner + 1, Mux(down, inner - 1, inner)))

    def next_is(v: int):
        return Mux(up, inner == v - 1, Mux(down, inner == v + 1, inner == v))
    return next_is


def counter_names(cfg: AcceleratorConfig | None = None) -> tuple:
    """The engine's counters, in order (all of COUNTERS without a config)."""
    if cfg is None or cfg.all_counters:
        return COUNTERS
    return tuple(n for n in COUNTERS if n in CORE_COUNTERS)


OUT_FIFO_ROWS = 4
# Copies of the registered stall decision (see the engine's drain section): the array's
# rows and its feed take EN_COPIES - 2 of them round robin, the drain's data registers one,
# the sequencer and the drain's counters one (rtl/copies.py: why eight at most).
EN_COPIES = 8


# the kinds of register_copies() for EN_COPIES (all eight) and for `start` (a pulse: each
# copy is 0 after configuration and reset, init == pol)
EN_KINDS = COPY_KINDS[:EN_COPIES]
START_KINDS = [(0, 0, 0), (1, 1, 0), (0, 0, 1), (1, 1, 1)]   # the sequencer's, gather A's, gather B's, the heads'
STEP_KINDS = [(0, 0, 0), (1, 1, 0)]                   # `step` (the datapath's), `step_s` (the sequencer's)


def mask_queue_rows(cfg: AcceleratorConfig) -> int:
    """Depth of the output-mask row queue: deep enough that the mask reader, which
    runs ahead in drain order, always has a tile row's mask before the row leaves
    the array (rows leave at most R per 2R-1 cycles; a re-issued read takes about
    LAT + 4 cycles), so masking never changes the timing."""
    return 2 * cfg.dram_latency + 8


PANEL_INFO_DEPTH = 16
ZQ_DEPTH = 4                  # the zero-write queue (ocompact)


def shift_add_mul(a, b):
    """``a * b`` for a small unsigned ``b``: shifted copies of ``a`` added (LUT logic,
    so it takes no DSP block: the DSPs are the PEs')."""
    b = Value.cast(b)
    return sum((Mux(b[i], a << i, 0) for i in range(len(b))), Const(0))


def const_mul(c: int, x):
    """``c * x`` for a constant ``c >= 0``: shifted copies of ``x`` added (no DSP)."""
    return sum((x << i for i in range(c.bit_length()) if c >> i & 1), Const(0))


def carry_gt(a, b, ring_bits: int | None = None):
    """a > b as the sign of b - a, one carry chain (for Fmax: Yosys mapped some of the
    sequencer's plain compares as chains of LUTs).  With ``ring_bits``: counts that wrap
    modulo 2**ring_bits and are less than 2**(ring_bits-1) apart, compared by the top bit
    of (b - a) mod 2**ring_bits (a chain ``ring_bits`` long, whatever the counts' widths)."""
    a, b = Value.cast(a), Value.cast(b)
    if ring_bits is None:
        return (b - a)[-1]
    return (b[:ring_bits] - a[:ring_bits])[ring_bits - 1]


def carry_ge(a, b, ring_bits: int | None = None):
    """a >= b: not a < b (see carry_gt)."""
    return ~carry_gt(b, a, ring_bits)


def panel_info_depth(cfg: AcceleratorConfig) -> int:
    """Depth of the ocompact panel-info ring (lane offsets and masks of the panels
    between gather B and the writer): a bound on N/C unless the ring runs."""
    return PANEL_INFO_DEPTH


def ocompact_ring(cfg: AcceleratorConfig, k: int) -> bool:
    """ocompact may stream any number of columns through scratchpad B as a ring
    when 2R-1 <= K <= depth/2 (and 8K >= ring_min_8k): the gather then hands
    panels over no faster than the array takes tiles, so it is never more than a
    panel ahead of the array (its requests stay below b_base + depth) and the drain,
    which trails the array by C + 2R + 9 + P cycles (the registered scratchpad-B address,
    the registered scratchpad read, the PE's P product registers, the five drain stages),
    at most 1 + 8 + ceil(6/K) <= 15 panels behind (the info ring holds 16): neither ring limit ever stalls it and the timing stays
    exact."""
    return (cfg.drain_period <= k and 2 * k <= cfg.spad_b_words
            and 8 * k >= ring_min_8k(cfg))


def ring_min_8k(cfg: AcceleratorConfig) -> int:
    """ocompact_ring's bound on 8K: the drain's lag behind the array, C + 2R + 9 +
    product_stages cycles, less 6 (the panels' count bound above holds for any K)."""
    return cfg.cols + 2 * cfg.rows + 3 + product_stages(cfg)


def zero_wr_layout(cfg: AcceleratorConfig):
    """A zero-write beat (ocompact): C slots set to 0 at per-lane addresses."""
    return data.StructLayout({
        "addr": data.ArrayLayout(unsigned(cfg.mem_addr_bits), cfg.cols),
        "en": unsigned(cfg.cols),
    })


def counters_layout(cfg: AcceleratorConfig):
    """The configuration's counters, ``cfg.counter_bits`` wide each."""
    return data.StructLayout({name: unsigned(cfg.counter_bits) for name in counter_names(cfg)})


def mem_wr_layout(cfg: AcceleratorConfig):
    """One write beat: a row of C results and, beside it, their C ReLU-mask bits
    (so that writing the mask never halves the output bandwidth)."""
    C = cfg.cols
    return data.StructLayout({
        "addr": data.ArrayLayout(unsigned(cfg.mem_addr_bits), C),
        "data": data.ArrayLayout(unsigned(cfg.slot_bits), C),
        "en": unsigned(C),
        "mask_addr": data.ArrayLayout(unsigned(cfg.mem_addr_bits), C),
        "mask": unsigned(C),
        "mask_en": unsigned(C),
    })


def bound_facts(m, value, width: int, name: str) -> dict:
    """``value == 1``, ``value == 2``, ``value - 2`` and ``value - 3`` as registers (``is1``,
    ``is2``, ``m2``, ``m3``), loaded every cycle from a value held through the instruction:
    a counter's "the step after this one is the last" test is then ``counter == m2``, an
    equality of registers, not an adder and a compare (for Fmax), and that test's own
    next value ``counter == m3`` (or ``is2`` at a restart).  m2 and m3 wrap below 0 to
    values near 2**width - 1, which no counter below the value equals.  Unused facts
    cost nothing (synthesis removes them)."""
    facts = {"is1": Signal(name=f"{name}_is1"), "is2": Signal(name=f"{name}_is2"),
             "m2": Signal(width, name=f"{name}_m2"), "m3": Signal(width, name=f"{name}_m3")}
    m.d.sync += [facts["is1"].eq(value == 1), facts["is2"].eq(value == 2),
                 facts["m2"].eq(value - 2), facts["m3"].eq(value - 3)]
    return facts


def next_is_m2(start, moves, restarts, counter, facts, flag):
    """The next value of ``flag`` = (counter == m2) for a counter that goes to 0 at
    ``start`` or when it ``moves`` and ``restarts``, and up by one when it ``moves``
    otherwise: is2 at a restart, counter == m3 at a move on (for Fmax: the flag is a
    register, and its next value two compares and selects of registers)."""
    return Mux(start, facts["is2"], Mux(moves, Mux(restarts, facts["is2"], counter == facts["m3"]), flag))


def tile_col_restart(tj, tj_last, nn):
    """A tile-column counter back to 0, with its registered "last column" flag
    (tj + 1 == n_n kept as a register, for Fmax: no compare in series with its users).
    ``nn``: the instruction's registered column facts (``is1``: n_n == 1, ``m2``: n_n - 2)."""
    return [tj.eq(0), tj_last.eq(nn["is1"])]


def tile_col_next(tj, tj_last, nn):
    """A tile-column counter one column on, with its registered "last column" flag
    (tj + 2 == n_n as an equality of registers, no adder in front of it)."""
    return [tj.eq(tj + 1), tj_last.eq(tj == nn["m2"])]


class Engine(wiring.Component):
    def __init__(self, cfg: AcceleratorConfig):
        self.cfg = cfg
        super().__init__({
            "instr": In(stream.Signature(isa.instr_layout(cfg))),
            "rd_a": Out(mem_rd_signature(cfg, cfg.rows)),
            "rd_b": Out(mem_rd_signature(cfg, cfg.cols)),
            "wr": Out(stream.Signature(mem_wr_layout(cfg))),
            # output-mask reads (omask); idle unless an instruction sets omask
            "rd_m": Out(mem_rd_signature(cfg, cfg.cols)),
            # zero writes of output columns no row needs (ocompact); idle otherwise
            "wz": Out(stream.Signature(zero_wr_layout(cfg))),
            "busy": Out(1),
            "error": Out(4),           # first error code since reset (sticky)
            "counters": Out(counters_layout(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        dw = cfg.dim_bits
        lg_r, lg_c = (R - 1).bit_length(), (C - 1).bit_length()
        cur = Signal(isa.engine_layout(cfg))     # = instr_layout unless options are off

        # ---------------- storage -----------------------------------------------
        m.submodules.spad_a = spad_a = memory.Memory(
            shape=data.ArrayLayout(signed(cfg.op_bits), R), depth=cfg.spad_a_words, init=[])
        m.submodules.spad_b = spad_b = memory.Memory(
            shape=data.ArrayLayout(signed(cfg.op_bits), C), depth=cfg.spad_b_words, init=[])
        m.submodules.acc_sram = acc_sram = memory.Memory(
            shape=data.ArrayLayout(signed(cfg.acc_bits), C), depth=cfg.acc_words, init=[])
        spa_w, spa_r = spad_a.write_port(), spad_a.read_port()
        spb_w, spb_r = spad_b.write_port(), spad_b.read_port()
        acc_w, acc_r = acc_sram.write_port(), acc_sram.read_port()

        # ---------------- gathers ---------------------------------------------------
        # (cfg.sparse False: no compact side memory, no lane compaction; the ISA has no
        # sparse fields, so every use of them below is the constant 0)
        m.submodules.gather_a = ga = OperandGather(cfg, R, cfg.spad_a_words, compactable=cfg.sparse)
        m.submodules.gather_b = gb = OperandGather(cfg, C, cfg.spad_b_words, lane_compactable=cfg.sparse)
        wiring.connect(m, ga.mem, wiring.flipped(self.rd_a))
        wiring.connect(m, gb.mem, wiring.flipped(self.rd_b))
        m.d.comb += [ga.desc.eq(cur.a), ga.total.eq(cur.m), ga.k.eq(cur.k),
                     gb.desc.eq(cur.b), gb.total.eq(cur.n), gb.k.eq(cur.k),
                     spa_w.addr.eq(ga.wr_addr), spa_w.data.eq(ga.wr_data), spa_w.en.eq(ga.wr_en),
                     spb_w.addr.eq(gb.wr_addr), spb_w.data.eq(gb.wr_data), spb_w.en.eq(gb.wr_en)]

        # ---------------- decode-time quantities -------------------------------------
        n_m = Signal(dw)          # tiles along M
        n_n = Signal(dw)
        # n_n == 1 and n_n - 2, registered from n_n (loaded in DECODE, so final by PRODUCTS,
        # before any tile counter starts): the "last column" flags' next values compare
        # registers (for Fmax: `tj + 2 == n_n` was an adder and a compare in front of
        # row_wrap, the board build's critical path)
        nn = bound_facts(m, n_n, dw, "nn")
        err = Signal(4)
        p_am = Signal(2 * dw + 1)
        p_bn = Signal(2 * dw + 1)
        p_tiles = Signal(2 * dw + 1)
        aw = cfg.mem_addr_bits
        sx = signed(aw + dw + 4)
        d_lo, d_hi, k_lo, k_hi = (Signal(sx, name=n) for n in ("d_lo", "d_hi", "k_lo", "k_hi"))
        o_lo, o_hi = Signal(sx, name="o_lo"), Signal(sx, name="o_hi")
        bad_wr, bad_om = Signal(), Signal()     # the bounds' checks, registered in PRODUCTS
        # the bounds are accumulated in MUL (see the FSM), beside the decode products
        c_dsi, c_msi, c_osi, c_dsj, c_osj = (
            Signal(sx, name=n) for n in ("c_dsi", "c_msi", "c_osi", "c_dsj", "c_osj"))
        c_k, c_nn = Signal(2 * dw + 1), Signal(2 * dw + 1)
        q_mm1, q_nm1, q_nm, q_nn = (Signal(dw, name=n) for n in ("q_mm1", "q_nm1", "q_nm", "q_nn"))
        start = Signal()
        start_nx = Signal()     # start's next value (the FSM's decision, below)
        start_h = Signal()              # start's copy for the heads' next values (head_next)
        # per-lane offsets j * stride (shift-adds, no DSP), registered from cur every cycle
        off_d, off_dsi = ([Signal(sx, name=f"{nm}{j}") for j in range(C)] for nm in ("off_d", "off_dsi"))

        # ---------------- array + sequencer ------------------------------------------
        m.submodules.array = arr = SystolicArray(cfg)
        en = Signal()             # global enable: low while the output FIFO is full
        ti = Signal(dw)
        tj = Signal(dw)
        kk = Signal(dw)
        tiles_left = Signal()
        flushed = Signal()
        a_base = Signal(range(cfg.spad_a_words + 1))
        b_base = Signal(gb.ptr_shape)
        since_first = Signal(range(cfg.drain_period + 1))
        # A step may go as soon as its A and B words are in the scratchpads.  In
        # compact mode (input sparsity) kk counts A's stored nonzero words: entry
        # a_base + kk carries its step index k (B is read at that k) and whether it
        # is the last of its panel (the tile ends there).
        # For Fmax the next step to take (the "head") is kept in registers: its A word
        # h_a = a_base + kk and (dense) its B word h_b = b_base + kk and tile-end flag
        # h_last.  In compact mode the head entry's k and last flag come from gather A's
        # side memory (read at h_a), and a step waits for its tile's whole B panel
        # (word b_base + K - 1), so that k is needed only for the B read address, which
        # is registered: scratchpad B is read one cycle after the step.
        # the modes as registered copies of cur's bits (for Fmax: cur's flip-flops fan out to
        # the whole instruction's logic); cur is held from DECODE on, the copies are final
        # the cycle after, long before start
        cmp, oc = Signal(), Signal()
        m.d.sync += [cmp.eq(cur.compact_a), oc.eq(cur.ocompact)]
        # ocompact's copy for the drain, the writer and gather B (stored inverted so
        # that it stays a separate flip-flop: the sequencer's copy keeps a small fan-out)
        oc_n_w = Signal(init=1)
        m.d.sync += oc_n_w.eq(~cur.ocompact)
        oc_w = ~oc_n_w
        # and one for the mask reader (for Fmax: oc_w had ~300 loads in front of the mask
        # reader's tile counters' enables); a reset-less kind, so it is a flip-flop of its own
        (oc_m,) = register_copies(m, cur.ocompact, [(0, 0, 1)], "oc_m")
        m.d.comb += ga.compact.eq(cmp)
        h_a = Signal(range(cfg.spad_a_words + 1))
        h_last = Signal()
        h_b = Signal(gb.ptr_shape)
        b_next = Signal(gb.ptr_shape)         # b_base + K
        # compact mode: the head entry's (k, last) as registers (for Fmax: the side
        # memory's read is not in front of the tile-end decisions); they are loaded from
        # the side memory's entry at h_a (every cycle without a step: an entry counts as
        # final only a cycle after it is written, so the value a step uses is fresh), at
        # h_a1 (a step), or from the tile's first entry (a step back to a_base), which is
        # kept when the tile's first step takes it.  The side memory's reads are
        # registered at addresses that are registers (h_a, h_a1, h_a2, a_base1): the
        # entries at h_a and h_a1 now are chosen from last cycle's reads by whether the
        # head moved then, and how (for Fmax: the LUT-RAM's read tree was the routed
        # critical path in front of tile_end; no cycle: the cycle's write is forwarded,
        # so a read equals the asynchronous read a cycle later).
        head_k, head_last = Signal.like(ga.k_val[0]), Signal()
        base_k, base_last = Signal.like(ga.k_val[0]), Signal()
        h_a1 = Signal(range(cfg.spad_a_words + 2))          # h_a + 1
        h_a2 = Signal(range(cfg.spad_a_words + 3))          # h_a + 2
        a_base1 = Signal(range(cfg.spad_a_words + 2))       # a_base + 1
        a_base2 = Signal(range(cfg.spad_a_words + 3))       # a_base + 2
        moved_back = Signal()                               # last cycle's step & a_back
        ptr_w = len(Value.cast(h_b))
        h_b1 = Signal(ptr_w + 1)                              # h_b + 1
        b_next2 = Signal(ptr_w + 1)                           # b_next + K
        # "the step's A and B words are in the scratchpads", a register (ready_q): its next
        # value is decided from the gathers' next counts, each a register or a register + 1
        # chosen by the word being written now, against the head's next position (for
        # Fmax: no comparator between the counters and `step`, which is AND of registers)
        ready_q = Signal()
        m.d.comb += [ga.k_addr[0].eq(h_a), ga.k_addr[1].eq(h_a1),
                     ga.k_addr[2].eq(h_a2), ga.k_addr[3].eq(a_base1)]
        # ocompact: the tiles are the B gather's compacted panels (one tile row)
        # see ocompact_ring(); registered (for Fmax: the compares are not in front of gather
        # B's issue decision), final from the cycle after DECODE (cur is held until IDLE)
        ring_ok = Signal()
        m.d.sync += ring_ok.eq((cur.k >= cfg.drain_period) & (cur.k * 2 <= cfg.spad_b_words)
                               & (cur.k * 8 >= ring_min_8k(cfg)))
        # the ring limit (b_base + the scratchpad depth) rises by K at each tile end
        # (ocompact has one tile row: b_base advances by K)
        m.d.comb += gb.ring.eq(oc & ring_ok)
        # ocompact: gb.panels == tj as a register (pan_eq), from the difference's "0" and
        # "1" flags and its "2" compare (panels leads tj by at most the info ring's depth)
        pan_eq, pan_one = Signal(), Signal()
        pan_diff = Signal(range(PANEL_INFO_DEPTH + 2))
        more_tiles = Mux(oc, ~(gb.walk_done & pan_eq), tiles_left)
        # the step ends its tile: Mux(cmp, head_last, h_last), kept as its own register
        # from their next values (for Fmax: one flip-flop in the tile-end enables)
        tile_end = Signal()
        tj_last = Signal()                     # tj + 1 == n_n, registered with tj (for Fmax)
        # the tile ends its tile row (tj_last & ~oc) and the next tile reuses the A panel
        # (tile_end & ~row_end), registers from their next values (for Fmax: they select
        # the heads' next values in front of the registered count compares and the
        # tile-end logic; as two LUT levels of fan-out ~50 they led the estimated worst
        # paths).  oc is constant from the cycle after DECODE on, so ~oc's next value is oc's own.
        row_end = Signal()
        a_back = Signal()
        row_wrap = Signal()                    # tile_end & row_end, a register (for Fmax)
        ti_last = Signal()                     # ti + 1 == n_m, a register
        mid_tile = Signal()                    # kk != 0, a register (for Fmax)
        period_ok = Signal()                   # since_first >= drain_period, a register
        # step = run & en & more_tiles & ready_q & (mid_tile | period_ok), kept as a register
        # decided a cycle ahead from those registers' next values (step_rule; for Fmax: the
        # step's ~100 enables start at a flip-flop)
        step = Signal()
        # the sequencer's own copy of `step` (logically equal): the next-state logic of the
        # head and of the step decision itself take it, so that its flip-flop has few loads
        # and sits by that logic, not at the centroid of the step's ~250 datapath enables
        # (for Fmax: the decision's last LUTs followed `step`'s flip-flop across the die)
        step_s = Signal()
        flush = Signal()
        run = Signal()            # the sequencer owns the current instruction
        m.d.comb += flush.eq(run & en & ~more_tiles & ~flushed & period_ok)
        ready = ready_q
        m.d.comb += gb.limit_rise.eq(step & tile_end)     # the ring limit rises by K
        m_left = Signal(signed(dw + 1))
        n_left = Signal(signed(dw + 1))
        rows_act = Mux(m_left > R, R, m_left)[:lg_r + 2]
        cols_act = Mux(n_left > C, C, n_left)[:lg_c + 2]
        # the MAC count of a step, one cycle after it, from the tile's active rows and
        # columns registered (for Fmax: the compares, the small multiply and the counter's
        # increment register are not in one cycle; m_left/n_left change only at a tile end,
        # so the registered values are those of the step a cycle before)
        rows_act_q, cols_act_q, step_d = Signal(lg_r + 2), Signal(lg_c + 2), Signal()
        m.d.sync += [rows_act_q.eq(rows_act), cols_act_q.eq(cols_act), step_d.eq(step)]
        macs_per_step = Signal(lg_r + lg_c + 4)
        m.d.comb += macs_per_step.eq(shift_add_mul(rows_act_q, cols_act_q))

        bb_adv = Mux(row_end, 0, b_next)       # b_base of the next tile
        def head_next(reg, at_start, on_step):
            """``reg`` loaded with ``at_start`` at a start and ``on_step`` at a step; its
            next value is returned (the step decision's compares are registered from it)."""
            nx = Signal.like(reg, name=f"{reg.name}_nx")
            # (start's own copy: for Fmax, the sequencer's copy had ~230 loads)
            m.d.comb += nx.eq(Mux(start_h, at_start, Mux(step_s, on_step, reg)))
            m.d.sync += reg.eq(nx)
            return nx
        h_a_nx = head_next(h_a, 0, Mux(a_back, a_base, h_a1))
        h_a1_nx = head_next(h_a1, 1, Mux(a_back, a_base1, h_a2))
        h_a2_nx = head_next(h_a2, 2, Mux(a_back, a_base2, h_a2 + 1))
        # B's heads by their cases: at a start; at a step, at a tile row's end, at another
        # tile end, inside a tile; else held.  The cases are kept (b_cases) for b_by_case.
        b_cases = {}
        def b_by_case(fn, head, fn_start=None):
            """``fn`` of B's head's next value (``head`` a b_cases name) as ``fn`` of each case,
            selected after it as the head's own next value is (``fn_start``, if given, for the
            start case).  For Fmax: with fn a compare, the select's three LUT levels after
            step_s were in front of the compare's carry chain (the estimate's worst paths
            after 3811700, 9.43 ns, b_next2_nx -> b_ge_*_next2)."""
            at_start, at_row_end, at_end, mid, held = b_cases[head]
            return Mux(start_h, (fn_start or fn)(at_start),
                       Mux(step_s, Mux(tile_end, Mux(row_end, fn(at_row_end), fn(at_end)), fn(mid)),
                           fn(held)))
        def b_head(reg, at_start, at_row_end, at_end, mid):
            """B's head ``reg`` by its cases; its next value is b_by_case's identity, so the
            rule is written once for the head and its compares."""
            b_cases[reg.name] = [Const(v, len(reg)) if isinstance(v, int) else Value.cast(v)[:len(reg)]
                                 for v in (at_start, at_row_end, at_end, mid, reg)]   # (as reg keeps them)
            nx = Signal.like(reg, name=f"{reg.name}_nx")
            m.d.comb += nx.eq(b_by_case(lambda v: v, reg.name))
            m.d.sync += reg.eq(nx)
            return nx
        h_b_nx = b_head(h_b, 0, 0, b_next, h_b1)
        h_b1_nx = b_head(h_b1, 1, 1, b_next + 1, h_b1 + 1)
        # K for the B heads, a register copy of its own kind with cfg.fmax_logic (for Fmax:
        # d31a8e9's OOC critical path, 94.38 MHz, was cur.k's 3.4 ns hop into b_next2 + K);
        # cur is held from DECODE on, so the copy is final long before start
        (k_h,) = register_copies(m, cur.k, [(1, 0, 1)], "k_h") if cfg.fmax_logic else (cur.k,)
        b_next_nx = b_head(b_next, k_h, k_h, b_next2, b_next)           # bb_adv + K
        # b_next2 + K, with cfg.fmax_logic a register of its own kept like the heads (b_next3,
        # from 3K registered from cur): b_next2's next value is then a select of registers
        # (for Fmax: 2c39469's OOC seed-2 critical path, 91.01 MHz, ran from k_h through
        # b_next2 + K and its select into the registered compares with b_next2)
        if cfg.fmax_logic:
            b_next3 = Signal(ptr_w + 1)
            (k3_h,) = register_copies(m, const_mul(3, cur.k), [(1, 0, 1)], "k3_h")
            b_head(b_next3, k3_h, k3_h, b_next3 + k_h, b_next3)
        else:
            b_next3 = b_next2 + k_h
        k2_h = k_h << 1
        b_next2_nx = b_head(b_next2, k2_h, k2_h, b_next3, b_next2)

        with m.If(step_s & ~mid_tile):
            m.d.sync += [base_k.eq(head_k), base_last.eq(head_last)]
        h_last_nx, head_last_nx = Signal(), Signal()
        # K == 1 and K - 2 registered from cur every cycle (cur is held from DECODE on, so
        # they are final long before start): "the step after this one ends the tile" is an
        # equality of registers, kk == K - 2, not an adder and a compare (for Fmax: the
        # `default` board build's critical path ran from kk through `kk + 2 == K` into
        # h_last_nx and on to a_back)
        kq = bound_facts(m, cur.k, dw, "kq")
        # and kk == K - 2 itself a register, kept by next_is_m2 (kk moves at a step and
        # restarts at a tile end)
        kk_m2 = Signal()
        if cfg.fmax_logic:
            m.d.sync += kk_m2.eq(next_is_m2(start, step_s, tile_end, kk, kq, kk_m2))
        else:
            m.d.comb += kk_m2.eq(kk == kq["m2"])
        m.d.comb += [h_last_nx.eq(Mux(start, kq["is1"],
                                      Mux(step_s, Mux(tile_end, kq["is1"], kk_m2), h_last))),
                     head_last_nx.eq(head_last)]
        # the entries at h_a (e0) and h_a1 (e1) from last cycle's registered reads: without
        # a move the same addresses; a step forward: h_a1 and h_a2; a step back: the
        # tile's first entry (base_k: final, so never rewritten) and a_base1
        moved = step_d                         # the head moved last cycle
        m.d.sync += moved_back.eq(step_s & a_back)
        e0_k = Mux(moved, Mux(moved_back, base_k, ga.k_val[1]), ga.k_val[0])
        e0_last = Mux(moved, Mux(moved_back, base_last, ga.k_last[1]), ga.k_last[0])
        e1_k = Mux(moved, Mux(moved_back, ga.k_val[3], ga.k_val[2]), ga.k_val[1])
        e1_last = Mux(moved, Mux(moved_back, ga.k_last[3], ga.k_last[2]), ga.k_last[1])
        with m.If(step_s & ~(a_back & ~mid_tile)):     # (a one-entry tile going back keeps its head)
            m.d.sync += head_k.eq(Mux(a_back, base_k, e1_k))
            m.d.comb += head_last_nx.eq(Mux(a_back, base_last, e1_last))
        with m.Elif(~step_s):
            m.d.sync += head_k.eq(e0_k)
            m.d.comb += head_last_nx.eq(e0_last)
        m.d.sync += [h_last.eq(h_last_nx), head_last.eq(head_last_nx),
                     tile_end.eq(Mux(cmp, head_last_nx, h_last_nx))]

        # ready_q's next value.  A word count's next value is the count, or the count + 1
        # (words_loaded1) when a word is written now (wr_dense); compact A's final count
        # (words_final) is a register whose next value is words_final_nx.  The head
        # moves only on a step: A to h_a + 1, or back to a_base (loaded: it was stepped
        # through); B to h_b + 1, to the next panel's first word b_next (dense) or its
        # last (compact: b_next2), or back to panel 0 at a tile row's end (loaded).
        # Every compare of a count with a head position is a register, computed a cycle
        # ahead from both sides' next values (for Fmax: the compares' carry chains are
        # not in front of `step`; a routed critical path ran from a count through its
        # compare with h_a1 and the ready logic into `step`'s copies).  A count's next
        # value depends on this cycle's write, so the compare is kept for both counts it
        # may become (the count and the count + 1), and the write chooses.
        def ahead(name, value):
            flag = Signal(name=name)
            m.d.sync += flag.eq(value)
            return flag
        # (the write decides between the counts only outside compact mode, where it is a
        # response register: for Fmax, not compact mode's write logic in front of `step`)
        wa = ga.wr_dense
        a_heads = {"h": h_a_nx, "h1": h_a1_nx}
        def a_count_gt(i, h_nx):
            """(A's count + i, as it is next cycle) > h_nx, for i in (0, 1).  With
            cfg.fmax_logic the compares take the counts' registers (count, + 1, + 2) and this
            cycle's write chooses after them (for Fmax: the estimate's A-side paths ran from
            the response flags through the write decision into the counts' next values and
            then the carry chains).  The write is wr_dense: that is the gather's write
            outside compact mode, and these flags are used only there (a_next_gt)."""
            if not cfg.fmax_logic:
                return carry_gt((ga.words_loaded_nx, ga.words_loaded1_nx)[i], h_nx)
            counts = (ga.words_loaded, ga.words_loaded1, ga.words_loaded2)
            kept = carry_gt(Mux(ga.start, i, counts[i]), h_nx)     # (a start restarts at 0)
            moved = carry_gt(counts[i + 1], h_nx)
            return Mux(wa & ~ga.start, moved, kept)
        a_gt = {(cnt, h): ahead(f"a_gt_{cnt}_{h}", a_count_gt(i, h_nx))
                for i, cnt in enumerate(("wl", "wl1"))
                for h, h_nx in a_heads.items()}
        a_gt.update({("fin", h): ahead(f"a_gt_fin_{h}", carry_gt(ga.words_final_nx2, h_nx))
                     for h, h_nx in a_heads.items()})
        def a_next_gt(h):                # (A's next count) > the head ("h": h_a, "h1": h_a1)
            return Mux(cmp, a_gt["fin", h], Mux(wa, a_gt["wl1", h], a_gt["wl", h]))
        # B's counts and head positions are compared as differences modulo 2**ptr_bits
        # when they wrap (ring mode, see rtl/gather.py)
        wb = gb.wr_dense
        ring = gb.ptr_bits if gb.lane_compactable else None
        # (with cfg.fmax_logic each compare is made per case of the head, b_by_case, and
        # per count it may become, as A's are: see b_count_cmp)
        b_heads = {"h": (h_b, h_b_nx), "h1": (h_b1, h_b1_nx), "next": (b_next, b_next_nx),
                   "next2": (b_next2, b_next2_nx)}          # (register, next value)
        def b_count_cmp(fn, i, h):
            """fn(B's count + i, as it is next cycle, B's head ``h`` next cycle), for i in
            (0, 1).  With cfg.fmax_logic the compares take the counts' registers (count, + 1,
            + 2) and each case of the head, and this cycle's write and the head's case choose
            after them (for Fmax: a99dcb5's OOC seed-1 critical path ran from gather B's
            start copy through the count's next value into these compares).  A start
            (start_h is gb.start's twin) restarts the count at i: then only the head's start
            case is compared, with a constant (a case the tests cannot see: after a start A's
            count restarts too, and ready needs both).  B's write is always wr_dense (B has no
            compact mode).  Compares shared between i = 0 and 1 (count + 1) are merged by
            synthesis."""
            reg, h_nx = b_heads[h]
            if not cfg.fmax_logic:
                return fn((gb.words_loaded_nx, gb.words_loaded1_nx)[i], h_nx, ring)
            counts = (gb.words_loaded, gb.words_loaded1, gb.words_loaded2)
            def after_write(v):
                return Mux(wb, fn(counts[i + 1], v, ring), fn(counts[i], v, ring))
            return b_by_case(after_write, reg.name,
                             fn_start=lambda v: fn(Const(i, len(counts[i])), v, ring))
        b_gt = {(cnt, h): ahead(f"b_gt_{cnt}_{h}", b_count_cmp(carry_gt, i, h))
                for i, cnt in enumerate(("wl", "wl1")) for h in ("h", "h1", "next")}
        b_ge = {(cnt, h): ahead(f"b_ge_{cnt}_{h}", b_count_cmp(carry_ge, i, h))
                for i, cnt in enumerate(("wl", "wl1")) for h in ("next", "next2")}
        def b_next_gt(h):                # (B's next count) > the head ("h": h_b, "h1": h_b1, "next": b_next)
            return Mux(wb, b_gt["wl1", h], b_gt["wl", h])
        def b_next_ge(h):                # (B's next count) >= the head ("next": b_next, "next2": b_next2)
            return Mux(wb, b_ge["wl1", h], b_ge["wl", h])
        a_stay, a_inc = a_next_gt("h"), a_next_gt("h1")
        b_stay = Mux(cmp, b_next_ge("next"), b_next_gt("h"))
        b_inc = Mux(cmp, b_next_ge("next"), b_next_gt("h1"))
        b_tile = Mux(cmp, b_next_ge("next2"), b_next_gt("next"))
        ready_a_nx = Mux(step_s, a_back | a_inc, a_stay)
        ready_b_nx = Mux(step_s, Mux(tile_end, row_end | b_tile, b_inc), b_stay)
        ready_q_nx = ~start & ready_a_nx & ready_b_nx
        m.d.sync += ready_q.eq(ready_q_nx)
        # mid_tile (kk != 0) and period_ok (since_first >= drain_period) as registers
        P = cfg.drain_period
        mid_tile_nx, period_ok_nx = Signal(), Signal()
        m.d.comb += [mid_tile_nx.eq(mid_tile), period_ok_nx.eq(period_ok)]
        with m.If(start):
            m.d.comb += [mid_tile_nx.eq(0), period_ok_nx.eq(1)]
        with m.Elif(en):
            m.d.comb += period_ok_nx.eq(Mux((step_s | flush) & ~mid_tile, int(1 >= P),
                                            period_ok | (since_first == P - 1)))
        with m.If(~start & step_s):         # (step implies en)
            m.d.comb += mid_tile_nx.eq(~tile_end)
        m.d.sync += [mid_tile.eq(mid_tile_nx), period_ok.eq(period_ok_nx)]
        # pan_eq / pan_one (ocompact): gb.panels - tj, moved by a panel hand-over
        # (gb.pi_we) and a tile end
        hand, took = gb.pi_we, step_s & tile_end
        pan_eq_nx = Signal()
        m.d.comb += pan_eq_nx.eq(pan_eq)
        with m.If(start):
            m.d.sync += [pan_diff.eq(0), pan_one.eq(0)]
            m.d.comb += pan_eq_nx.eq(1)
        with m.Elif(hand != took):
            m.d.sync += [pan_diff.eq(Mux(hand, pan_diff + 1, pan_diff - 1)),
                         pan_one.eq(Mux(took, pan_diff == 2, pan_eq))]
            m.d.comb += pan_eq_nx.eq(took & pan_one)
        m.d.sync += pan_eq.eq(pan_eq_nx)
        # pan_eq's next value when no panel is handed over now, from registers: the step
        # decision uses it (for Fmax: the hand-over, a few LUTs after gather B's issue
        # decision, is not in front of `step`).  It is exact there: the step rule needs
        # pan_eq_nx only with gb.walk_done_ahead, and a hand-over never comes with it (a hand-over
        # needs gather B's staging buffer full; the walk ends only with it not full, and
        # after its end the buffer is never filled again); at start ready_q_nx is 0.
        pan_eq_nohand = Mux(took, pan_one, pan_eq)

        # Scratchpad A is read at the step, B one cycle later (its address registered),
        # and the read data are registered before the array (for Fmax: a block-RAM
        # read and the PE multiply are not in one cycle): step markers v1..v3/f1..f3
        # travel along, A's data is delayed one more register to meet B's.
        b_addr = Signal(gb.ptr_shape)
        v1, f1, v2, f2, v3, f3 = (Signal(name=n) for n in ("v1", "f1", "v2", "f2", "v3", "f3"))
        a_q = Signal.like(spa_r.data)
        a_q2 = Signal.like(spa_r.data)
        b_q = Signal.like(spb_r.data)
        en_copy = [Signal(name=f"en{r}") for r in range(EN_COPIES)]
        n_arr = EN_COPIES - 2
        # the array feed's registers (scratchpad reads, their data registers, the step
        # markers: ~200 flip-flops) take the next row copy in the round robin (for Fmax:
        # the sequencer's copy, in front of `step`, keeps a small fan-out)
        en_feed = en_copy[R % n_arr]
        m.d.comb += [spa_r.addr.eq(h_a), spb_r.addr.eq(b_addr),
                     spa_r.en.eq(en_feed), spb_r.en.eq(en_feed)]
        with m.If(en_feed):
            m.d.sync += [b_addr.eq(Mux(cmp, b_base + head_k, h_b)),
                         v1.eq(step), f1.eq((step & ~mid_tile) | flush), v2.eq(v1), f2.eq(f1),
                         v3.eq(v2), f3.eq(f2), a_q.eq(spa_r.data), a_q2.eq(a_q), b_q.eq(spb_r.data)]
        m.d.comb += [arr.en.eq(1), arr.en_row.eq(Cat(*[en_copy[i % n_arr] for i in range(R)]))]
        en_dr = en_copy[n_arr]            # the drain's copy
        m.d.comb += en.eq(en_copy[n_arr + 1])
        m.d.comb += [arr.in_a.eq(a_q2), arr.in_b.eq(b_q),
                     arr.in_valid.eq(v3), arr.in_first.eq(f3)]

        with m.If(start):
            m.d.sync += [run.eq(1), ti.eq(0), ti_last.eq(n_m == 1), *tile_col_restart(tj, tj_last, nn), kk.eq(0), tiles_left.eq(1), flushed.eq(0),
                         a_base.eq(0), a_base2.eq(2), b_base.eq(0), since_first.eq(cfg.drain_period),
                         m_left.eq(cur.m), n_left.eq(cur.n)]
        with m.Else():
            with m.If(en):
                with m.If(step | flush):
                    with m.If(~mid_tile):
                        m.d.sync += since_first.eq(1)
                    with m.Elif(since_first != cfg.drain_period):
                        m.d.sync += since_first.eq(since_first + 1)
                with m.Elif(since_first != cfg.drain_period):
                    m.d.sync += since_first.eq(since_first + 1)
                with m.If(flush):
                    m.d.sync += flushed.eq(1)
            # step implies en (both are registered from en_nx), so the step's registers
            # are enabled by step alone (for Fmax: not by en's copy, with its ~250 loads)
            with m.If(step):
                m.d.sync += kk.eq(Mux(tile_end, 0, kk + 1))
                with m.If(tile_end):
                    m.d.sync += b_base.eq(bb_adv)
                # (row_wrap = tile_end & row_end, a register: the tile row's registers are
                # enabled by step & row_wrap)
                with m.If(row_wrap):
                    m.d.sync += [*tile_col_restart(tj, tj_last, nn), n_left.eq(cur.n), ti.eq(ti + 1),
                                 ti_last.eq(ti + 2 == n_m), a_base.eq(h_a1),
                                 a_base2.eq(h_a2 + 1), m_left.eq(m_left - R)]
                    with m.If(ti_last):
                        m.d.sync += tiles_left.eq(0)
                with m.Elif(tile_end):
                    m.d.sync += [*tile_col_next(tj, tj_last, nn),
                                 n_left.eq(Mux(oc, n_left, n_left - C))]
        # a_base1 from its next value (1 at a start, h_a2 at a tile row's wrap), which the
        # side memory's read-address copies take too
        a_base1_nx = Signal.like(a_base1)
        m.d.comb += a_base1_nx.eq(Mux(start, 1, Mux(step & row_wrap, h_a2, a_base1)))
        m.d.sync += a_base1.eq(a_base1_nx)
        # gather A's side-memory reads: each bank's read port takes its own copy of the
        # address's low bits, with cfg.fmax_logic a register loaded from the address's next
        # value (for Fmax: 03ea595's OOC seed-2 critical path, 90.39 MHz, ran from h_a, ~260
        # loads, 3.42 ns across to a bank's LUT-RAMs, then their read tree into `last`)
        bank_bits = len(ga.k_bank_addr[0])
        n_banks = len(ga.k_bank_addr) // len(ga.k_addr)
        for i, (reg, nx) in enumerate(((h_a, h_a_nx), (h_a1, h_a1_nx), (h_a2, h_a2_nx), (a_base1, a_base1_nx))):
            if cfg.fmax_logic:
                copies = register_copies(m, nx[:bank_bits], [COPY_KINDS[b % len(COPY_KINDS)] for b in range(n_banks)],
                                         f"k_bank_addr{i}")
            else:
                copies = [reg[:bank_bits]] * n_banks
            m.d.comb += [ga.k_bank_addr[i * n_banks + b].eq(c) for b, c in enumerate(copies)]
        # row_wrap's next value: the next tile_end, tj_last and ~oc
        # (tj == n_n - 2 a register too, kept by next_is_m2: tj moves at a tile end and
        # restarts at a row end)
        tj_m2 = Signal()
        if cfg.fmax_logic:
            m.d.sync += tj_m2.eq(next_is_m2(start, step & tile_end, row_end, tj, nn, tj_m2))
        else:
            m.d.comb += tj_m2.eq(tj == nn["m2"])
        tj_last_nx = Mux(start, nn["is1"],
                         Mux(step & tile_end, Mux(row_end, nn["is1"], tj_m2), tj_last))
        # by a Shannon split on head_last_nx, which comes last (from the side memory's reads;
        # for Fmax: its 2.7 ns hop into this logic was on af11d57's routed critical path):
        # tile_end_nx = Mux(cmp, head_last_nx, h_last_nx) for head_last_nx = 1 and 0
        row_end_nx = tj_last_nx & ~oc
        te_if1, te_if0 = cmp | h_last_nx, ~cmp & h_last_nx
        m.d.sync += [row_wrap.eq(Mux(head_last_nx, te_if1 & row_end_nx, te_if0 & row_end_nx)),
                     row_end.eq(row_end_nx),
                     a_back.eq(Mux(head_last_nx, te_if1 & ~row_end_nx, te_if0 & ~row_end_nx))]

        # ---------------- drain: accumulate, requantize, queue writes ----------------
        m.submodules.requant = rq = Requantize(cfg, latency=1, shift_held=True)
        m.submodules.out_fifo = ofifo = SyncFIFOBuffered(
            width=self._fifo_width(), depth=OUT_FIFO_ROWS)
        # Stall the whole compute pipeline before the output FIFO can overflow (and,
        # with omask, if a row's mask has not arrived: only under memory back-pressure).
        # Two queues, one per consumer, each filled in its own mode: the drain's (omask
        # without ocompact) and gather B's lane walker's (ocompact; each row with its "any
        # bit set" beside it), so that each queue's output registers sit by their consumer
        # (for Fmax: 79a50e3's OOC seed-2 critical path, 86.42 MHz, ran from the one queue's
        # output across the die, 5.81 ns, into the walker's decision).  A mode's rows go
        # through one queue, with the one queue's pushes and pops, so the timing is that
        # of one queue.
        m.submodules.mask_q = mq = SyncFIFOBuffered(width=C, depth=mask_queue_rows(cfg))
        m.submodules.lane_mask_q = lmq = SyncFIFOBuffered(width=C + 1, depth=mask_queue_rows(cfg))
        mq_bits = mq.r_data
        s1_v = Signal()
        s2_v = Signal()                 # stage 2's row valid (see the drain below)
        # The stall is decided one cycle ahead, exactly, from registers, and registered in
        # EN_COPIES copies, so that the enables of the array's rows, of the drain and of
        # the sequencer are separate nets each starting at a flip-flop (for Fmax: on
        # `default` they reach thousands of registers).  Its two parts: the output FIFO
        # would be full (its occupancy next cycle, occ_nx), and (omask, only under memory
        # back-pressure) stage 1's row next cycle has no mask row in the queue: s1_v's
        # and the mask queue's output-register valid's next values (SyncFIFOBuffered: it
        # holds unless popped, and refills when the queue's inner memory has a row).
        # Logically every copy equals the single-enable design's `en`.
        om_only = Signal()              # omask without ocompact (registered: cur is held)
        om_only_nx = cur.omask & ~cur.ocompact
        m.d.sync += om_only.eq(om_only_nx)
        occ = Signal(range(OUT_FIFO_ROWS + 1))
        occ_nx = occ + (s2_v & en) - ofifo.r_en          # ofifo.w_en == en & s2_v
        m.d.sync += occ.eq(occ_nx)
        s1_v_nx = Mux(start, 0, Mux(en, arr.out_valid, s1_v))
        # mq.r_en without ocompact, en & s1_v & om_only & ~start; with cfg.fmax_logic a
        # register from those signals' next values (for Fmax: `en`'s ~240 loads were in front
        # of the pop and the queue's level, the estimate's worst engine path after
        # a78a9da, 9.50 ns); om_only loads every cycle from cur, so its next value is that
        # (its register is loaded below, where en's next value is known)
        mq_pop = Signal()
        if not cfg.fmax_logic:
            m.d.comb += mq_pop.eq(en & s1_v & om_only & ~start)
        # (the queue's inner memory is not empty: a register kept from a copy of its level, for
        # Fmax: mq.level - mq.r_rdy was an adder and a subtractor in front of the stall decision)
        mq_inner_ne = Signal()
        m.d.sync += mq_inner_ne.eq(~buffered_fifo_inner_level(m, mq, mask_queue_rows(cfg), "mq")(0))
        mq_nx_rdy = (mq.r_rdy & ~mq_pop) | mq_inner_ne
        # occ_nx < OUT_FIFO_ROWS - 1 by the cases of (push, pop): compares of occ with
        # constants (for Fmax: no adder in front of the stall decision and `step`'s)
        push, pop = s2_v & en, ofifo.r_en
        room_nx = Mux(push & ~pop, occ < OUT_FIFO_ROWS - 2,
                      Mux(pop & ~push, occ < OUT_FIFO_ROWS, occ < OUT_FIFO_ROWS - 1))
        en_nx = room_nx & ~(om_only & s1_v_nx & ~mq_nx_rdy)
        if cfg.fmax_logic:
            m.d.sync += mq_pop.eq(en_nx & s1_v_nx & om_only_nx & ~start_nx)
        m.d.comb += [c.eq(q) for c, q in zip(en_copy, register_copies(m, en_nx, EN_KINDS, "en"))]
        # ocompact: per panel, its lanes' output offsets and row masks (from gather B)
        pi_depth = panel_info_depth(cfg)
        m.submodules.panel_info = pinfo = memory.Memory(
            shape=panel_info_layout(cfg, C), depth=pi_depth, init=[])
        pi_w, pi_r = pinfo.write_port(), pinfo.read_port()
        # the write is registered (for Fmax: the hand-over decision and the LUT-RAM write
        # enable are not in one cycle); the drain reads an entry many cycles later
        pi_wa, pi_wd, pi_wen = Signal.like(gb.pi_idx), Signal.like(gb.pi_data), Signal()
        m.d.sync += [pi_wa.eq(gb.pi_idx), pi_wd.eq(gb.pi_data), pi_wen.eq(gb.pi_we & oc)]
        m.d.comb += [pi_w.addr.eq(pi_wa), pi_w.data.eq(pi_wd), pi_w.en.eq(pi_wen)]

        # (row indices in a tile: at least one bit, so a one-row array has no 0-wide wire)
        dr_ti, dr_tj, dr_i = Signal(dw), Signal(dw), Signal(range(max(R, 2)))
        dr_tj_last = Signal()           # dr_tj + 1 == n_n, registered with dr_tj (for Fmax)
        # the info ring has room: pi_used = gb.panels - dr_tj (ocompact), kept as a
        # register (for Fmax: no subtractor between the counters and gather B's hand-over)
        pi_room = Signal()              # pi_used < pi_depth, a register (occupancy_room)
        m.d.comb += gb.pi_room.eq(pi_room)
        dr_tile_done = Signal()         # the drain moves to the next tile (dr_tj + 1)
        rows_drained = Signal(2 * dw + 1)
        row_base = Signal(dw + 1)       # ti * R
        col_base = Signal(dw + 1)       # tj * C
        d_ti_base = Signal(sx)
        m_ti_base = Signal(sx)
        d_tj_off = Signal(sx)
        d_i_off = Signal(sx)
        m_i_off = Signal(sx)
        # stage 1 (row left the array; accumulator SRAM read issued)
        s1_row_ok = Signal()
        s1_i = Signal(range(max(R, 2)))
        s1_data = Signal(data.ArrayLayout(signed(cfg.acc_bits), C))
        s1_lane = Signal(C)
        s1_slot = Signal(range(cfg.acc_words))
        s1_daddr, s1_maddr = Signal(sx), Signal(sx)
        # stage 1x: the row and the accumulator SRAM's read data registered (for Fmax:
        # the block RAM's clock-to-out and the 32-bit add are not in one cycle)
        s1x_v, s1x_ok = Signal(), Signal()
        s1x_data = Signal(data.ArrayLayout(signed(cfg.acc_bits), C))
        s1x_acc = Signal(data.ArrayLayout(signed(cfg.acc_bits), C))
        s1x_lane, s1x_keep = Signal(C), Signal(C)
        s1x_slot = Signal(range(cfg.acc_words))
        s1x_daddr, s1x_maddr = Signal(sx), Signal(sx)
        s1x_offs = Signal(data.ArrayLayout(signed(aw + 2), C))
        # stage 1b (sum registered: written back to the accumulator SRAM or requantized)
        s1b_v, s1b_ok = Signal(), Signal()
        s1b_sum = Signal(data.ArrayLayout(signed(cfg.acc_bits), C))
        s1b_lane, s1b_keep = Signal(C), Signal(C)
        s1b_slot = Signal(range(cfg.acc_words))
        s1b_daddr, s1b_maddr = Signal(sx), Signal(sx)
        s1b_offs = Signal(data.ArrayLayout(signed(aw + 2), C))
        # stage 1c (requantizer's first stage registered, in rq; the rest rides along)
        s1c_v = Signal()
        s1c_raw = Signal(data.ArrayLayout(signed(cfg.acc_bits), C))
        s1c_lane, s1c_keep = Signal(C), Signal(C)
        s1c_daddr, s1c_maddr = Signal(sx), Signal(sx)
        s1c_offs = Signal(data.ArrayLayout(signed(aw + 2), C))
        # stage 2 (requantized, masked: into the output FIFO); s2_v above
        s2_lane = Signal(C)
        s2_vals = Signal(data.ArrayLayout(unsigned(cfg.slot_bits), C))
        s2_mask = Signal(C)
        s2_daddr, s2_maddr = Signal(sx), Signal(sx)
        s2_offs = Signal(data.ArrayLayout(signed(aw + 2), C))

        arow = arr.out_valid
        dr_i_last = Signal()            # dr_i == R - 1, a register (for Fmax)
        dr_wrap = Signal()              # dr_i_last & dr_tj_last & ~oc: the row ends a tile row
        # stage 1's data registers load on every row without a reset (s1_v says whether
        # they hold one): their enable is en & arow, two flip-flops (for Fmax)
        with m.If(en_dr & arow):
            lanes = Cat(*[(col_base + j < cur.n) for j in range(C)])
            m.d.sync += [s1_data.eq(arr.out_row), s1_lane.eq(lanes),
                         s1_row_ok.eq(row_base + dr_i < cur.m), s1_i.eq(dr_i),
                         s1_slot.eq(cur.acc_addr + rows_drained),
                         s1_daddr.eq(d_ti_base + d_tj_off + d_i_off),
                         s1_maddr.eq(m_ti_base + d_tj_off + m_i_off)]
        with m.If(start):
            m.d.sync += [dr_ti.eq(0), *tile_col_restart(dr_tj, dr_tj_last, nn), dr_i.eq(0), dr_i_last.eq(R == 1),
                         dr_wrap.eq((R == 1) & nn["is1"] & ~oc_w),
                         rows_drained.eq(0), row_base.eq(0),
                         col_base.eq(0), d_ti_base.eq(cur.d_addr), m_ti_base.eq(cur.mask_addr),
                         d_tj_off.eq(0), d_i_off.eq(0), m_i_off.eq(0), s1_v.eq(0)]
        # the drain's counters take the sequencer's copy of en, not the drain's (for Fmax:
        # that one drives the ~2400 data registers; its loads on this logic made the
        # tile bases' enables three LUTs after a net of 2400 loads)
        with m.Elif(en):
            m.d.sync += s1_v.eq(arow)
            with m.If(arow):
                m.d.sync += rows_drained.eq(rows_drained + 1)
                # (dr_wrap implies dr_i_last; tested first and alone: for Fmax, the tile row's
                # registers are enabled by en & arow & dr_wrap, three flip-flops)
                with m.If(dr_wrap):
                    m.d.sync += [*tile_col_restart(dr_tj, dr_tj_last, nn), col_base.eq(0), d_tj_off.eq(0), dr_ti.eq(dr_ti + 1),
                                 row_base.eq(row_base + R),
                                 d_ti_base.eq(d_ti_base + (cur.d_si << lg_r)),
                                 m_ti_base.eq(m_ti_base + (cur.mask_si << lg_r))]
                with m.Elif(dr_i_last):
                    m.d.sync += [*tile_col_next(dr_tj, dr_tj_last, nn), col_base.eq(col_base + C),
                                 d_tj_off.eq(Mux(oc_w, 0, d_tj_off + (cur.d_sj << lg_c)))]
                with m.If(dr_i_last):
                    m.d.comb += dr_tile_done.eq(1)
                    m.d.sync += [dr_i.eq(0), dr_i_last.eq(R == 1), d_i_off.eq(0), m_i_off.eq(0)]
                    # the next tile's first row ends its tile row if R == 1 and the next
                    # tile is the last of its row
                    m.d.sync += dr_wrap.eq((R == 1) & ~oc_w & Mux(dr_tj_last, nn["is1"], dr_tj == nn["m2"]))
                with m.Else():
                    m.d.sync += [dr_i.eq(dr_i + 1), dr_i_last.eq(dr_i == R - 2), dr_wrap.eq((dr_i == R - 2) & dr_tj_last & ~oc_w),
                                 d_i_off.eq(d_i_off + cur.d_si),
                                 m_i_off.eq(m_i_off + cur.mask_si)]
        m.d.comb += pi_room.eq(occupancy_room(m, start=start, inc=gb.pi_we, dec=dr_tile_done,
                                              limit=pi_depth, name="pi_used")[0])
        m.d.comb += [acc_r.addr.eq(cur.acc_addr + rows_drained),
                     acc_r.en.eq(en & arow & cur.accumulate)]

        summed = Signal(data.ArrayLayout(signed(cfg.acc_bits), C))
        for j in range(C):
            m.d.comb += summed[j].eq(s1x_data[j] + s1x_acc[j])
        # omask: the row's output mask from the mask queue (all ones without omask);
        # ocompact: the tile's lanes, offsets and row masks from the panel info
        m.d.comb += [pi_r.addr.eq(dr_tj), pi_r.en.eq(en)]   # held while the drain is stalled
        # the mask queues' pushes choose by a private copy of ocompact (for Fmax: oc_w's ~200
        # loads were in front of the queue's pop and its level, when one queue served both)
        (oc_q,) = register_copies(m, cur.ocompact, [(1, 1, 1)], "oc_q")
        pi = pi_r.data if cfg.sparse else Signal.like(pi_r.data)   # no ocompact: all 0
        keep = Signal(C)
        oc_keep = Cat(*[pi[j].mv.bit_select(s1_i, 1) for j in range(C)])
        m.d.comb += [keep.eq(Mux(oc_w, oc_keep, Mux(cur.omask, mq_bits, (1 << C) - 1))),
                     mq.r_en.eq(mq_pop), lmq.r_en.eq(gb.lm_pop)]   # (each pops only in its mode)
        # Drain pipeline (registered for Fmax): s1 -> s1x (accumulator read data) ->
        # s1b (sum) -> s1c (rq's first stage) -> s2 (rq's second stage, masked) -> FIFO.
        # the drain's data registers load under en alone (start clears only the valid bits,
        # below: for Fmax, their enable is one flip-flop)
        with m.If(en_dr):
            m.d.sync += [s1x_v.eq(s1_v), s1x_ok.eq(s1_row_ok), s1x_data.eq(s1_data), s1x_slot.eq(s1_slot),
                         s1x_lane.eq(Mux(oc_w, Cat(*[pi[j].ok for j in range(C)]), s1_lane)),
                         s1x_keep.eq(keep), s1x_daddr.eq(s1_daddr), s1x_maddr.eq(s1_maddr)]
            for j in range(C):
                m.d.sync += [s1x_offs[j].eq(pi[j].off),
                             s1x_acc[j].eq(Mux(cur.accumulate, acc_r.data[j], 0))]
            m.d.sync += [s1b_v.eq(s1x_v), s1b_ok.eq(s1x_ok), s1b_sum.eq(summed), s1b_slot.eq(s1x_slot),
                         s1b_lane.eq(s1x_lane), s1b_keep.eq(s1x_keep), s1b_daddr.eq(s1x_daddr),
                         s1b_maddr.eq(s1x_maddr), s1b_offs.eq(s1x_offs)]
        m.d.comb += [acc_w.addr.eq(s1b_slot), acc_w.data.eq(s1b_sum),
                     acc_w.en.eq(en & s1b_v & ~cur.store)]
        # the requantizer's shift and ReLU flag as registered copies of cur's (for Fmax: cur's
        # bits fan out to the whole instruction's logic; cur is held from DECODE on, long
        # before the first row reaches the requantizer)
        rq_shift, rq_relu = Signal.like(cur.shift), Signal()
        m.d.sync += [rq_shift.eq(cur.shift), rq_relu.eq(cur.relu)]
        m.d.comb += [rq.en.eq(en_dr), rq.shift.eq(rq_shift), rq.relu.eq(rq_relu)]
        # with cfg.fmax_logic the requantizer takes a copy of the sum register of its own,
        # stored inverted so that synthesis keeps it apart (for Fmax: 4a9cbc4's OOC seed-2
        # critical path, 98.55 MHz, was s1b_sum -> a 4.82 ns hop -> the round-up flag's six
        # LUTs; the sum register sits by the accumulator SRAM's write port).  Its kind
        # (inverted, init ones) makes it 0 after reset, as s1b_sum is.
        if cfg.fmax_logic:
            (rq_row,) = register_copies(m, summed.as_value(), [(1, 1, 0)], "rq_row", en=en_dr)
            m.d.comb += rq.row.eq(rq_row)
        else:
            m.d.comb += rq.row.eq(s1b_sum)
        with m.If(en_dr):
            m.d.sync += [s1c_v.eq(s1b_v & s1b_ok & cur.store), s1c_raw.eq(s1b_sum),
                         s1c_lane.eq(s1b_lane), s1c_keep.eq(s1b_keep), s1c_offs.eq(s1b_offs),
                         s1c_daddr.eq(s1b_daddr), s1c_maddr.eq(s1b_maddr)]
            m.d.sync += [s2_v.eq(s1c_v), s2_lane.eq(s1c_lane), s2_offs.eq(s1c_offs),
                         s2_daddr.eq(s1c_daddr), s2_maddr.eq(s1c_maddr), s2_mask.eq(rq.mask & s1c_keep)]
            for j in range(C):
                # signed values sign-extend into the memory slot
                m.d.sync += s2_vals[j].eq(Mux(s1c_keep[j], Mux(cur.out_raw, s1c_raw[j], rq.out[j]), 0))
        with m.If(start):
            m.d.sync += [s1x_v.eq(0), s1b_v.eq(0), s1c_v.eq(0), s2_v.eq(0)]
        entry = self._fifo_entry(m, lane=s2_lane, vals=s2_vals, mask=s2_mask, daddr=s2_daddr,
                                 maddr=s2_maddr, offs=s2_offs)
        m.d.comb += [ofifo.w_data.eq(entry), ofifo.w_en.eq(en & s2_v)]

        # ---------------- writer: one beat per stored row (D and its mask) --------
        wr = self.wr
        e = self._fifo_unpack(ofifo.r_data)
        for j in range(C):
            off = off_d[j]
            offs_j = e["offs"][j] if cfg.sparse else 0
            m.d.comb += [wr.payload.addr[j].eq(e["daddr"] + Mux(oc_w, offs_j, off)),
                         wr.payload.data[j].eq(e["vals"][j]),
                         wr.payload.mask_addr[j].eq(e["maddr"] + off if cfg.relu_mask else 0)]
        m.d.comb += [wr.payload.en.eq(e["lane"]), wr.payload.mask.eq(e["mask"]),
                     wr.payload.mask_en.eq(Mux(cur.write_mask, e["lane"], 0)),
                     wr.valid.eq(ofifo.r_rdy)]
        wr_fire = wr.valid & wr.ready
        m.d.comb += ofifo.r_en.eq(wr_fire)

        # ---------------- control FSM -------------------------------------------------
        total_rows = Signal(2 * dw + lg_r + 2)
        m.d.comb += total_rows.eq(Mux(oc_w, gb.panels << lg_r, p_tiles << lg_r))

        # ---------------- output-mask reader (omask) ----------------------------------
        # Reads each tile row's C mask bits in drain order (ti, tj, row), one request
        # per cycle, into the mask queue, staying at most mask_queue_rows() ahead of
        # the drain, which pops one entry per row leaving the array.  With ocompact
        # it reads per output column instead (the M rows' bits of column l, lane i =
        # row i) for gather B's lane walker, which pops them.
        rdm = self.rd_m
        mqd = mask_queue_rows(cfg)
        mr_run = Signal()
        mr_tj, mr_i = Signal(dw), Signal(range(max(R, 2)))
        mr_tj_last = Signal()           # mr_tj + 1 == n_n, registered with mr_tj (for Fmax)
        mr_rem = Signal.like(total_rows)     # rows still to request (a down-count: for Fmax
                                             # its "last" test is a constant compare, no adder)
        mr_row, mr_col = Signal(dw + 1), Signal(dw + 1)          # ti*R + i, tj*C
        mr_ti_base = Signal(sx)         # om_addr + ti*R*om_si
        # the row's base address (ti*R + i)*om_si + tj*C*om_sj + om_addr (with ocompact:
        # om_addr + l*om_sj) and its tile's (i = 0), kept as registers so that a lane's
        # address is one add of two registers (for Fmax: three adds in series were the
        # engine's routed critical path after round 6)
        mr_base, mr_tile = Signal(sx), Signal(sx)
        off_om = [Signal(sx, name=f"off_om{j}") for j in range(C)]   # the lane's offset, by mode
        # per-lane bounds from cur, registered (for Fmax: mr_col + j < n was an add and a
        # compare in series): lane j is inside when mr_col < n - j; with ocompact when j < m
        om_col_lim = [Signal(signed(dw + 2), name=f"om_col_lim{j}") for j in range(C)]
        om_lane_in = [Signal(name=f"om_lane_in{j}") for j in range(C)]
        m_fire = rdm.req.valid & rdm.req.ready
        # a request made while the request register is held waits in a skid register
        # (for Fmax: the reader's decision and its counters' enables do not see `ready`;
        # with a memory that is always ready the skid register stays empty)
        m_sk_v = Signal()
        # requests issued, rows not yet popped (requests accepted and not popped + rdm.req.valid + m_sk_v) and
        # "fewer than the queue's depth" as a register (for Fmax, like the gathers')
        m_room = Signal()
        mr_last = Signal()              # mr_rem == 1, a register
        mr_i_last = Signal()            # mr_i == R - 1, a register
        # the reader's issue decision mr_run & ~m_sk_v & m_room; with cfg.fmax_logic a
        # register decided a cycle ahead from those flags' next values (below; for Fmax:
        # its LUT, after the skid flag, was in front of the reader's ~100 enables, the
        # estimate's 9.01 ns path after a78a9da into mr_tile)
        can_m = Signal()
        m_pay = Signal(mem_req_layout(cfg, C))
        # the lane's "inside the operand" flags (mr_row < m, mr_col < n - j) as registers
        # (for Fmax: the compares are not in front of the request's address and enables);
        # their next values are chosen, like mr_row's and mr_col's, from flags of each
        # next position: row 0 / column 0 (from cur), mr_row + 1, mr_row - (R - 1) and
        # mr_col + C (compares of registers with bounds registered from cur)
        row_in, row_in_nx = Signal(), Signal()
        col_in = [Signal(name=f"om_col_in{j}") for j in range(C)]
        col_in_nx = [Signal(name=f"om_col_in_nx{j}") for j in range(C)]
        m_pos = Signal()
        lim_fwd, lim_back = Signal(signed(dw + 2)), Signal(signed(dw + 2))
        col0_in = [Signal(name=f"om_col0_in{j}") for j in range(C)]
        lim_adv = [Signal(signed(dw + 2), name=f"om_col_lim_adv{j}") for j in range(C)]
        m.d.sync += [m_pos.eq(cur.m != 0), lim_fwd.eq(cur.m - 1), lim_back.eq(cur.m + (R - 1))]
        m.d.sync += [x for j in range(C) for x in (col0_in[j].eq(cur.n > j), lim_adv[j].eq(cur.n - (j + C)))]
        row_fwd, row_back = mr_row < lim_fwd, mr_row < lim_back
        col_adv = [mr_col < lim_adv[j] for j in range(C)]
        m.d.comb += [row_in_nx.eq(row_in)] + [col_in_nx[j].eq(col_in[j]) for j in range(C)]
        m.d.sync += [row_in.eq(row_in_nx)] + [col_in[j].eq(col_in_nx[j]) for j in range(C)]
        mr_total = Mux(oc_m, cur.n, p_tiles << lg_r)
        for j in range(C):
            a = mr_base + off_om[j]
            ok = Mux(oc_m, om_lane_in[j], row_in & col_in[j])
            m.d.comb += [m_pay.addr[j].eq(Mux(ok, a, 0)), m_pay.en[j].eq(ok)]
        m_sk_v_nx = skid_issue(m, start=start, valid=rdm.req.valid, ready=rdm.req.ready, issue=can_m,
                               skid_full=m_sk_v, regs=[rdm.req.payload], values=[m_pay])
        # "this request ends its tile row" (~oc_m & mr_i_last & mr_tj_last) as a register of
        # its own with cfg.fmax_logic, kept from the same next values (for Fmax: the tile-row
        # step's enables, mr_ti_base's among them, were five LUTs after the reader's issue
        # decision, an estimated 9.7 ns)
        mr_row_end = Signal()
        if not cfg.fmax_logic:
            m.d.comb += mr_row_end.eq(~oc_m & mr_i_last & mr_tj_last)
        with m.If(start):
            m.d.sync += [mr_run.eq(cur.omask), *tile_col_restart(mr_tj, mr_tj_last, nn), mr_i.eq(0), mr_rem.eq(mr_total),
                         mr_ti_base.eq(cur.om_addr), mr_base.eq(cur.om_addr), mr_tile.eq(cur.om_addr),
                         mr_last.eq(mr_total == 1), mr_i_last.eq(R == 1), mr_row.eq(0), mr_col.eq(0)]
            if cfg.fmax_logic:
                m.d.sync += mr_row_end.eq(~oc_m & (R == 1) & nn["is1"])
            m.d.comb += [row_in_nx.eq(m_pos)] + [col_in_nx[j].eq(col0_in[j]) for j in range(C)]
        with m.Elif(can_m):
            m.d.sync += [mr_rem.eq(mr_rem - 1), mr_last.eq(mr_rem == 2)]
            with m.If(mr_last):
                m.d.sync += mr_run.eq(0)
            with m.If(oc_m):
                m.d.sync += mr_base.eq(mr_base + cur.om_sj)
            with m.Elif(mr_i_last):
                m.d.sync += [mr_i.eq(0), mr_i_last.eq(R == 1), mr_row.eq(mr_row - (R - 1))]
                if cfg.fmax_logic:
                    m.d.sync += mr_row_end.eq((R == 1) & Mux(mr_tj_last, nn["is1"], mr_tj == nn["m2"]))
                m.d.comb += row_in_nx.eq(row_back)
                with m.If(mr_tj_last):
                    m.d.sync += [*tile_col_restart(mr_tj, mr_tj_last, nn),
                                 mr_col.eq(0), mr_row.eq(mr_row + 1)]
                    m.d.comb += [row_in_nx.eq(row_fwd)] + [col_in_nx[j].eq(col0_in[j]) for j in range(C)]
                with m.Else():
                    next_tj = mr_tile + (cur.om_sj << lg_c)
                    m.d.sync += [*tile_col_next(mr_tj, mr_tj_last, nn),
                                 mr_tile.eq(next_tj), mr_base.eq(next_tj), mr_col.eq(mr_col + C)]
                    m.d.comb += [col_in_nx[j].eq(col_adv[j]) for j in range(C)]
            with m.Else():
                m.d.sync += [mr_i.eq(mr_i + 1), mr_i_last.eq(mr_i == R - 2),
                             mr_base.eq(mr_base + cur.om_si), mr_row.eq(mr_row + 1)]
                if cfg.fmax_logic:
                    m.d.sync += mr_row_end.eq(~oc_m & (mr_i == R - 2) & mr_tj_last)
                m.d.comb += row_in_nx.eq(row_fwd)
            # the tile row's end: the next tile row's first tile (mr_row_end implies ~oc_m
            # and mr_i_last, so the branches above have left these registers alone)
            with m.If(mr_row_end):
                next_ti = mr_ti_base + (cur.om_si << lg_r)
                m.d.sync += [mr_ti_base.eq(next_ti), mr_tile.eq(next_ti), mr_base.eq(next_ti)]
        m_issued = can_m & ~start
        m_room_q, m_room_nx = occupancy_room(m, start=start, inc=m_issued, dec=mq.r_en | lmq.r_en,
                                             limit=mqd, name="m_outst")
        m.d.comb += m_room.eq(m_room_q)
        if cfg.fmax_logic:
            mr_run_nx = Mux(start, cur.omask, mr_run & ~(can_m & mr_last))
            m.d.sync += can_m.eq(mr_run_nx & ~m_sk_v_nx & m_room_nx)
        else:
            m.d.comb += can_m.eq(mr_run & ~m_sk_v & m_room)
        m_row = Cat(*[rdm.resp.payload[j][0] for j in range(C)])
        m.d.comb += [rdm.resp.ready.eq(1), mq.w_en.eq(rdm.resp.valid & ~oc_q), mq.w_data.eq(m_row),
                     lmq.w_en.eq(rdm.resp.valid & oc_q), lmq.w_data.eq(Cat(m_row, m_row.any()))]

        # ---------------- zero writes (ocompact) ----------------------------------------
        # Output columns that no row needs are never computed; gather B queues their
        # offsets and this port clears their M slots, one column per cycle.
        m.submodules.zero_q = zq = SyncFIFOBuffered(width=aw + 2, depth=ZQ_DEPTH)
        wz = self.wz
        # zq.w_rdy (SyncFIFOBuffered: its inner memory's level != depth - 1) as a register,
        # from a copy of that level kept by the same rule (for Fmax: gather B's walk
        # decision starts at flip-flops, not at the queue's level compare)
        zq_space = Signal(init=1)
        zq_inner_is = buffered_fifo_inner_level(m, zq, ZQ_DEPTH, "zq")
        m.d.sync += zq_space.eq(~zq_inner_is(ZQ_DEPTH - 1))
        m.d.comb += [gb.lane_compact.eq(oc_w), gb.off_step.eq(cur.d_sj), gb.lm_valid.eq(lmq.r_rdy),
                     gb.lm_bits.eq(lmq.r_data[:C]), gb.lm_any.eq(lmq.r_data[C]), gb.zq_space.eq(zq_space),
                     zq.w_en.eq(gb.zq_push), zq.w_data.eq(gb.zq_off)]
        for i in range(C):
            m.d.comb += [wz.payload.addr[i].eq(cur.d_addr + off_dsi[i] + zq.r_data.as_signed()),
                         wz.payload.en[i].eq(i < cur.m)]
        m.d.comb += [wz.valid.eq(zq.r_rdy if cfg.sparse else 0), zq.r_en.eq(wz.valid & wz.ready)]
        # rows_drained == total_rows registered (for Fmax; no cycle: the last row still
        # has the drain stages ahead of it, and with ocompact a new panel keeps gb busy)
        # The two compares side by side and ocompact's own copy as the last select (for Fmax:
        # oc_w's ~240 loads and the select of total_rows were in front of a 25-bit compare)
        rows_all = Signal()
        if cfg.fmax_logic:
            (oc_r,) = register_copies(m, cur.ocompact, [(1, 0, 1)], "oc_r")
            m.d.sync += rows_all.eq(Mux(oc_r, rows_drained == (gb.panels << lg_r),
                                        rows_drained == (p_tiles << lg_r)))
        else:
            m.d.sync += rows_all.eq(rows_drained == total_rows)
        drained = (rows_all & ~s1_v & ~s1x_v & ~s1b_v & ~s1c_v & ~s2_v
                   & (ofifo.level == 0))
        err_sticky = Signal(4)
        m.d.comb += [self.error.eq(err_sticky)]
        retire = Signal()
        retire_err = Signal(4)
        chk_err = Signal(4)
        chk_run = Signal()
        run_end = Signal()              # RUN's end test, registered (cleared in GO)
        def outside(x):                 # x < 0 or x >= 2**aw: bit tests, not comparators
            return x.as_unsigned()[aw:].any()
        if cfg.fmax_logic:
            # ERR_ACC's bound, acc_addr + tiles * R > acc_words, as tiles * R > acc_words -
            # acc_addr: the difference (and whether it is negative) registered from cur every
            # cycle (cur is held from DECODE on, so it is final long before PRODUCTS), the
            # compare split at the difference's width (for Fmax: 03ea595's OOC seed-1
            # critical path, 86.01 MHz, ran from cur.acc_addr, 2.73 ns, through the add's and
            # the compare's carry chains, 55 steps, into pre_chk)
            rw = cfg.acc_words.bit_length()
            acc_room, acc_over = Signal(rw, name="acc_room"), Signal(name="acc_over")
            m.d.sync += [acc_room.eq(cfg.acc_words - cur.acc_addr), acc_over.eq(cur.acc_addr > cfg.acc_words)]
            p_rows = p_tiles << lg_r
            acc_past = acc_over | p_rows[rw:].any() | (p_rows[:rw] > acc_room)
        else:
            acc_past = cur.acc_addr + (p_tiles << lg_r) > cfg.acc_words
        early_checks = [
            cur.opcode != isa.OP_GEMM,
            (cur.m == 0) | (cur.n == 0) | (cur.k == 0),
            p_am > cfg.spad_a_words,
            (p_bn > cfg.spad_b_words) & ~(oc & ring_ok),
            (cur.accumulate | ~cur.store) & acc_past,
            cur.store & ~cur.out_raw & (cur.shift >= cfg.acc_bits),
            cur.omask & ~cur.store,
            oc & (~cur.omask | cur.accumulate | cur.write_mask
                  | (cur.m > min(R, C)) | (~ring_ok & (n_n > pi_depth))),
        ]
        pre_chk = Signal(len(early_checks))
        # With cfg.fmax_logic, the checks of cur alone (a NOP too: not a GEMM), registered
        # every cycle (cur is held from DECODE on, so they are final from the cycle after),
        # and in PRODUCTS with the bounds' tests as one flag, pre_bad (for Fmax: CHECK's
        # start decision is a NOR of five flip-flops, not of eleven; fb65cc5's routed
        # critical path on seed 2, 88.32 MHz, ran from pre_chk through that NOR into start)
        CUR_CHECKS, LATE_CHECKS = (0, 1, 5, 6), (2, 3, 4, 7)
        assert sorted(CUR_CHECKS + LATE_CHECKS) == list(range(len(early_checks)))
        cur_bad, pre_bad = Signal(), Signal()
        if cfg.fmax_logic:
            m.d.sync += cur_bad.eq(Cat(*(early_checks[i] for i in CUR_CHECKS)).any())
        is_op = Signal()                # not a NOP, registered (cur is held from DECODE on)
        m.d.sync += is_op.eq(cur.opcode != isa.OP_NOP)
        # the strides' signs for MUL's bounds, registered from cur every cycle (for Fmax:
        # a wide compare with 0 is not in front of the bounds' selects and adders); cur is
        # held from DECODE on, so they are final from MUL's first cycle on
        stride_sign = {kind: {f: Signal(name=f"{f}_{kind}") for f in ("d_si", "d_sj", "mask_si", "om_si", "om_sj")}
                       for kind in ("neg", "pos")}
        for f in stride_sign["neg"]:
            m.d.sync += [stride_sign["neg"][f].eq(cur[f] < 0), stride_sign["pos"][f].eq(cur[f] > 0)]
        # the per-lane offsets follow cur without an enable (for Fmax: no 1200-register
        # clock enable); cur is held from DECODE on, so they are final from the cycle after
        for j in range(C):
            m.d.sync += [off_d[j].eq(const_mul(j, cur.d_sj)), off_dsi[j].eq(const_mul(j, cur.d_si)),
                         # the mask reader's lane j: row i + j with ocompact, column tj*C + j without
                         off_om[j].eq(Mux(cur.ocompact, const_mul(j, cur.om_si), const_mul(j, cur.om_sj))),
                         om_col_lim[j].eq(cur.n - j), om_lane_in[j].eq(j < cur.m)]
        # start: a one-cycle pulse in GO, set by CHECK; registered, in copies for the
        # sequencer and each gather (it fans out wide)
        # (the heads' copy only with cfg.fmax_logic)
        start_kinds = START_KINDS if cfg.fmax_logic else START_KINDS[:3]
        if cfg.fmax_logic:
            # each copy decided from flags of its own: CHECK's failing conditions (pre_bad's
            # and the LATE_CHECKS), registered per copy in PRODUCTS and all set in any other
            # state, so that a copy is the NOR of five flip-flops that may sit by it (for
            # Fmax: 244e301's OOC seed-2 critical path, 90.28 MHz, ran from pre_chk through
            # the one NOR, start_nx, and hops of 4.08 and 2.09 ns to the copies).  Equal to
            # the copies of start_nx: CHECK follows PRODUCTS, and is entered only from it.
            start_bad = [Signal(1 + len(LATE_CHECKS), init=-1, name=f"start_bad{i}")
                         for i in range(len(start_kinds))]
            m.d.sync += [bad.eq(-1) for bad in start_bad]       # (PRODUCTS loads the flags)
            start_seq, start_ga, start_gb, *start_hd = (
                register_copies(m, ~bad.any(), [kind], f"start{i}")[0]
                for i, (bad, kind) in enumerate(zip(start_bad, start_kinds)))
        else:
            start_seq, start_ga, start_gb, *start_hd = register_copies(m, start_nx, start_kinds, "start")
        m.d.comb += [start.eq(start_seq), start_h.eq(start_hd[0] if start_hd else start_seq)]
        with m.FSM():
            with m.State("IDLE"):
                # cur follows the payload every IDLE cycle and holds from the one that
                # takes the instruction (for Fmax: its ~1500 enables are the state, not
                # `valid`, which in the Accelerator comes through the fences' compares)
                m.d.comb += self.instr.ready.eq(1)
                m.d.sync += isa.widen(cfg, cur, self.instr.payload)
                with m.If(self.instr.valid):
                    m.next = "DECODE"
            with m.State("DECODE"):
                nm_now = (cur.m + R - 1) >> lg_r
                nn_now = (cur.n + C - 1) >> lg_c
                m.d.sync += [n_m.eq(nm_now), n_n.eq(nn_now),
                             q_mm1.eq(cur.m - 1), q_nm1.eq(cur.n - 1), q_nm.eq(nm_now), q_nn.eq(nn_now),
                             c_dsi.eq(cur.d_si), c_msi.eq(cur.mask_si), c_osi.eq(cur.om_si),
                             c_dsj.eq(cur.d_sj), c_osj.eq(cur.om_sj), c_k.eq(cur.k), c_nn.eq(nn_now)]
                m.d.sync += [x.eq(0) for x in (p_am, p_bn, p_tiles)]
                # each bound starts at its base address; MUL adds the stride products
                # whose signs move it that way
                m.d.sync += [d_lo.eq(cur.d_addr), d_hi.eq(cur.d_addr), k_lo.eq(cur.mask_addr),
                             k_hi.eq(cur.mask_addr), o_lo.eq(cur.om_addr), o_hi.eq(cur.om_addr)]
                # an unknown opcode, a NOP or a zero dimension needs no products
                with m.If((cur.opcode != isa.OP_GEMM) | (cur.m == 0) | (cur.n == 0) | (cur.k == 0)):
                    m.next = "PRODUCTS"
                with m.Else():
                    m.next = "MUL"
            with m.State("MUL"):
                # One bit of each multiplier per cycle (shift-and-add, no DSP), until no
                # multiplier has a set bit left: max(bit lengths) cycles.
                for acc, c, q in ((p_am, c_k, q_nm), (p_tiles, c_nn, q_nm), (p_bn, c_k, q_nn)):
                    with m.If(q[0]):
                        m.d.sync += acc.eq(acc + c)
                # The bounds of the write, the mask write and the output-mask read:
                # base + (m-1)*si + (n-1)*sj, each product taken only when its stride
                # moves the bound that way (low: negative strides, high: positive), one
                # bit of (m-1) and (n-1) per cycle (for Fmax: PRODUCTS does the range
                # tests alone; with the adds there a routed critical path ran from a
                # stride sign through the three-input add and the tests into bad_wr).
                # The stride signs, registered from cur in DECODE, are final here.
                neg, pos = stride_sign["neg"], stride_sign["pos"]
                bi, bj = q_mm1[0], q_nm1[0]
                for bound, sign, f_si, c_si, f_sj, c_sj in (
                        (d_lo, neg, "d_si", c_dsi, "d_sj", c_dsj), (d_hi, pos, "d_si", c_dsi, "d_sj", c_dsj),
                        (k_lo, neg, "mask_si", c_msi, "d_sj", c_dsj), (k_hi, pos, "mask_si", c_msi, "d_sj", c_dsj),
                        (o_lo, neg, "om_si", c_osi, "om_sj", c_osj), (o_hi, pos, "om_si", c_osi, "om_sj", c_osj)):
                    m.d.sync += bound.eq(bound + Mux(bi & sign[f_si], c_si, 0)
                                         + Mux(bj & sign[f_sj], c_sj, 0))
                m.d.sync += [c.eq(c << 1) for c in (c_dsi, c_msi, c_osi, c_dsj, c_osj, c_k, c_nn)]
                m.d.sync += [q.eq(q >> 1) for q in (q_mm1, q_nm1, q_nm, q_nn)]
                with m.If(((q_mm1 | q_nm1 | q_nm | q_nn) >> 1) == 0):
                    m.next = "PRODUCTS"
            with m.State("PRODUCTS"):
                # The bounds' range tests, registered here (for Fmax: CHECK's `start`
                # decision is a NOR of flip-flops).  The bounds are needed only for a GEMM
                # with nonzero dimensions, which comes through MUL, so they are final.
                bad_wr_x = cur.store & (outside(d_lo) | outside(d_hi)
                                        | (cur.write_mask & (outside(k_lo) | outside(k_hi))))
                bad_om_x = cur.omask & (outside(o_lo) | outside(o_hi))
                m.d.sync += [bad_wr.eq(bad_wr_x), bad_om.eq(bad_om_x)]
                if cfg.fmax_logic:
                    m.d.sync += pre_bad.eq(cur_bad | bad_wr_x | bad_om_x)
                    m.d.sync += [bad.eq(Cat(cur_bad | bad_wr_x | bad_om_x,
                                            *(early_checks[i] for i in LATE_CHECKS)))
                                 for bad in start_bad]
                # the checks that need only cur and MUL's products, registered here (for
                # Fmax: their compares are not in front of CHECK's priority choice and start)
                m.d.sync += [pre_chk[i].eq(c) for i, c in enumerate(early_checks)]
                m.next = "CHECK"
            with m.State("CHECK"):
                # the first failing check's code, registered (for Fmax: the compares
                # and the wide fan-out of start/retire are in different cycles)
                checks = [
                    (pre_chk[0], isa.ERR_OPCODE),
                    (pre_chk[1], isa.ERR_ZERO_DIM),
                    (pre_chk[2], isa.ERR_SPAD_A),
                    (pre_chk[3], isa.ERR_SPAD_B),
                    (pre_chk[4], isa.ERR_ACC),
                    (bad_wr, isa.ERR_ADDR_WRITE),
                    (pre_chk[5], isa.ERR_SHIFT),
                    (pre_chk[6], isa.ERR_MASK_SHAPE),
                    (pre_chk[7], isa.ERR_MASK_SHAPE),
                    (bad_om, isa.ERR_MASK_ADDR),
                ]
                code = Const(isa.ERR_NONE, 4)
                for cond, c in reversed(checks):
                    code = Mux(cond, c, code)
                # no check fails, as a NOR of the conditions, not through the priority chain
                # (for Fmax: start's input is a few LUT levels after the bounds' registers)
                if cfg.fmax_logic:
                    run_ok = ~Cat(pre_bad, *(pre_chk[i] for i in LATE_CHECKS)).any()
                else:
                    run_ok = is_op & ~Cat(*(cond for cond, _ in checks)).any()
                m.d.sync += [chk_err.eq(Mux(is_op, code, isa.ERR_NONE)),
                             chk_run.eq(run_ok)]
                m.d.comb += start_nx.eq(run_ok)
                m.next = "GO"
            with m.State("GO"):
                m.d.sync += run_end.eq(0)
                with m.If(chk_run):             # start is up this cycle
                    m.next = "RUN"
                with m.Else():                  # a NOP or an error
                    m.d.comb += [retire.eq(1), retire_err.eq(chk_err)]
                    m.next = "IDLE"
            with m.State("RUN"):
                # The end test registered: the retirement is a cycle after it holds (for
                # Fmax: 9d6782a's OOC critical path ran from gather A's response flags
                # through the drain's idle flags and this test into the retirement's error
                # register).  Exact: once everything is flushed, drained and idle, nothing
                # moves until the next start (cyclemodel.END_TEST_LAG).
                m.d.sync += run_end.eq(flushed & drained & ~ga.busy & ~gb.busy & (zq.level == 0))
                with m.If(run_end):
                    m.d.comb += [retire.eq(1),
                                 retire_err.eq(Mux(ga.addr_error | gb.addr_error, isa.ERR_ADDR_READ, 0))]
                    m.next = "IDLE"
        m.d.comb += [ga.start.eq(start_ga), gb.start.eq(start_gb)]
        with m.If(retire):
            m.d.sync += run.eq(0)
        # the step decision a cycle ahead (see `step` above): the same rule on next values,
        # with `start | run` for run's next value: exact, because a retirement needs
        # `flushed`, a flush needs no tile left, and none is until the next start (for Fmax:
        # the retirement's decision, behind the gathers' and the drain's idle flags, is not
        # in front of `step`)
        run_nx = start | run
        tiles_left_nx = Mux(start, 1, Mux(step_s & row_wrap & ti_last, 0, tiles_left))   # (step implies en)
        # (gather B's walk_done next value from its register copy, which differs only in a start
        # cycle, where ready_q_nx is 0; see pan_eq_nohand)
        more_tiles_nx = Mux(oc, ~(gb.walk_done_ahead & pan_eq_nohand), tiles_left_nx)
        step_nx = run_nx & en_nx & more_tiles_nx & ready_q_nx & (mid_tile_nx | period_ok_nx)
        # two copies Yosys keeps apart (rtl/copies.py): the datapath's and the sequencer's
        m.d.comb += [c.eq(q) for c, q in zip((step, step_s), register_copies(m, step_nx, STEP_KINDS, "step"))]
        # The retirement registered (for Fmax: its logic and the wide loads of the
        # counters and the error status are in different cycles): `retired`, `errors`
        # and the sticky error follow one cycle later, and `busy` stays up for that
        # cycle so that whoever waits for it reads final values.
        retire_q, retire_err_q = Signal(), Signal(4)
        m.d.sync += [retire_q.eq(retire), retire_err_q.eq(Mux(retire, retire_err, 0))]
        with m.If(retire_q & (retire_err_q != 0) & (err_sticky == 0)):
            m.d.sync += err_sticky.eq(retire_err_q)

        # ---------------- counters ---------------------------------------------------
        busy = Signal()
        m.d.comb += busy.eq(~self.instr.ready)
        m.d.comb += self.busy.eq(busy | retire_q)
        cnt = self.counters
        # Counters whose increment is computed (not a single bit of the FSM) add it one
        # cycle late, from a register (for Fmax: the increment's logic and the 48-bit
        # adder are not in one cycle).  Their last increment of an instruction is at
        # least two cycles before its retirement, so they are final when busy drops.
        # `busy_cycles` too (its last increment is in the retiring cycle: final one cycle
        # after retirement, when `busy` drops).
        late = ("compute_cycles", "stall_cycles", "macs", "rd_bytes", "wr_bytes", "mask_bits",
                "spad_reads", "spad_writes", "acc_reads", "acc_writes", "mask_rd_bits", "busy_cycles")
        lanes_w = sum(e["lane"][j] for j in range(C))
        # the mask reader's accepted lane enables, registered before they are counted (as
        # gather's req_elems, for Fmax; rd_bytes and mask_rd_bits count a request a cycle
        # after it is accepted: an instruction's last one is long before its retirement)
        m_fired_en = Signal(C)
        m.d.sync += m_fired_en.eq(Mux(m_fire, rdm.req.payload.en, 0))
        incs = {
            "cycles": 1,
            "busy_cycles": busy,
            "compute_cycles": step,
            "stall_cycles": run & more_tiles & (~en | (~ready & (mid_tile | period_ok))),
            "macs": Mux(step_d, macs_per_step, 0),
            "rd_bytes": const_mul(cfg.op_bytes, ga.req_elems + gb.req_elems),
            "wr_bytes": Mux(wr_fire, Mux(cur.out_raw, const_mul(cfg.acc_bytes, lanes_w),
                                         const_mul(cfg.op_bytes, lanes_w)), 0),
            "mask_bits": Mux(wr_fire & cur.write_mask, lanes_w, 0),
            "spad_reads": Mux(step, 2, 0),
            "spad_writes": ga.wr_en + gb.wr_en,
            "acc_reads": acc_r.en,
            "acc_writes": acc_w.en,
            "retired": retire_q,
            "errors": retire_err_q != 0,
            "mask_rd_bits": sum(m_fired_en[j] for j in range(C)),
        }
        for name in counter_names(cfg):
            inc = incs[name]
            if name in late:
                inc_r = Signal(Value.cast(inc).shape(), name=f"inc_{name}")
                m.d.sync += inc_r.eq(inc)
                inc = inc_r
            m.d.sync += cnt[name].eq(cnt[name] + inc)
        return m

    # --- output FIFO entry packing -------------------------------------------------
    def _entry_layout(self):
        """An output FIFO row: its lanes, values and D address, and only with the options
        that use them the ReLU-mask bits and address (``relu_mask``) and the lanes' own
        output offsets (``sparse``: ocompact).  (For area: a FIFO memory keeps every bit it
        is given, used or not, and so do the drain registers in front of it; the lite
        engine's FIFO is flip-flops on the iCE40.)"""
        cfg = self.cfg
        sx = signed(cfg.mem_addr_bits + cfg.dim_bits + 4)
        fields = {"lane": unsigned(cfg.cols),
                  "vals": data.ArrayLayout(unsigned(cfg.slot_bits), cfg.cols),
                  "daddr": sx}
        if cfg.relu_mask:
            fields.update(mask=unsigned(cfg.cols), maddr=sx)
        if cfg.sparse:
            fields["offs"] = data.ArrayLayout(signed(cfg.mem_addr_bits + 2), cfg.cols)
        return data.StructLayout(fields)

    def _fifo_width(self):
        return self._entry_layout().size

    def _fifo_entry(self, m, **fields):
        ent = Signal(self._entry_layout())
        m.d.comb += [getattr(ent, name).eq(value) for name, value in fields.items()
                     if name in self._entry_layout().members]
        return ent.as_value()

    def _fifo_unpack(self, bits):
        """The row's fields; those the configuration leaves out are 0."""
        view = data.View(self._entry_layout(), bits)
        return {name: getattr(view, name) if name in self._entry_layout().members else 0
                for name in ("lane", "vals", "mask", "daddr", "maddr", "offs")}
