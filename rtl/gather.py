"""Operand gather DMA: reads one operand of a GEMM from external memory into its
scratchpad, one word (L lanes) per request, panel after panel.

A panel is L lanes (rows of A, or columns of B) by K steps; it occupies K
consecutive scratchpad words, panel p at words p*K .. p*K+K-1, so the compute
sequencer finds step k of panel p at p*K + k.

Two parts run concurrently:
* the lane walker steps the lane counter once per cycle and shifts the L lane
  vectors of the *next* panel into a staging buffer (L cycles per panel);
* the requester owns the current panel's lane vectors, steps the k counter and
  issues one request per cycle: lane address = base + cb + (sp >> dil) of
  lane vector + k vector, lanes outside the operand or in padding disabled (the
  geometry test and the first add in a register stage before the request register).
Responses come back in order; disabled lanes are written as zero.  The
``words_loaded`` count lets the sequencer take a step as soon as its word is in.

Compact mode (``compact``, input sparsity): only nonzero words are written, packed,
each with its step index k and a ``last`` flag (end of its panel) in a small side
memory that the sequencer reads at ``K_READS`` addresses (``k_addr[i]`` -> ``k_val[i]``,
``k_last[i]``), each registered a cycle later with the cycle's write forwarded
(the value is the one an asynchronous read would give a cycle later at the same
address): the sequencer reads every address its head could move to.
A panel without any nonzero word stores one zero word at k = K-1 so that every
panel has an entry.  Whether an entry is its panel's last is known only when the
next nonzero word arrives or the panel ends (then the previous entry's flag is
rewritten), so ``words_final`` counts the entries whose flag is final; the side memory's
write is registered and the count twice (``words_final_nx`` is its next value), so that
an entry is in the side memory a cycle before it counts as final: a read registered then
is never stale.

Lane-compact mode (``lane_compact``, output sparsity): the walker takes one mask
vector per lane (``lm_*``: which of the instruction's output rows need this output
column) and keeps only lanes that some row needs; the others go to the zero-write
queue (``zq_*``) with their output offset.  A panel is then C kept lanes; its
lanes' output offsets and mask vectors are handed out (``pi_*``) when the panel
goes to the requester, so the writer can scatter the tile's results.  There the
scratchpad can be used as a ring (``ring``): word w of the operand lives at
w mod depth, ``words_loaded`` counts on past the depth, and a request for word w
waits until w < limit, the consumer's free space: the limit starts at the depth and
the consumer raises it by K (``limit_rise``: it has finished a panel's words); panel
hand-over waits for ``pi_room`` (space in the consumer's panel-info ring).
"""
from amaranth import Module, Signal, Mux, Cat, Const, Value, signed, unsigned, Assert, Format
from amaranth.lib import wiring, stream, data, memory
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .copies import fmax_sync, register_copies
from .counter import MixedRadixCounter, VEC_FIELDS
from .epilogue import or_all
from .isa import gather_layout, vec4_layout



# the side memory's read ports (compact mode): the sequencer's head h, h + 1, h + 2 and
# the tile's first entry + 1 (rtl/engine.py: the head's next entry and the one after it,
# whichever way the head moves)
K_READS = 4
K_BANK_DEPTH = 256      # entries per bank of a side-memory copy (see the side memory below)


def side_bank_depth(spad_words: int) -> int:
    """Entries per bank of a side-memory copy."""
    return min(spad_words, K_BANK_DEPTH)


def side_banks(spad_words: int) -> int:
    """Banks per side-memory copy (each read port's address has a copy per bank)."""
    return spad_words // side_bank_depth(spad_words)
# the kinds (rtl.copies) of the lane walker's flag copies: each is 0 after reset
WALK_KINDS = [(0, 0, 0), (1, 1, 0), (0, 0, 1), (1, 1, 1)]


def ring_ptr_bits(spad_words: int) -> int:
    """Width of a ring-mode word counter (it wraps): counts and head positions are
    less than 2 * depth apart, well inside the 2**(bits-1) a modular compare needs."""
    return spad_words.bit_length() + 2


def max_outstanding(cfg: AcceleratorConfig) -> int:
    return cfg.dram_latency + 4


def skid_issue(m: Module, *, start, valid, ready, issue, skid_full, regs: list, values: list,
               depth: int = 1):
    """A request register (``regs``, ``valid``) loaded from ``values`` when ``issue``,
    with a skid queue of ``depth`` entries behind it: an issue while the request register
    is held (valid, not ready) goes into the skid queue (``skid_full``: it holds at least
    one entry), whose head moves into the request register when it frees.  The caller
    decides to issue only while ``skid_full`` is 0 (for Fmax: that decision drives many
    enables and must not see ``ready``); ``depth`` is the number of issues that can
    already be on their way when it decides (1 when ``issue`` is the decision itself, 2
    with one register stage between the decision and ``issue``).  With an always-ready
    memory the queue stays empty and the timing is that of a plain request register.
    ``start`` empties everything.  Returns ``skid_full``'s next value."""
    skid = [[Signal.like(r, name=f"skid{i}_{j}") for j, r in enumerate(regs)] for i in range(depth)]
    # filled[i]: entry i holds a request (a thermometer code; filled[0] is skid_full).
    # skid_empty is filled[0]'s copy that selects the queue's head data, stored inverted so
    # that it stays a separate flip-flop (for Fmax: the issue decision's copy has a small fan-out)
    filled = [skid_full] + [Signal(name=f"skid{i}_full") for i in range(1, depth)]
    skid_empty = Signal(init=1)

    def put(slot):            # the new request into the first free entry
        m.d.sync += [*(k.eq(v) for k, v in zip(skid[slot], values)), filled[slot].eq(1)]
        if slot == 0:
            m.d.sync += skid_empty.eq(0)

    def put_first_free(free_from):    # free_from(i): entry i is the first free one
        for i in range(depth):
            with m.If(issue & free_from(i)):
                put(i)

    with m.If(start):
        m.d.sync += [valid.eq(0), skid_empty.eq(1), *(f.eq(0) for f in filled)]
    with m.Elif(~valid | ready):                      # the request register moves
        with m.If(~skid_empty):                       # the queue's head into it, the queue shifts
            m.d.sync += [*(r.eq(k) for r, k in zip(regs, skid[0])), valid.eq(1)]
            for i in range(depth):
                nxt = filled[i + 1] if i + 1 < depth else 0
                m.d.sync += filled[i].eq(nxt)
                if i + 1 < depth:
                    m.d.sync += [k.eq(k1) for k, k1 in zip(skid[i], skid[i + 1])]
            m.d.sync += skid_empty.eq(~filled[1] if depth > 1 else 1)
            # after the shift, the first free entry is the one after the last still filled
            put_first_free(lambda i: filled[i] & (~filled[i + 1] if i + 1 < depth else 1))
        with m.Elif(issue):
            m.d.sync += [*(r.eq(v) for r, v in zip(regs, values)), valid.eq(1)]
        with m.Else():
            m.d.sync += valid.eq(0)
    with m.Else():                                    # held: into the queue
        put_first_free(lambda i: ~filled[i] & (filled[i - 1] if i else 1))
    # skid_full's next value, for a caller that registers its issue decision a cycle ahead
    second = filled[1] if depth > 1 else Const(0)
    return Mux(start, 0, Mux(~valid | ready, ~skid_empty & (second | issue), skid_full | issue))


def occupancy_room(m: Module, *, start, inc, dec, limit: int, name: str):
    """A count moved by ``inc`` and ``dec`` (1 each per cycle at most), cleared by
    ``start``, and the flag "count < limit" kept as a register beside it, its next value
    chosen by the cases of (inc, dec) (for Fmax: no adder or comparator between the count
    and the decision that reads the flag).  Returns the flag and its next value."""
    count = Signal(range(limit + 2), name=f"{name}_count")
    room = Signal(init=1, name=f"{name}_room")
    room_nx = Signal(name=f"{name}_room_nx")
    m.d.comb += room_nx.eq(Mux(start, 1, Mux(inc != dec, dec | (count < limit - 1), room)))
    m.d.sync += room.eq(room_nx)
    with m.If(start):
        m.d.sync += count.eq(0)
    with m.Elif(inc != dec):
        m.d.sync += count.eq(Mux(inc, count + 1, count - 1))
    return room, room_nx


def mem_req_layout(cfg: AcceleratorConfig, lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "addr": data.ArrayLayout(unsigned(cfg.mem_addr_bits), lanes),
        "en": unsigned(lanes),
    })


def panel_info_layout(cfg: AcceleratorConfig, lanes: int) -> data.ArrayLayout:
    """Per lane of a lane-compacted panel: real, its output offset, its row mask."""
    return data.ArrayLayout(data.StructLayout({
        "ok": 1, "off": signed(cfg.mem_addr_bits + 2), "mv": cfg.cols}), lanes)


def mem_rd_signature(cfg: AcceleratorConfig, lanes: int) -> wiring.Signature:
    """An external read port: request stream out, response stream (slots) in."""
    return wiring.Signature({
        "req": Out(stream.Signature(mem_req_layout(cfg, lanes))),
        "resp": In(stream.Signature(data.ArrayLayout(unsigned(cfg.slot_bits), lanes))),
    })


class OperandGather(wiring.Component):
    def __init__(self, cfg: AcceleratorConfig, lanes: int, spad_words: int, compactable: bool = False,
                 lane_compactable: bool = False, check: bool = False):
        self.cfg, self.lanes, self.spad_words = cfg, lanes, spad_words
        # simulation: assert every cycle what the Fmax forms rely on (the walk flags are 0 in
        # a start cycle, no issue in the cycle after one, the kept flags and copies equal
        # their definitions); for the Amaranth simulator only
        self.check = check
        self.compactable, self.lane_compactable = compactable, lane_compactable
        off = signed(cfg.mem_addr_bits + 2)
        # word counters: in ring mode (lane-compact gather) they count on past the depth,
        # modulo 2**ptr_bits (the depth is a power of two, so word w stays at w mod depth);
        # the sequencer compares them with its head as differences modulo 2**ptr_bits,
        # which is exact while the two are less than 2 * depth apart (rtl/engine.py,
        # carry_gt with ring_bits: for Fmax a 13-bit carry chain, not a 28-bit compare)
        self.ptr_bits = ring_ptr_bits(spad_words)
        self.ptr_shape = unsigned(self.ptr_bits) if lane_compactable else range(spad_words + 1)
        dw = cfg.dim_bits
        super().__init__({
            "desc": In(gather_layout(cfg)),
            "total": In(dw),          # lanes in all (M for A, N for B)
            "k": In(dw),              # steps per panel
            "start": In(1),
            "mem": Out(mem_rd_signature(cfg, lanes)),
            "wr_addr": Out(range(spad_words)),
            "wr_data": Out(data.ArrayLayout(signed(cfg.op_bits), lanes)),
            "wr_en": Out(1),
            "wr_dense": Out(1),       # wr_en outside compact mode: a response is written (a register)
            "words_loaded": Out(self.ptr_shape),  # scratchpad words written so far
            "words_loaded1": Out(len(Value.cast(Signal(self.ptr_shape))) + 1),   # words_loaded + 1, a register
            # words_loaded + 2 (a register with cfg.fmax_logic): the sequencer compares all
            # three counts with its heads and lets this cycle's write choose after the compares
            "words_loaded2": Out(len(Value.cast(Signal(self.ptr_shape))) + 2),
            # the two counts' next values (what the registers take this cycle): the
            # sequencer registers its compares from them (see rtl/engine.py)
            "words_loaded_nx": Out(self.ptr_shape),
            "words_loaded1_nx": Out(len(Value.cast(Signal(self.ptr_shape))) + 1),
            "busy": Out(1),
            "addr_error": Out(1),     # sticky until the next start
            "req_elems": Out(range(lanes + 1)),   # enabled lanes of the request accepted a cycle ago
            # compact mode (see the module docstring)
            "compact": In(1),
            "k_addr": In(range(spad_words + 2)).array(K_READS),   # (wraps at the depth)
            # k_addr[i]'s low bits again, one copy per side-memory bank (k_addr[i]'s value;
            # with cfg.fmax_logic the engine registers a copy per bank, see k_bank_addr)
            "k_bank_addr": In(range(side_bank_depth(spad_words))).array(K_READS * side_banks(spad_words)),
            "k_val": Out(range(spad_words)).array(K_READS),       # a cycle after k_addr
            "k_last": Out(1).array(K_READS),
            "words_final": Out(range(spad_words + 1)),
            "words_final_nx": Out(range(spad_words + 1)),   # words_final next cycle (a register)
            "words_final_nx2": Out(range(spad_words + 1)),  # words_final_nx next cycle
            # lane-compact mode (see the module docstring)
            "lane_compact": In(1),
            "off_step": In(off),              # output offset between consecutive lanes (d_sj)
            "lm_valid": In(1), "lm_bits": In(cfg.cols), "lm_any": In(1), "lm_pop": Out(1),
            "zq_push": Out(1), "zq_off": Out(off), "zq_space": In(1),
            "pi_we": Out(1), "pi_idx": Out(dw),
            "pi_data": Out(panel_info_layout(cfg, lanes)),
            "panels": Out(dw),                # panels handed to the requester
            "walk_done": Out(1),              # the lane walk is over (panels is final)
            "walk_done_ahead": Out(1),        # walk_done next cycle, as a register: equal but in a start cycle
            "ring": In(1), "limit_rise": In(1), "pi_room": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, L = self.cfg, self.lanes
        desc = self.desc
        # a staged lane: its vector, real or padding, and base + cb (the operand base
        # folded in when the lane is staged, so the request address is one add shorter)
        # It also carries the lane's geometry bounds on the k counter's y and x (-v.y,
        # h_lim - v.y, -v.x, w_lim - v.x), so that the request's "inside the map" test
        # compares the counter with registers (for Fmax: no adder in front of the compares).
        vl = vec4_layout(cfg)
        gw = signed(max(vl["y"].shape.width, vl["x"].shape.width) + 3)
        entry = data.StructLayout({"v": vl, "ok": 1, "cbb": signed(cfg.mem_addr_bits + 4),
                                   "ylo": gw, "yhi": gw, "xlo": gw, "xhi": gw})

        m.submodules.walker = walker = MixedRadixCounter(cfg, split_step=cfg.fmax_logic)
        m.submodules.kctr = kctr = MixedRadixCounter(cfg)
        m.d.comb += [walker.digits.eq(desc.lane), walker.init.eq(desc.init),
                     kctr.digits.eq(desc.k)]

        # ---- lane walker: fills the staging buffer for the next panel --------
        w_buf = Signal(data.ArrayLayout(entry, L))
        w_run = Signal()          # walking (counter value valid this cycle)
        w_cnt = Signal(range(L + 1))
        w_cnt0 = Signal(init=1)   # w_cnt == 0, a register from the same next-value rule (cfg.fmax_logic)
        w_full = Signal()
        w_n = Signal(cfg.dim_bits + 1)   # next lane index
        w_done = Signal()         # no more panels to build

        # ---- requester -------------------------------------------------------
        r_buf = Signal(data.ArrayLayout(entry, L))
        r_active = Signal()
        r_k = Signal(cfg.dim_bits)
        req = self.mem.req
        # Enough outstanding requests that a memory of the configured latency never
        # throttles the requester (LAT in flight + the registered request + slack).
        max_out = max_outstanding(cfg)
        fifo = m.submodules.en_fifo = SyncFIFO(width=L, depth=max_out)
        req_fire = req.valid & req.ready
        # A request issued while the request register is held (not ready) waits in a
        # skid queue, and issuing needs an empty skid queue: for Fmax
        # the issue decision (which steps the k counter, loads the request and may hand
        # over the panel: hundreds of enables) does not see the memory's `ready`.  With
        # a memory that is always ready the skid queue stays empty (same timing).
        sk_v = Signal()
        # requests issued whose responses have not come back (in stage A, the request
        # register, the skid queue or the memory) and "fewer than max_out" as a register
        # (for Fmax: no adder or comparator in front of the issue decision)
        room = Signal()
        # the issue decision r_active & ~sk_v & room & (~ring | gap_ok), kept as a register
        # decided a cycle ahead from those flags' next values (below; for Fmax: it steps the
        # k counter and loads stage A, ~1000 enables, and so starts at a flip-flop)
        can_issue = Signal()
        # and, with cfg.fmax_logic, a copy of it of another kind that steps the k counter (for
        # Fmax: the counter's ~80 enables on can_issue put the walk flags' next values, which
        # read can_issue through the hand-over, behind a net of ~120 loads)
        can_issue_k = Signal()
        gap_ok_nx = Const(1)
        if self.lane_compactable:     # ring mode: never overwrite words still to be used
            # gap = limit - words requested, kept as a register; "gap > 0 after this cycle"
            # (gap_ok_nx) feeds the registered issue decision; the next gap is one of four
            # sums of registers chosen by (raise, issue).
            # (0 <= gap <= depth: the consumer frees only words that were requested)
            gap = Signal(signed(self.spad_words.bit_length() + 2))
            k_m1 = Signal(cfg.dim_bits)     # K - 1, registered at start
            k_gt1 = Signal()                # K > 1, registered at start
            with m.If(self.start):
                m.d.sync += [k_m1.eq(self.k - 1), k_gt1.eq(self.k > 1)]
            rise = self.limit_rise

            def by_case(values):      # the next value among the four cases of (rise, issue)
                return Mux(rise, Mux(can_issue, values[0], values[1]),
                           Mux(can_issue, values[2], values[3]))
            sums = (gap + k_m1, gap + self.k, gap - 1, gap)
            # gap > 0 and gap > 1, kept as registers beside gap with cfg.fmax_logic, their next
            # values by the four cases from flags.  In ring mode 0 <= gap, K >= 1, and an
            # issue comes only with gap > 0 (the decision was registered from gap_ok), so:
            # rise and issue, gap + K - 1 >= K: > 0, and > 1 iff K > 1 or gap > 1; rise
            # alone, gap + K: > 0, and > 1 iff K > 1 or gap > 0; issue alone, gap - 1: > 0
            # iff gap > 1, > 1 iff gap > 2, a compare of the register with a constant (for
            # Fmax: the compares of gap were carry chains in front of the issue decision,
            # e3ee488's OOC critical path, 88.58 MHz; then the sums' adds and compares, two
            # carry chains, in front of the flags, 0882857's, 90.38 MHz).  check=True asserts
            # the flags and the issue's gap > 0 in ring mode.
            gap_gt = [Signal(name=f"gap_gt{i}") for i in range(2)]
            if cfg.fmax_logic:
                gt0, gt1 = gap_gt
                gap_gt2 = (gap[2:] != 0) | (gap[:2] == 3)      # gap > 2 (gap >= 0)
                m.d.sync += [gt0.eq(Mux(self.start, self.spad_words > 0, by_case([1, 1, gt1, gt0]))),
                             gt1.eq(Mux(self.start, self.spad_words > 1,
                                        by_case([k_gt1 | gt1, k_gt1 | gt0, gap_gt2, gt1])))]
            else:
                m.d.comb += [flag.eq(gap > i) for i, flag in enumerate(gap_gt)]
            gap_ok_nx = Mux(self.start, 1, rise | Mux(can_issue, gap_gt[1], gap_gt[0])) | ~self.ring
            with m.If(self.start):
                m.d.sync += gap.eq(self.spad_words)
            with m.Else():
                m.d.sync += gap.eq(by_case(sums))
        r_klast = Signal()               # r_k + 1 == k, registered (for Fmax)
        last_issue = can_issue & r_klast
        transfer = w_full & (~r_active | last_issue)
        # lane_compact, registered once more here (for Fmax: the engine's copy fans out to
        # its own logic; the input is held per instruction, final long before start)
        lc = Signal()
        lc_nx = self.lane_compact if self.lane_compactable else Const(0)
        if self.lane_compactable:
            m.d.sync += lc.eq(lc_nx)
            transfer = transfer & (~lc | self.pi_room)

        # lane-compact side information of the staged lanes
        w_info = Signal(panel_info_layout(cfg, L))
        w_off = Signal(signed(cfg.mem_addr_bits + 2))     # output offset of lane w_n
        panels = Signal(cfg.dim_bits)
        real = Signal()                  # w_n < total, registered (for Fmax)
        lm_any = self.lm_any             # lm_bits != 0, computed where the mask row is queued (for Fmax)
        keep = ~lc | ~real | lm_any      # the lane is kept (not dropped to the zero-write queue)
        # The walker's state (w_cnt, w_full, w_done, real) and its flags are loaded from one
        # rule of next values (``next_values`` below), so that "the walker may take a lane"
        # (walk_ok: running, buffer not full, not done, a lane left) is a register (for
        # Fmax: the walker's step and the staging buffer's ~1000 enables are a LUT or two
        # after flip-flops)
        # walk_ok split by whether the lane needs a mask vector (lane-compact mode, a real
        # lane: walk_mask) or not (walk_free), so that the pop of the mask queue is a LUT
        # or two after flip-flops
        # Both flags are kept in copies of distinct kinds (rtl.copies: Yosys keeps them apart),
        # and each copy makes its own "walking" for one group of loads: [0] the walker's
        # counter's vector (~150 enables), [1] the lane state here (w_n, w_off, the staging
        # count, the flags' next values), [2] the mask queue's pop and the zero-write push,
        # [3] the walker counter's counts and flags (for Fmax: one `walking` net for all of
        # them, from the mask queue's valid, crossed the die twice, hops of 4.5 and 4.1 ns,
        # on `513bbd0`'s routed critical path; [3] since ab8c9af's, 95.65 MHz, whose two
        # hops of 3.3 and 3.2 ns ran from [0]'s decision to the counter's `rem1`).
        # (one copy without cfg.fmax_logic)
        kinds = WALK_KINDS if cfg.fmax_logic else WALK_KINDS[:1]
        walk_free_c = [Signal(init=iv, reset_less=bool(rl), name=f"walk_free_q{i}")
                       for i, (pol, iv, rl) in enumerate(kinds)]
        walk_mask_c = [Signal(init=iv, reset_less=bool(rl), name=f"walk_mask_q{i}")
                       for i, (pol, iv, rl) in enumerate(kinds)]
        wf = [q ^ pol for q, (pol, _, _) in zip(walk_free_c, kinds)]
        wm = [q ^ pol for q, (pol, _, _) in zip(walk_mask_c, kinds)]
        # a real lane in lane-compact mode needs its mask vector (and, if it is
        # dropped, room in the zero-write queue)
        mask_ok = self.lm_valid & (lm_any | self.zq_space)
        walking_c = [wf[i] | (wm[i] & mask_ok) for i in range(len(kinds))]
        walking = walking_c[min(1, len(kinds) - 1)]
        mask_pop = wm[min(2, len(kinds) - 1)] & mask_ok
        # A walked lane goes to the zero-write queue when it is not kept (~keep: lc, real and
        # no mask bit).  Only walk_mask's lanes can be dropped (walk_free's are not lc & real:
        # the flags are registered from the same next values), so the push is mask_pop &
        # ~lm_any, written out as one LUT of registers (for Fmax: not after `walking`, the
        # pop decision's OR, in front of the queue's level and the engine's zq_space)
        # The walk flags are 0 in a start cycle: a start comes only with the walk done (the
        # engine starts an instruction after the last one retired, which waits for ~busy,
        # and w_done holds until the next start) or before the first one (w_run low), and
        # their next values then are 0.  So the pop, the push and the walker's step need
        # no ~start (for Fmax: start's ~310 loads were in front of the mask queue's pop and
        # its level, the estimate's worst path after fca7316, 9.8 ns); the walker gives its
        # clear priority over its step anyway.
        m.d.comb += [self.zq_push.eq(wm[min(2, len(kinds) - 1)] & self.lm_valid & ~lm_any & self.zq_space),
                     self.zq_off.eq(w_off if self.lane_compactable else 0),
                     walker.step.eq(walking_c[0]), self.lm_pop.eq(mask_pop)]
        if cfg.fmax_logic:
            m.d.comb += walker.step_flags.eq(walking_c[3])
        with m.If(self.start):
            m.d.sync += [w_run.eq(1), w_n.eq(0), r_active.eq(0), self.addr_error.eq(0), w_off.eq(0),
                         panels.eq(0)]
            m.d.comb += walker.clear.eq(1)
        with m.Else():
            # walk one lane per cycle while the staging buffer has room
            # (walk_free | walk_mask == w_run & ~w_full & ~w_done & a lane left)
            with m.If(walking):
                m.d.sync += [w_n.eq(w_n + 1), w_off.eq(w_off + self.off_step)]
            with m.If(transfer):
                m.d.sync += [r_active.eq(1), panels.eq(panels + 1)]
            with m.Elif(last_issue):
                m.d.sync += r_active.eq(0)
            # r_buf loads whenever the requester is free or frees now, whether or not a
            # panel moves in (it is used only while r_active): for Fmax, its ~600 enables
            # do not wait for the hand-over's other conditions
            with m.If(~r_active | last_issue):
                m.d.sync += r_buf.eq(w_buf)
        # The staging buffer's slot w_cnt takes the walker's lane every cycle the buffer is
        # not full; w_cnt moves on only when the lane is walked and kept, so each slot's
        # last write before it moves is that lane (for Fmax: the ~1000 enables are a
        # decode of registers, not the walk decision, which waits for the mask queue)
        wv = walker.value
        for i in range(L):
            with m.If(~w_full & (w_cnt == i)):
                m.d.sync += [w_buf[i].v.eq(wv), w_buf[i].ok.eq(real),
                             w_buf[i].cbb.eq(desc.base + wv.cb),
                             w_buf[i].ylo.eq(-wv.y), w_buf[i].yhi.eq(desc.h_lim - wv.y),
                             w_buf[i].xlo.eq(-wv.x), w_buf[i].xhi.eq(desc.w_lim - wv.x),
                             w_info[i].ok.eq(real), w_info[i].off.eq(w_off),
                             w_info[i].mv.eq(self.lm_bits)]
        m.d.comb += [self.pi_we.eq(transfer & ~self.start), self.pi_idx.eq(panels),
                     self.pi_data.eq(w_info if self.lane_compactable else 0),   # (ocompact only)
                     self.panels.eq(panels), self.walk_done.eq(w_done)]
        # walk_done's next value a cycle ahead, from the walker's next values, assuming no start in
        # the next cycle (a start clears it; the engine's step decision, which reads it,
        # is 0 in a start cycle anyway): for Fmax, the walker's flags and their logic are
        # not in front of the engine's step decision, across the die from gather B
        walk_done_ahead = Signal()
        m.d.comb += self.walk_done_ahead.eq(walk_done_ahead)

        # w_cnt == L - 1 and w_n + 1 < total as registers beside their counters (the
        # latter by the same split: both compares, then the select)
        # (without cfg.fmax_logic, the compares themselves)
        w_wrap = Signal(init=int(L == 1))
        n1_real = Signal()
        # the lane count and its facts at a start, registered here with cfg.fmax_logic (for
        # Fmax: d59b418's routed critical path, 83.75 MHz, ran from the engine's cur.n across
        # the die through `total != 0` into the walker's start flags); the count is held per
        # instruction, final long before start
        if cfg.fmax_logic:
            total, tot_nz, tot_gt1 = Signal.like(self.total, name="total_q"), Signal(), Signal()
            m.d.sync += [total.eq(self.total), tot_nz.eq(self.total != 0), tot_gt1.eq(self.total > 1)]
        else:
            total, tot_nz, tot_gt1 = self.total, self.total != 0, 1 < self.total
        if cfg.fmax_logic:
            m.d.sync += [w_wrap.eq(Mux(self.start, L == 1,
                                       Mux(walking & keep, Mux(w_wrap, L == 1, w_cnt == L - 2), w_wrap))),
                         n1_real.eq(Mux(self.start, tot_gt1,
                                        Mux(walking, w_n + 2 < total, w_n + 1 < total)))]
        else:
            m.d.comb += [w_wrap.eq(w_cnt == L - 1), n1_real.eq(w_n + 1 < total)]

        def next_flags(cnt0, full, done, rl, _cnt):
            """(walk_free, walk_mask, walk_done_ahead) from the walker's next values
            (``next_values``; cnt0: the next w_cnt is 0, the count itself is not needed)."""
            run = self.start | w_run
            walk_ok = run & ~full & ~done & ~(cnt0 & ~rl)
            return (walk_ok & ~(lc_nx & rl), walk_ok & lc_nx & rl,
                    done | (run & ~full & cnt0 & ~rl))

        def next_values(walk: bool, xfer):
            """The walker's next (w_cnt == 0, w_full, w_done, real, w_cnt) when ``walk`` says
            whether a lane is walked this cycle and ``xfer`` whether the panel is handed over,
            without a start: a kept lane fills slot w_cnt (the buffer is full after slot
            L - 1), a hand-over empties the buffer, and the walk is done once the buffer is
            empty and no lane is left."""
            cnt_is0 = w_cnt0
            done = w_done | (w_run & ~w_full & cnt_is0 & ~real)
            if not walk:
                return cnt_is0, ~xfer & w_full, done, real, w_cnt
            return (Mux(keep, w_wrap, cnt_is0), ~xfer & (w_full | (keep & w_wrap)), done, n1_real,
                    Mux(keep, Mux(w_wrap, 0, w_cnt + 1), w_cnt))

        # The state and the registered flags by a Shannon split on ``walking`` (for Fmax: the
        # pop decision, which waits for the mask queue's valid, is their last select, not
        # the input of the next-value logic in front of them) and, with cfg.fmax_logic, on
        # ``transfer`` (for Fmax: the hand-over decision, from can_issue, r_active and the
        # info ring's room, was in front of the flags' logic, the estimate's worst gather
        # path after a78a9da, 9.32 ns; its cases are constants here, folded by synthesis,
        # and it selects last); at a start, the walker's start values.
        at_start = (Const(1, 1), Const(0, 1), Const(0, 1), tot_nz, Const(0, 1))

        def split(of):
            """[Mux(start, at start, Mux(walking, if walked, if not))] of the values that ``of``
            derives from the walker's next values, for this cycle's walk and hand-over."""
            def by_walk(xfer):
                return [Mux(self.start, s0, Mux(walking, w1, w0)) for s0, w1, w0 in
                        zip(of(at_start), of(next_values(True, xfer)), of(next_values(False, xfer)))]
            if not cfg.fmax_logic:
                return by_walk(transfer)
            return [Mux(transfer, b, a) for a, b in zip(by_walk(Const(0, 1)), by_walk(Const(1, 1)))]

        nx_cnt0, nx_full, nx_done_st, nx_real, nx_cnt = split(lambda values: values)
        m.d.sync += [w_cnt.eq(nx_cnt), w_full.eq(nx_full), w_done.eq(nx_done_st), real.eq(nx_real)]
        if cfg.fmax_logic:
            m.d.sync += w_cnt0.eq(nx_cnt0)
        else:
            m.d.comb += w_cnt0.eq(w_cnt == 0)
        nx_free, nx_mask, nx_done = split(lambda values: next_flags(*values))
        m.d.sync += walk_done_ahead.eq(nx_done)
        m.d.sync += [q.eq(nx_free ^ pol) for q, (pol, _, _) in zip(walk_free_c, kinds)]
        m.d.sync += [q.eq(nx_mask ^ pol) for q, (pol, _, _) in zip(walk_mask_c, kinds)]

        # ---- address generation, one request per cycle ------------------------
        # The request register holds each lane's raw address and whether the lane is
        # wanted (real, inside the geometry); the range check, the lane enables and
        # the zeroed addresses of disabled lanes follow the register (for Fmax).
        dil = desc.dil
        # Stage A (a register stage between the issue decision and the request register, for
        # Fmax: one cycle of word latency, cyclemodel.WORD_STAGES): the "inside the map"
        # tests (carry-chain compares of the k counter with the lane's bounds) and the
        # address's first add are registered; the request register then takes the tests'
        # AND and the second add.
        a_v = Signal()
        a_ok = Signal(L)                                  # the lane is real
        a_geo = Signal(data.ArrayLayout(5, L))            # its geometry tests (see below)
        a_cb = Signal(data.ArrayLayout(signed(cfg.mem_addr_bits + 4), L))    # base + cb + k.cb
        a_sp = Signal(data.ArrayLayout(signed(cfg.mem_addr_bits + 3), L))    # (sp + k.sp) >> dil
        raw = Signal(data.ArrayLayout(signed(cfg.mem_addr_bits + 4), L))
        want_v = Signal(L)
        raw_r = Signal.like(raw)
        want_r = Signal(L)
        bad = []
        for l in range(L):
            v = {f: r_buf[l].v[f] + kctr.value[f] for f in VEC_FIELDS}
            sp = Signal(signed(cfg.mem_addr_bits + 3), name=f"sp{l}")
            m.d.comb += sp.eq(v["sp"])
            sp_sh = Mux(dil == 0, sp, Mux(dil == 1, sp >> 1, Mux(dil == 2, sp >> 2, sp >> 3)))
            # y = v.y + k.y inside [0, h_lim) <=> k.y inside [-v.y, h_lim - v.y) (and x);
            # the dilation's low-bit test needs only the sum's low 3 bits
            ky, kx, e = kctr.value.y, kctr.value.x, r_buf[l]
            y3 = (e.v.y[:3] + ky[:3])[:3]
            x3 = (e.v.x[:3] + kx[:3])[:3]
            low = Mux(dil == 0, 0, Mux(dil == 1, 1, Mux(dil == 2, 3, 7)))
            # each compare registered on its own; their AND follows in the request stage
            geo_tests = [ky >= e.ylo, ky < e.yhi, kx >= e.xlo, kx < e.xhi,
                         ((y3 & low) == 0) & ((x3 & low) == 0)]
            # loaded every cycle: used only with a_v
            m.d.sync += [a_ok[l].eq(e.ok), a_geo[l].eq(Cat(*geo_tests)),
                         a_cb[l].eq(r_buf[l].cbb + kctr.value.cb), a_sp[l].eq(sp_sh)]
            m.d.comb += [want_v[l].eq(a_ok[l] & (~desc.geo | a_geo[l].all())),
                         raw[l].eq(a_cb[l] + a_sp[l])]
            addr = raw_r[l]
            in_range = ~addr.as_unsigned()[cfg.mem_addr_bits:].any()      # 0 <= addr < mem_words
            m.d.comb += [req.payload.addr[l].eq(Mux(want_r[l] & in_range, addr, 0)),
                         req.payload.en[l].eq(want_r[l] & in_range)]
            bad.append(want_r[l] & ~in_range)
        m.d.sync += a_v.eq(can_issue & ~self.start)

        # The k counter rewinds at its panel's last issue (and at start), so it is at its
        # start whenever a panel is handed over (for Fmax: its ~250 enables follow the
        # issue decision, not the hand-over's longer one).  Its step is can_issue's copy
        # can_issue_k, a flip-flop: the counter gives clear priority over step, so the step
        # may be up with it (for Fmax: the step had been a LUT of start's ~310 loads and
        # last_issue, in front of the counter's flags, the estimate's worst path after
        # fb65cc5, 9.9 ns)
        # With cfg.fmax_logic its clear takes start a cycle late, from a register of its own
        # (start_k): no issue comes in the cycle after a start (can_issue's next value is 0
        # in a start cycle), and the digits are held from before the start (for Fmax:
        # start's ~310 loads were three LUTs in front of the counts' enables, the
        # estimate's worst gather paths after de22c18, 9.2 ns)
        start_k = Signal()
        start_d = fmax_sync(m, cfg)
        start_d += start_k.eq(self.start)
        m.d.comb += [kctr.clear.eq(start_k | last_issue), kctr.step.eq(can_issue_k)]
        issued, back = can_issue & ~self.start, self.mem.resp.valid
        room_flag, room_nx = occupancy_room(m, start=self.start, inc=issued, dec=back,
                                            limit=max_out, name="outst")
        m.d.comb += room.eq(room_flag)
        # two skid entries: a request may already be in stage A when the issue decision sees
        # the queue empty
        sk_v_nx = skid_issue(m, start=self.start, valid=req.valid, ready=req.ready, issue=a_v,
                             skid_full=sk_v, regs=[raw_r, want_r], values=[raw, want_v], depth=2)
        r_active_nx = ~self.start & (transfer | (r_active & ~last_issue))
        can_issue_nx = r_active_nx & ~sk_v_nx & room_nx & gap_ok_nx
        m.d.sync += can_issue.eq(can_issue_nx)
        m.d.comb += can_issue_k.eq(register_copies(m, can_issue_nx, [(1, 1, 0)], "can_issue_k")[0]
                                   if cfg.fmax_logic else can_issue)
        with m.If(req.valid & Cat(*bad).any() & ~self.start):
            m.d.sync += self.addr_error.eq(1)
        if self.check:
            walk_any = Cat(*wf, *wm).any()
            m.d.sync += Assert(~self.start | ~walk_any,
                               Format("a start with a walk flag up (walk_free {}, walk_mask {})",
                                      Cat(*wf), Cat(*wm)))
            if cfg.fmax_logic:      # (start_k is start itself without it)
                m.d.sync += Assert(~start_k | ~can_issue, "an issue in the cycle after a start")
            m.d.sync += Assert((Cat(*wf) == Cat(*(wf[0] for _ in wf))) & (Cat(*wm) == Cat(*(wm[0] for _ in wm))),
                               Format("walk flag copies differ: {} {}", Cat(*wf), Cat(*wm)))
            m.d.sync += Assert(can_issue_k == can_issue, "can_issue_k differs from can_issue")
            if self.lane_compactable:      # (outside ring mode gap is not used)
                m.d.sync += Assert(~self.ring | ((gap_gt[0] == (gap > 0)) & (gap_gt[1] == (gap > 1))),
                                   Format("gap flags {} {} but gap {}", gap_gt[0], gap_gt[1], gap))
                m.d.sync += Assert(~self.ring | ~can_issue | (gap > 0), Format("an issue with gap {}", gap))

        # step index within the current panel (restarts when a new panel arrives)
        with m.If(transfer | self.start):
            m.d.sync += [r_k.eq(0), r_klast.eq(self.k == 1)]
        with m.Elif(can_issue):
            m.d.sync += [r_k.eq(r_k + 1), r_klast.eq(r_k + 2 == self.k)]

        # the accepted request's lane enables, registered before they are counted (for
        # Fmax: the request's range checks and the lane count are not in one cycle; the
        # engine's byte counter is final long after the last request)
        fired_en = Signal(L)
        m.d.sync += fired_en.eq(Mux(req_fire, req.payload.en, 0))
        m.d.comb += [fifo.w_en.eq(req_fire), fifo.w_data.eq(req.payload.en),
                     self.req_elems.eq(sum(fired_en[l] for l in range(L)))]

        # ---- responses -> scratchpad ------------------------------------------
        # A response is registered (its lanes already zeroed where disabled, and
        # whether any lane is nonzero) before it is written (for Fmax: the memory's
        # response, the lane OR and the scratchpad and side-memory write enables are
        # not in one cycle): one cycle of word latency.
        resp = self.mem.resp
        wr_ptr = Signal(self.ptr_shape)
        m.d.comb += [resp.ready.eq(1), fifo.r_en.eq(resp.valid)]
        rsp_v = Signal()
        rsp_d = Signal(data.ArrayLayout(signed(cfg.op_bits), L))
        rsp_nz = Signal()
        in_d = [Mux(fifo.r_data[l], resp.payload[l][:cfg.op_bits], 0) for l in range(L)]
        m.d.sync += [rsp_v.eq(resp.valid & ~self.start), rsp_nz.eq(Cat(*in_d).any())]
        m.d.sync += [rsp_d[l].eq(in_d[l]) for l in range(L)]
        # wr_ptr + 1 kept as a register beside wr_ptr, so that the sequencer's next-state
        # compares ("the count after this write") need no adder (for Fmax)
        wr_ptr1 = Signal.like(self.words_loaded1)
        m.d.comb += [self.wr_data.eq(rsp_d), self.words_loaded.eq(wr_ptr), self.words_loaded1.eq(wr_ptr1)]

        # compact mode: nonzero words only, with (k, last) in the side memory
        sw = self.spad_words
        resp_k = Signal(cfg.dim_bits)     # step index of the next response in its panel
        p_has = Signal()                  # the current panel has an entry already
        last_k = Signal(range(sw))        # k of the latest entry
        fin_ptr = Signal(range(sw + 1))
        nz = rsp_nz
        p_end = Signal()                  # resp_k + 1 == K, registered (for Fmax)
        wr_prev = Signal.like(wr_ptr)     # wr_ptr - 1 once a word is written (a register, for Fmax:
                                          # no subtractor in front of the side memory's write decode)
        cmp = self.compact if self.compactable else Const(0)
        write = rsp_v & (~cmp | nz | (p_end & ~p_has))
        # the side memory's write is registered (for Fmax: the response's flags, the write's
        # address choice and the LUT-RAM's write decode are not in one cycle), so the final
        # count follows fin_ptr by two registers: an entry is in the side memory a cycle
        # before it counts as final (cyclemodel.COMPACT_LAG)
        fin_q, fin_q2 = Signal.like(fin_ptr), Signal.like(fin_ptr)
        m.d.comb += self.words_final_nx2.eq(Mux(self.start, 0, fin_ptr))
        m.d.sync += [fin_q.eq(self.words_final_nx2), fin_q2.eq(Mux(self.start, 0, fin_q))]
        m.d.comb += [self.wr_en.eq(write), self.wr_dense.eq(rsp_v), self.wr_addr.eq(wr_ptr[:(sw - 1).bit_length()] if sw > 1 else 0),
                     self.words_final_nx.eq(fin_q), self.words_final.eq(fin_q2)]
        # the write pointer and its + 1 from their next values (exported for the sequencer)
        m.d.comb += [self.words_loaded_nx.eq(Mux(self.start, 0, Mux(write, wr_ptr1, wr_ptr))),
                     self.words_loaded1_nx.eq(Mux(self.start, 1, Mux(write, wr_ptr1 + 1, wr_ptr1)))]
        m.d.sync += [wr_ptr.eq(self.words_loaded_nx), wr_ptr1.eq(self.words_loaded1_nx)]
        if cfg.fmax_logic:
            wr_ptr2 = Signal.like(self.words_loaded2)
            m.d.sync += wr_ptr2.eq(Mux(self.start, 2, Mux(write, wr_ptr2 + 1, wr_ptr2)))
            m.d.comb += self.words_loaded2.eq(wr_ptr2)
        else:
            m.d.comb += self.words_loaded2.eq(wr_ptr1 + 1)
        if self.compactable:
            # one copy per read port, written alike: each read is registered (its data leave
            # a flip-flop: for Fmax, the 1024-deep LUT-RAM's read tree is not in front of
            # the sequencer's tile-end decisions) at an address that is a register (no
            # multiplexer in front of the read). Separate copies also keep Yosys from
            # merging ports whose data meet in a multiplexer into one multiplexed port.
            entry = data.StructLayout({"k": range(sw), "last": 1})
            rewrite = rsp_v & cmp & p_end & ~nz & p_has     # mark the previous entry last
            kw_addr, kw_data, kw_en = Signal(range(sw)), Signal(entry), Signal()
            # (write & cmp) | rewrite is rsp_v & cmp & (nz | p_end): written out from the
            # registers, not after `write` (for Fmax: that LUT's ~40 loads were on an
            # estimated 9.4 ns path into these registers)
            kw_addr_nx = Mux(rewrite, wr_prev, wr_ptr)
            kw_en_nx = rsp_v & cmp & (nz | p_end) & ~self.start
            m.d.sync += [kw_addr.eq(kw_addr_nx),
                         kw_data.k.eq(Mux(rewrite, last_k, resp_k)), kw_data.last.eq(p_end),
                         kw_en.eq(kw_en_nx)]
            # the write's address and enable again, for the forwarding compares only (for
            # Fmax: kw_addr and kw_en reach every LUT-RAM's write port, ~1000 loads, and
            # were in front of the compare and the `last` flags' registers)
            (kw_fwd,) = register_copies(m, Cat(kw_addr_nx[:len(kw_addr)], kw_en_nx), [(1, 0, 1)], "kw_fwd")
            kw_addr_f, kw_en_f = kw_fwd[:len(kw_addr)], kw_fwd[len(kw_addr)]
            fwd_data = Signal(entry)        # the write a cycle later, forwarded to every read
            m.d.sync += fwd_data.eq(kw_data)
            # Each copy is K_BANKS banks of at most K_BANK_DEPTH entries, every bank read
            # (registered) at the address's low bits, the bank chosen after the registers
            # by the address's registered high bits (for Fmax: ad5a7b9's routed critical
            # path, 84.3 MHz, was the 1024-deep copy's read tree, seven LUT levels after the
            # LUT-RAM; a 256-deep bank's tree is about half of that, and the choice of
            # four registers joins the forwarding choice in front of the sequencer).
            depth_b, n_banks = side_bank_depth(sw), side_banks(sw)
            lg_b = (depth_b - 1).bit_length()
            for i in range(K_READS):
                # In LUT-RAM (a block RAM's clock-to-out, 5.8 ns on the ECP5, is longer than
                # the LUT-RAM's read tree), read asynchronously and registered here: the
                # registers see the memory before this cycle's write, which is forwarded by
                # hand, its address compare registered beside the read.  `k` is registered
                # per bank and chosen after the registers; `last` is registered after the
                # bank and forwarding choice (for Fmax: 2e7dce4's OOC critical path, 97.58
                # MHz, ran from k_src through the choice's four LUTs of `last` into the
                # sequencer's tile end; the choice now sits in front of this register).
                addr = self.k_addr[i][:len(kw_addr)]          # (wraps at the depth)
                fwd_nx = kw_en_f & (kw_addr_f == addr)
                # (one LUT-RAM per bank holds the whole entry: a memory of its own for `last`
                # took a LUT-RAM per 16 entries for one bit, where the entry's had a spare bit)
                bank_k, bank_last = [], []
                for b in range(n_banks):
                    in_bank = (kw_addr[lg_b:] == b) if n_banks > 1 else 1
                    kmem = memory.Memory(shape=entry, depth=depth_b, init=[], attrs={"ram_style": "distributed"})
                    m.submodules[f"kmem{i}_{b}"] = kmem
                    wp, rp = kmem.write_port(), kmem.read_port(domain="comb")
                    # (the read address: the bank's own copy of k_addr[i]'s low bits)
                    j = i * n_banks + b
                    m.d.comb += [wp.addr.eq(kw_addr[:lg_b]), wp.data.eq(kw_data),
                                 wp.en.eq(kw_en & in_bank), rp.addr.eq(self.k_bank_addr[j])]
                    if self.check:
                        m.d.sync += Assert(self.k_bank_addr[j] == addr[:lg_b],
                                           Format("k_bank_addr[{}] {} != k_addr[{}]'s low bits {}",
                                                  j, self.k_bank_addr[j], i, addr[:lg_b]))
                    k_q = Signal(range(sw), name=f"kmem{i}_{b}_k")
                    m.d.sync += k_q.eq(rp.data.k)
                    bank_k.append(k_q)
                    bank_last.append(rp.data.last)
                # k: the read's source (the forwarded write, else its bank) as a one-hot
                # register and the data as an AND-OR of it (for Fmax: af11d57's routed
                # critical path, 87.8 MHz, ran from the banks' registers through the bank
                # and forwarding multiplexers into the sequencer's tile-end decisions)
                read_bank = [(addr[lg_b:] == b) if n_banks > 1 else Const(1, 1) for b in range(n_banks)]
                sel = [fwd_nx] + [~fwd_nx & rb for rb in read_bank]
                src_oh = Signal(len(sel), name=f"k_src{i}")
                m.d.sync += src_oh.eq(Cat(*sel))
                got_k = or_all(Mux(src_oh[j], src, 0) for j, src in enumerate([fwd_data.k, *bank_k]))
                last_q = Signal(name=f"k_last_q{i}")
                # (the bank pick needs no ~fwd_nx: the forwarding select after it decides that case)
                bank_pick = or_all(Mux(rb, d, 0) for rb, d in zip(read_bank, bank_last))
                m.d.sync += last_q.eq(Mux(fwd_nx, kw_data.last, bank_pick))
                m.d.comb += [self.k_val[i].eq(got_k), self.k_last[i].eq(last_q)]
        with m.If(self.start):
            m.d.sync += [resp_k.eq(0), p_end.eq(self.k == 1), p_has.eq(0), fin_ptr.eq(0)]
        with m.Elif(rsp_v):
            m.d.sync += [resp_k.eq(Mux(p_end, 0, resp_k + 1)), p_end.eq(Mux(p_end, self.k == 1, resp_k + 2 == self.k)),
                         p_has.eq(~p_end & (p_has | write))]
            with m.If(write):
                m.d.sync += [wr_prev.eq(wr_ptr), last_k.eq(resp_k)]
            with m.If(p_end):
                m.d.sync += fin_ptr.eq(Mux(write, wr_ptr1, wr_ptr))
            with m.Elif(write):
                m.d.sync += fin_ptr.eq(wr_ptr)

        m.d.comb += self.busy.eq(~w_done | w_full | r_active | a_v | req.valid | sk_v | (fifo.level != 0) | rsp_v)
        return m
