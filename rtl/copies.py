"""Register copies that synthesis keeps apart.

A register that drives thousands of loads (a stall enable, an instruction's start
pulse, a shift amount) is one long, slow net on an FPGA.  Copies of it, each driving
a share of the loads, are faster, but Yosys merges flip-flops with the same input,
initial value and reset.  So each copy here is of a different *kind* ``(pol, init,
reset_less)``: it stores its next value inverted or not (its output undoes it), with
initial value ``init`` and with or without the domain's reset.
"""
from amaranth import Module, Signal, Value

# the eight kinds: (stored inverted, initial value, reset-less)
COPY_KINDS = [(r & 1, (r >> 1) & 1, r >> 2) for r in range(8)]


def register_copies(m: Module, nx, kinds, name: str, en=None) -> list:
    """One registered copy of ``nx`` per kind in ``kinds`` (each a Signal as wide as
    ``nx``, a cycle after it; with ``en``, loaded only when ``en`` is high, as the
    register it copies is).  A copy's value after configuration or reset is
    ``init ^ pol`` in every bit (all zeros when ``init == pol``)."""
    nx = Value.cast(nx)
    width = len(nx)
    ones = (1 << width) - 1
    outs = []
    for i, (pol, iv, rl) in enumerate(kinds):
        inv = ones if pol else 0
        q = Signal(width, init=ones if iv else 0, reset_less=bool(rl), name=f"{name}_q{i}")
        out = Signal(width, name=f"{name}_c{i}")
        if en is None:
            m.d.sync += q.eq(nx ^ inv)
        else:
            with m.If(en):
                m.d.sync += q.eq(nx ^ inv)
        m.d.comb += out.eq(q ^ inv)
        outs.append(out)
    return outs


def fmax_sync(m: Module, cfg):
    """``m.d.sync`` with ``cfg.fmax_logic`` (a register stage for Fmax), else ``m.d.comb``
    (the iCE40's form: the cells matter more than the clock there)."""
    return m.d.sync if cfg.fmax_logic else m.d.comb
