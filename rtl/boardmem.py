"""On-chip "external memory" of a board top: one block RAM of ``2**mem_addr_bits``
element slots that plays the role of the testbench DRAM (``tb/harness.sv``) for the
engine's two gather read ports and its write port, plus the host bridge's port.

Organization (correctness first, one simple-dual-port RAM, no replication):

* one read port, shared by the engine's A and B gather ports and the host.  A gather
  request (R or C lane addresses) is served *lane by lane*, one lane per cycle, and its
  response (all lanes) is returned as one beat: L+2 cycles per request, in order.  A and
  B take turns when both wait; the host is served when neither does.
* one write port: an engine write beat (C data lanes + C mask lanes) is written lane by
  lane (2C cycles); host writes go in between beats.
* disabled lanes read as zero and are not written, exactly as in the harness.

The engine's request/response protocol is kept unchanged; only its timing differs from
the harness's (a fixed latency of LAT cycles with one request per cycle), so the
``busy_cycles``-type counters do not follow ``cosim.cyclemodel`` on a board, the data
and the data-volume counters do.
"""
from __future__ import annotations

from amaranth import Module, Signal, Mux, unsigned
from amaranth.lib import wiring, stream, data, memory
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .engine import mem_wr_layout, zero_wr_layout
from .gather import mem_rd_signature
from .uart import host_port_signature


class BoardMemory(wiring.Component):
    def __init__(self, cfg: AcceleratorConfig):
        self.cfg = cfg
        super().__init__({
            "rd_a": In(mem_rd_signature(cfg, cfg.rows)),
            "rd_b": In(mem_rd_signature(cfg, cfg.cols)),
            "wr": In(stream.Signature(mem_wr_layout(cfg))),
            "rd_m": In(mem_rd_signature(cfg, cfg.cols)),            # the engine's ReLU-mask reads
            "wz": In(stream.Signature(zero_wr_layout(cfg))),         # the engine's zero writes (ocompact)
            "host": In(host_port_signature(cfg.mem_addr_bits, cfg.slot_bits)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        L = max(R, C)
        aw, sw = cfg.mem_addr_bits, cfg.slot_bits
        m.submodules.ram = ram = memory.Memory(shape=unsigned(sw), depth=1 << aw, init=[])
        rp = ram.read_port()
        wp = ram.write_port()

        # ---------------- read side ------------------------------------------------
        addrs = Signal(data.ArrayLayout(unsigned(aw), L))
        ens = Signal(L)
        buf = Signal(data.ArrayLayout(unsigned(sw), L))
        lanes = Signal(range(L + 1))
        i = Signal(range(L + 2))
        who = Signal(2)                       # 0 A, 1 B, 2 host, 3 mask reads
        turn = Signal()                       # B first next time both wait
        a_req, b_req, h_req = self.rd_a.req, self.rd_b.req, self.host.req
        mk_req = self.rd_m.req
        host_rd = h_req.valid & ~h_req.payload.we
        host_wr = h_req.valid & h_req.payload.we
        m.d.sync += self.host.rvalid.eq(0)
        for l in range(R):
            m.d.comb += self.rd_a.resp.payload[l].eq(buf[l])
        for l in range(C):
            m.d.comb += [self.rd_b.resp.payload[l].eq(buf[l]), self.rd_m.resp.payload[l].eq(buf[l])]
        rd_idle = Signal()
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += rd_idle.eq(1)
                take_a = a_req.valid & (~b_req.valid | ~turn)
                take_b = b_req.valid & ~take_a
                with m.If(take_a):
                    m.d.comb += a_req.ready.eq(1)
                    m.d.sync += [ens.eq(a_req.payload.en), lanes.eq(R), who.eq(0), turn.eq(1)]
                    for l in range(R):
                        m.d.sync += addrs[l].eq(a_req.payload.addr[l])
                with m.Elif(take_b):
                    m.d.comb += b_req.ready.eq(1)
                    m.d.sync += [ens.eq(b_req.payload.en), lanes.eq(C), who.eq(1), turn.eq(0)]
                    for l in range(C):
                        m.d.sync += addrs[l].eq(b_req.payload.addr[l])
                with m.Elif(mk_req.valid):
                    m.d.comb += mk_req.ready.eq(1)
                    m.d.sync += [ens.eq(mk_req.payload.en), lanes.eq(C), who.eq(3)]
                    for l in range(C):
                        m.d.sync += addrs[l].eq(mk_req.payload.addr[l])
                with m.Elif(host_rd):
                    m.d.comb += h_req.ready.eq(1)
                    m.d.sync += [ens.eq(1), lanes.eq(1), who.eq(2), addrs[0].eq(h_req.payload.addr)]
                with m.If(take_a | take_b | mk_req.valid | host_rd):
                    m.d.sync += i.eq(0)
                    m.next = "SERVE"
            with m.State("SERVE"):
                # cycle i: read lane i; lane i-1's data is on the port
                m.d.comb += [rp.addr.eq(addrs[i[:max(1, (L - 1).bit_length())]]), rp.en.eq(1)]
                with m.If(i != 0):
                    prev = (i - 1)[:max(1, (L - 1).bit_length())]
                    m.d.sync += buf[prev].eq(Mux(ens.bit_select(prev, 1), rp.data, 0))
                m.d.sync += i.eq(i + 1)
                with m.If(i == lanes):
                    with m.If(who == 2):
                        m.d.sync += [self.host.rvalid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "RESP"
            with m.State("RESP"):
                m.d.comb += [self.rd_a.resp.valid.eq(who == 0), self.rd_b.resp.valid.eq(who == 1),
                             self.rd_m.resp.valid.eq(who == 3)]
                ready = Mux(who == 0, self.rd_a.resp.ready, Mux(who == 1, self.rd_b.resp.ready,
                                                                 self.rd_m.resp.ready))
                with m.If(ready):
                    m.next = "IDLE"
        m.d.comb += self.host.rdata.eq(buf[0])

        # ---------------- write side -----------------------------------------------
        beat = Signal(mem_wr_layout(cfg))
        zbeat = Signal(zero_wr_layout(cfg))
        j = Signal(range(2 * C + 1))
        wr_idle = Signal()
        lg_c = max(1, (C - 1).bit_length())
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [wr_idle.eq(1), self.wr.ready.eq(1)]
                with m.If(self.wr.valid):
                    m.d.sync += [beat.eq(self.wr.payload), j.eq(0)]
                    m.next = "WRITE"
                with m.Elif(self.wz.valid):
                    m.d.comb += self.wz.ready.eq(1)
                    m.d.sync += [zbeat.eq(self.wz.payload), j.eq(0)]
                    m.next = "ZERO"
                with m.Elif(host_wr):
                    m.d.comb += [h_req.ready.eq(1), wp.addr.eq(h_req.payload.addr),
                                 wp.data.eq(h_req.payload.data), wp.en.eq(1)]
            with m.State("WRITE"):
                jj = j[:lg_c]
                with m.If(j < C):               # data lanes
                    m.d.comb += [wp.addr.eq(beat.addr[jj]), wp.data.eq(beat.data[jj]),
                                 wp.en.eq(beat.en.bit_select(jj, 1))]
                with m.Else():                  # mask lanes (0/1 in a slot)
                    k = (j - C)[:lg_c]
                    m.d.comb += [wp.addr.eq(beat.mask_addr[k]), wp.data.eq(beat.mask.bit_select(k, 1)),
                                 wp.en.eq(beat.mask_en.bit_select(k, 1))]
                m.d.sync += j.eq(j + 1)
                with m.If(j == 2 * C - 1):
                    m.next = "IDLE"
            with m.State("ZERO"):               # one zero-write lane per cycle
                jj = j[:lg_c]
                m.d.comb += [wp.addr.eq(zbeat.addr[jj]), wp.data.eq(0), wp.en.eq(zbeat.en.bit_select(jj, 1))]
                m.d.sync += j.eq(j + 1)
                with m.If(j == C - 1):
                    m.next = "IDLE"
        m.d.comb += self.idle.eq(rd_idle & wr_idle & ~self.wr.valid & ~self.wz.valid & ~a_req.valid &
                                 ~b_req.valid & ~mk_req.valid)
        return m
