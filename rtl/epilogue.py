"""Epilogue: requantize a row of accumulator values to the operand format.

Same rule as ``model_sw.numerics.requantize`` (its golden function): arithmetic
shift right by ``shift`` with round-half-to-even, saturation to the signed
operand range, optional ReLU, and the mask bit ``out > 0``.

``Requantize(cfg)`` is combinational (the predictor array uses it so).
``Requantize(cfg, latency=1)`` is pipelined for Fmax (the engine's drain): the
first stage (combinational on ``row``) shifts and computes the round-up bit, a
register (advancing while ``en`` is high) holds both; the second (combinational
from that register) adds the round-up bit, saturates and applies ReLU, so
``out``/``mask`` belong to the ``row`` presented one enabled cycle earlier
(``shift``/``relu`` must be held meanwhile: they are per instruction).
"""
from amaranth import Module, Signal, Mux, Cat, Const, signed
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig


class Requantize(wiring.Component):
    """``row`` (C accumulators) -> ``out`` (C operands) and ``mask``, ``latency``
    (0 or 1) enabled cycles later."""

    def __init__(self, cfg: AcceleratorConfig, latency: int = 0):
        if latency not in (0, 1):
            raise ValueError(f"Requantize: latency={latency!r}: must be 0 (combinational) or 1")
        self.cfg = cfg
        self.latency = latency
        C = cfg.cols
        super().__init__({
            "en": In(1),
            "row": In(data.ArrayLayout(signed(cfg.acc_bits), C)),
            "shift": In(6),
            "relu": In(1),
            "out": Out(data.ArrayLayout(signed(cfg.op_bits), C)),
            "mask": Out(C),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lo, hi = -(1 << (cfg.op_bits - 1)), (1 << (cfg.op_bits - 1)) - 1
        s = self.shift
        aw = cfg.acc_bits
        # Per-instruction masks from the shift amount (bit tests instead of comparators,
        # for Fmax): below[i] = (i < s - 1) selects the bits under the guard bit.
        below = Signal(aw, name="below")
        m.d.comb += below.eq(Cat(*[s > i + 1 for i in range(aw)]))
        for j in range(cfg.cols):
            x = self.row[j]
            # stage 1: shift and round-half-to-even decision.  With rem = x mod 2**s and
            # half = 2**(s-1): rem > half iff the guard bit x[s-1] and some bit below it
            # are set, rem == half iff only the guard bit is: up = guard & (sticky | q[0]).
            q = Signal(signed(aw), name=f"q{j}")
            m.d.comb += q.eq(x >> s)
            guard = Cat(Const(0, 1), x).bit_select(s, 1)          # x[s-1], 0 if s == 0
            sticky = (x.as_unsigned() & below).any()
            up = guard & (sticky | q[0])
            q_r = Signal(signed(aw), name=f"q_r{j}")
            up_r = Signal(name=f"up_r{j}")
            if self.latency:
                with m.If(self.en):
                    m.d.sync += [q_r.eq(q), up_r.eq(up)]
            else:
                m.d.comb += [q_r.eq(q), up_r.eq(up)]
            # stage 2: round, saturate, ReLU (range tests on the sign and high bits)
            r = Signal(signed(aw + 1), name=f"r{j}")
            m.d.comb += r.eq(q_r + up_r)
            neg = r[-1]
            high = r[cfg.op_bits - 1:]              # all equal to the sign iff r fits
            over = ~neg & high.any()
            under = neg & ~high.all()
            pos = ~neg & r.any()
            sat = Mux(over, hi, Mux(under, lo, r))
            m.d.comb += [self.out[j].eq(Mux(self.relu & ~pos, 0, sat)), self.mask[j].eq(pos)]
        return m
