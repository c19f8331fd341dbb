"""A stream register slice (skid buffer): ``i`` -> ``o`` with one cycle of latency, full
throughput, and both directions registered: ``o.valid``/``o.payload`` are flip-flops, and
so is ``i.ready`` (no combinational path from ``o.ready`` to ``i.ready``).

Why: between two units far apart on the die (a board's stream buffers and the core's
units), a consumer's ``ready`` decided by logic (a compare, a state) would otherwise run
back across the die into the producer's enables in the same cycle.  It behaves as a FIFO
of depth 2 whose output appears a cycle after the input is taken.
"""
from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out


class SkidBuffer(wiring.Component):
    def __init__(self, shape):
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        skid = Signal.like(self.o.payload, name="skid")
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):      # the output register is free or frees now
            with m.If(skid_valid):                   # the waiting entry moves out first
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():                           # (i.ready is 1: skid is empty)
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):     # output held: the input waits in skid
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m

