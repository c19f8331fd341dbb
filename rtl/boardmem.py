"""On-chip "external memory" of a board top: one block RAM of ``2**mem_addr_bits``
element slots that plays the role of the testbench DRAM (``tb/harness.sv``,
``tb/accel_harness.sv``) for the engine's gather read ports and its write ports, the
weight-update unit's read and write ports (``update=True``: the Accelerator core), plus
the host bridge's port.

Organization (correctness first, one simple-dual-port RAM, no replication):

* one read port, shared by the engine's A, B and mask gather ports, the update unit's
  port and the host.  A gather request (R, C or pred_cols lane addresses) is granted
  one cycle after the arbiter chose it (its ``ready`` comes from a register), then
  served *lane by lane*, one lane per cycle, and its response (all lanes) is returned
  as one beat: L+4 cycles per request, in order.  The update unit goes first (its traffic is
  small and the predictor array must not wait on it), then A and B take turns when both
  wait, then mask reads, then the host.
* one write port: an engine write beat (C data lanes + C mask lanes), a zero-write beat
  (C lanes) or an update beat (2 x pred_cols lanes: master weights and their 8-bit copy)
  is written lane by lane; host writes go in between beats.
* read requests are taken only while no write beat is being written, so a read sees
  every write accepted before it (the harness's order: a write takes effect when it is
  accepted); the fences of the Accelerator's instruction stream then hold on a board too.
* disabled lanes read as zero and are not written, exactly as in the harness.

The engine's request/response protocol is kept unchanged; only its timing differs from
the harness's (a fixed latency of LAT cycles with one request per cycle), so the
``busy_cycles``-type counters do not follow ``cosim.cyclemodel`` on a board, the data
and the data-volume counters do.
"""
from __future__ import annotations

from amaranth import Module, Signal, Mux, Const, unsigned
from amaranth.hdl import Assert, Format
from amaranth.lib import wiring, stream, data, memory
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .copies import fmax_sync
from .engine import mem_wr_layout, zero_wr_layout
from .gather import mem_rd_signature
from .uart import host_port_signature
from predictor_hw.update import update_wr_layout


class BoardMemory(wiring.Component):
    def __init__(self, cfg: AcceleratorConfig, update: bool = False, check: bool = False):
        self.cfg, self.update = cfg, update
        self.check = check                 # simulation: assert the kept flags each cycle
        extra = {}
        if update:
            extra = {"upd_rd": In(mem_rd_signature(cfg, cfg.pred_cols)),      # the update unit's reads
                     "upd_wr": In(stream.Signature(update_wr_layout(cfg)))}   # and its write beats
        super().__init__({
            "rd_a": In(mem_rd_signature(cfg, cfg.rows)),
            "rd_b": In(mem_rd_signature(cfg, cfg.cols)),
            "wr": In(stream.Signature(mem_wr_layout(cfg))),
            "rd_m": In(mem_rd_signature(cfg, cfg.cols)),            # the engine's ReLU-mask reads
            "wz": In(stream.Signature(zero_wr_layout(cfg))),         # the engine's zero writes (ocompact)
            "host": In(host_port_signature(cfg.mem_addr_bits, cfg.slot_bits)),
            "idle": Out(1),
            **extra,
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        U = cfg.pred_cols if self.update else 0
        L = max(R, C, U)
        aw, sw = cfg.mem_addr_bits, cfg.slot_bits
        m.submodules.ram = ram = memory.Memory(shape=unsigned(sw), depth=1 << aw, init=[])
        rp = ram.read_port()
        wp = ram.write_port()

        # ---------------- read side ------------------------------------------------
        addrs = Signal(data.ArrayLayout(unsigned(aw), L))
        ens = Signal(L)
        buf = Signal(data.ArrayLayout(unsigned(sw), L))
        # The port's address is the head of a queue of the request's lane addresses that
        # shifts by one each SERVE cycle, and the port reads every cycle: the block RAMs'
        # address and enable come from flip-flops, not from a lane multiplexer (for Fmax:
        # the RAM is tens of block RAMs across the die; 2bc8168's board critical path
        # ran from the lane index through the multiplexer and three 3-4 ns hops).  The
        # response slot that takes the port's data is a one-hot register (``take``).
        take = Signal(L)
        m.d.comb += [rp.addr.eq(addrs[0]), rp.en.eq(1)]
        # The port's data is registered (``rd_q``) before it goes to the response slots,
        # which ``take_q`` (``take`` a cycle later) points at (for Fmax: ad5a7b9+'s board
        # critical path, 75.7 MHz, was a block RAM's clock-to-out, 5.8 ns, and a 7.0 ns hop
        # across the die into the slots)
        # (with cfg.fmax_logic; without it, rd_q and take_q are the port's data and take,
        # and SERVE's extra cycle remains)
        rd_q, take_q = Signal.like(rp.data), Signal(L)
        data_d = fmax_sync(m, cfg)
        data_d += [rd_q.eq(rp.data), take_q.eq(take)]
        lanes = Signal(range(L + 1))
        i = Signal(range(L + 3))
        who = Signal(3)                       # 0 A, 1 B, 2 host, 3 mask reads, 4 update reads
        turn = Signal()                       # B first next time both wait
        a_req, b_req, h_req = self.rd_a.req, self.rd_b.req, self.host.req
        mk_req = self.rd_m.req
        # without the sparse modes the engine never reads masks: the port is not served
        # (for area: its request's address registers and the engine's mask reader behind
        # them are then unused, and synthesis removes them)
        mk_valid = mk_req.valid if cfg.sparse else Const(0, 1)
        if self.update:
            u_req, u_resp = self.upd_rd.req, self.upd_rd.resp
            for l in range(U):
                m.d.comb += u_resp.payload[l].eq(buf[l])
            u_valid, u_ready = u_req.valid, self.upd_rd.resp.ready
        else:
            u_valid, u_ready = Const(0, 1), Const(0, 1)
        host_rd = h_req.valid & ~h_req.payload.we
        host_wr = h_req.valid & h_req.payload.we
        m.d.sync += self.host.rvalid.eq(0)
        for l in range(R):
            m.d.comb += self.rd_a.resp.payload[l].eq(buf[l])
        for l in range(C):
            m.d.comb += [self.rd_b.resp.payload[l].eq(buf[l]), self.rd_m.resp.payload[l].eq(buf[l])]
        rd_idle = Signal()
        wr_idle = Signal()
        wr_free = Signal()
        # The arbiter decides in IDLE from the requests' valid bits and grants one cycle
        # later from that registered choice (GRANT): a port's ``ready`` comes from a
        # register, so no valid -> ready -> enable loop runs through a requesting unit
        # and this arbiter in one cycle (for Fmax).  A stream's valid stays up until it
        # is taken, so the chosen request is still there in GRANT.
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += rd_idle.eq(1)
                take_u = Signal()
                m.d.comb += take_u.eq(u_valid)
                take_a = a_req.valid & (~b_req.valid | ~turn) & ~take_u
                take_b = b_req.valid & ~take_a & ~take_u
                with m.If(take_u):
                    m.d.sync += who.eq(4)
                with m.Elif(take_a):
                    m.d.sync += who.eq(0)
                with m.Elif(take_b):
                    m.d.sync += who.eq(1)
                with m.Elif(mk_valid):
                    m.d.sync += who.eq(3)
                with m.Else():
                    m.d.sync += who.eq(2)
                with m.If(wr_free & (take_u | take_a | take_b | mk_valid | host_rd)):
                    m.next = "GRANT"
            with m.State("GRANT"):
                with m.If(~wr_free):
                    m.next = "IDLE"             # a write beat was taken meanwhile: it goes first
                with m.Else():
                    # the gather ports: (who, request, lanes, the A/B turn after it)
                    gathers = [(0, a_req, R, 1), (1, b_req, C, 0)] + ([(3, mk_req, C, None)] if cfg.sparse else [])
                    if self.update:
                        gathers.insert(0, (4, u_req, U, None))
                    with m.Switch(who):
                        for code, req, n, next_turn in gathers:
                            with m.Case(code):
                                m.d.comb += req.ready.eq(1)
                                m.d.sync += [ens.eq(req.payload.en), lanes.eq(n)]
                                m.d.sync += [addrs[l].eq(req.payload.addr[l]) for l in range(n)]
                                if next_turn is not None:
                                    m.d.sync += turn.eq(next_turn)
                        with m.Default():
                            m.d.comb += h_req.ready.eq(1)
                            m.d.sync += [ens.eq(1), lanes.eq(1), addrs[0].eq(h_req.payload.addr)]
                    m.d.sync += [i.eq(0), take.eq(0)]     # (SERVE's first cycles have no data)
                    if cfg.fmax_logic:
                        m.d.sync += take_q.eq(0)
                    m.next = "SERVE"
            with m.State("SERVE"):
                # cycle i: read lane i (the head of the address queue); lane i-1's data is
                # on the port, lane i-2's in rd_q, which goes to the buffer slot that
                # ``take_q`` points at
                m.d.sync += [addrs[l].eq(addrs[l + 1]) for l in range(L - 1)]
                m.d.sync += take.eq(Mux(i == 0, 1, take << 1))
                for l in range(L):
                    with m.If(take_q[l]):
                        m.d.sync += buf[l].eq(Mux(ens[l], rd_q, 0))
                m.d.sync += i.eq(i + 1)
                with m.If(i == lanes + 1):
                    with m.If(who == 2):
                        m.d.sync += [self.host.rvalid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "RESP"
            with m.State("RESP"):
                m.d.comb += [self.rd_a.resp.valid.eq(who == 0), self.rd_b.resp.valid.eq(who == 1),
                             self.rd_m.resp.valid.eq((who == 3) if cfg.sparse else 0)]
                if self.update:
                    m.d.comb += self.upd_rd.resp.valid.eq(who == 4)
                ready = Mux(who == 0, self.rd_a.resp.ready, Mux(who == 1, self.rd_b.resp.ready,
                                                                 Mux(who == 3, self.rd_m.resp.ready, u_ready)))
                with m.If(ready):
                    m.next = "IDLE"
        m.d.comb += self.host.rdata.eq(buf[0])

        # ---------------- write side -----------------------------------------------
        beat = Signal(mem_wr_layout(cfg))
        zbeat = Signal(zero_wr_layout(cfg))
        j = Signal(range(2 * max(C, U) + 1))
        lg_c = max(1, (C - 1).bit_length())
        if self.update:
            ubeat = Signal(update_wr_layout(cfg))
            upd_valid = self.upd_wr.valid
        else:
            upd_valid = Const(0, 1)
        # The lane chosen this cycle is written a cycle later from registers (for Fmax:
        # no lane multiplexer in front of the block RAMs' write address, data and enable;
        # the read side starts a request two cycles after the write side goes idle at the
        # earliest, so a read still sees every write accepted before it)
        w_addr, w_data, w_en = Signal.like(wp.addr), Signal.like(wp.data), Signal()
        m.d.sync += [wp.addr.eq(w_addr), wp.data.eq(w_data), wp.en.eq(w_en)]
        # wr_free: no beat, and the last lane written.  With cfg.fmax_logic a register, from
        # the write side's next state and w_en (wp.en's next value): equal every cycle (for
        # Fmax: the read side's grant, the gather ports' ready, followed the write FSM's
        # state decode into the engine's skid registers, hops of 1.7-2.2 ns, c4473a0's
        # ULX3S critical path, 76.39 MHz)
        wr_idle_nx = Signal()                        # the write FSM's next state is IDLE
        if cfg.fmax_logic:
            wr_free_q = Signal(init=1)
            m.d.sync += wr_free_q.eq(wr_idle_nx & ~w_en)
            m.d.comb += wr_free.eq(wr_free_q)
            if self.check:
                m.d.sync += Assert(wr_free_q == (wr_idle & ~wp.en),
                                   Format("wr_free {} but write FSM idle {} and wp.en {}", wr_free_q, wr_idle, wp.en))
        else:
            m.d.comb += wr_free.eq(wr_idle & ~wp.en)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [wr_idle.eq(1), self.wr.ready.eq(1),
                             wr_idle_nx.eq(~self.wr.valid & ~self.wz.valid & ~upd_valid)]
                with m.If(self.wr.valid):
                    m.d.sync += [beat.eq(self.wr.payload), j.eq(0)]
                    m.next = "WRITE"
                with m.Elif(self.wz.valid):
                    m.d.comb += self.wz.ready.eq(1)
                    m.d.sync += [zbeat.eq(self.wz.payload), j.eq(0)]
                    m.next = "ZERO"
                if self.update:
                    with m.Elif(upd_valid):
                        m.d.comb += self.upd_wr.ready.eq(1)
                        m.d.sync += [ubeat.eq(self.upd_wr.payload), j.eq(0)]
                        m.next = "UPDATE"
                with m.Elif(host_wr):
                    m.d.comb += [h_req.ready.eq(1), w_addr.eq(h_req.payload.addr),
                                 w_data.eq(h_req.payload.data), w_en.eq(1)]
            with m.State("WRITE"):
                jj = j[:lg_c]
                with m.If(j < C):               # data lanes
                    m.d.comb += [w_addr.eq(beat.addr[jj]), w_data.eq(beat.data[jj]),
                                 w_en.eq(beat.en.bit_select(jj, 1))]
                with m.Else():                  # mask lanes (0/1 in a slot)
                    k = (j - C)[:lg_c]
                    m.d.comb += [w_addr.eq(beat.mask_addr[k]), w_data.eq(beat.mask.bit_select(k, 1)),
                                 w_en.eq(beat.mask_en.bit_select(k, 1))]
                m.d.sync += j.eq(j + 1)
                with m.If(j == 2 * C - 1):
                    m.d.comb += wr_idle_nx.eq(1)
                    m.next = "IDLE"
            with m.State("ZERO"):               # one zero-write lane per cycle
                jj = j[:lg_c]
                m.d.comb += [w_addr.eq(zbeat.addr[jj]), w_data.eq(0), w_en.eq(zbeat.en.bit_select(jj, 1))]
                m.d.sync += j.eq(j + 1)
                with m.If(j == C - 1):
                    m.d.comb += wr_idle_nx.eq(1)
                    m.next = "IDLE"
            if self.update:
                with m.State("UPDATE"):         # one update lane per cycle (2 x pred_cols)
                    jj = j[:max(1, (2 * U - 1).bit_length())]
                    m.d.comb += [w_addr.eq(ubeat.addr[jj]), w_data.eq(ubeat.data[jj]),
                                 w_en.eq(ubeat.en.bit_select(jj, 1))]
                    m.d.sync += j.eq(j + 1)
                    with m.If(j == 2 * U - 1):
                        m.d.comb += wr_idle_nx.eq(1)
                        m.next = "IDLE"
        m.d.comb += self.idle.eq(rd_idle & wr_free & ~self.wr.valid & ~self.wz.valid & ~a_req.valid &
                                 ~b_req.valid & ~mk_valid & ~u_valid & ~upd_valid)
        return m
