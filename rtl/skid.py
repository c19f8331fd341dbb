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


def offered_for(m: Module, valid, ready, cycles: int, name: str):
    """A flag that a stream's beat has waited ``cycles`` cycles (valid and not taken in each
    of them): a stream's payload is held while valid, so registers loaded from the payload
    every cycle ``cycles`` stages deep are then its own.  A consumer that takes a beat only
    with this flag keeps its checks of the payload out of the acceptance's cycle (for Fmax)."""
    if not isinstance(cycles, int) or cycles < 1:
        raise ValueError(f"offered_for({name!r}): cycles={cycles!r} must be an int >= 1")
    waiting = valid & ~ready
    seen = [Signal(name=f"{name}{i}") for i in range(cycles)]
    m.d.sync += [seen[0].eq(waiting), *(seen[i].eq(waiting & seen[i - 1]) for i in range(1, cycles))]
    return seen[-1]


class StreamStage(wiring.Component):
    """A stage between two streams of one payload shape: ``i`` in, ``o`` out."""

    def __init__(self, shape):
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })


class SkidBuffer(StreamStage):

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



class LateReady(StreamStage):
    """A stream pass-through whose ``i.ready`` is a register: the producer learns of a take
    a cycle late, and ``o.valid`` is masked in that cycle, so the beat it still offers is
    not taken twice.  No payload register (``o.payload`` is ``i.payload``): one beat per two
    cycles at most, for a producer that holds its payload while valid (every stream does)
    and a consumer that takes rarely (a core's instructions).

    Why: a wide beat (an instruction of ~1600 bits) makes a ``SkidBuffer`` cost two such
    registers, while the path to break is only the consumer's ``ready`` running back across
    the die into the producer's enables."""

    def elaborate(self, platform):
        m = Module()
        taken = Signal()          # o took a beat last cycle: i.ready now, o.valid masked
        m.d.sync += taken.eq(self.o.valid & self.o.ready)
        m.d.comb += [self.o.payload.eq(self.i.payload),
                     self.o.valid.eq(self.i.valid & ~taken),
                     self.i.ready.eq(taken)]
        return m
