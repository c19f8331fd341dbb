"""Epilogue: requantize a row of accumulator values to the operand format.

Same rule as ``model_sw.numerics.requantize`` (its golden function): arithmetic
shift right by ``shift`` with round-half-to-even, saturation to the signed
operand range, optional ReLU, and the mask bit ``out > 0``.
"""
from amaranth import Module, Signal, Mux, Const, signed, unsigned
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig


class Requantize(wiring.Component):
    """Combinational: ``row`` (C accumulators) -> ``out`` (C operands) and ``mask``."""

    def __init__(self, cfg: AcceleratorConfig):
        self.cfg = cfg
        C = cfg.cols
        super().__init__({
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
        pw = Signal(cfg.acc_bits + 1)          # 2**shift (shift < acc_bits is checked at decode)
        m.d.comb += pw.eq(Const(1, 1) << s)
        for j in range(cfg.cols):
            x = self.row[j]
            q = Signal(signed(cfg.acc_bits), name=f"q{j}")
            rem = Signal(unsigned(cfg.acc_bits), name=f"rem{j}")
            half = Signal(unsigned(cfg.acc_bits + 1), name=f"half{j}")
            m.d.comb += [
                q.eq(x >> s),
                rem.eq(x.as_unsigned() & (pw - 1)),
                half.eq(pw >> 1),
            ]
            up = (s != 0) & ((rem > half) | ((rem == half) & q[0]))
            r = Signal(signed(cfg.acc_bits + 1), name=f"r{j}")
            m.d.comb += r.eq(q + up)
            sat = Mux(r > hi, hi, Mux(r < lo, lo, r))
            pos = r > 0
            m.d.comb += [self.out[j].eq(Mux(self.relu & ~pos, 0, sat)), self.mask[j].eq(pos)]
        return m
