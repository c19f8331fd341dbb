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
from amaranth import Module, Signal, Mux, Const, signed, unsigned
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
        pw = Signal(cfg.acc_bits + 1)          # 2**shift (shift < acc_bits is checked at decode)
        m.d.comb += pw.eq(Const(1, 1) << s)
        for j in range(cfg.cols):
            x = self.row[j]
            # stage 1: shift and round-half-to-even decision
            q = Signal(signed(cfg.acc_bits), name=f"q{j}")
            rem = Signal(unsigned(cfg.acc_bits), name=f"rem{j}")
            half = Signal(unsigned(cfg.acc_bits + 1), name=f"half{j}")
            m.d.comb += [
                q.eq(x >> s),
                rem.eq(x.as_unsigned() & (pw - 1)),
                half.eq(pw >> 1),
            ]
            up = (s != 0) & ((rem > half) | ((rem == half) & q[0]))
            q_r = Signal(signed(cfg.acc_bits), name=f"q_r{j}")
            up_r = Signal(name=f"up_r{j}")
            if self.latency:
                with m.If(self.en):
                    m.d.sync += [q_r.eq(q), up_r.eq(up)]
            else:
                m.d.comb += [q_r.eq(q), up_r.eq(up)]
            # stage 2: round, saturate, ReLU
            r = Signal(signed(cfg.acc_bits + 1), name=f"r{j}")
            m.d.comb += r.eq(q_r + up_r)
            sat = Mux(r > hi, hi, Mux(r < lo, lo, r))
            pos = r > 0
            m.d.comb += [self.out[j].eq(Mux(self.relu & ~pos, 0, sat)), self.mask[j].eq(pos)]
        return m
