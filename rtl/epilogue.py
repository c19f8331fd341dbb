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
from .copies import COPY_KINDS, register_copies


def below_guard_mask(shift, width: int):
    """Bits under the guard bit of a right shift by ``shift``: mask[i] = (i < shift - 1),
    by bit tests (no comparator in series with the data; registered per instruction or
    per layer by the callers)."""
    return Cat(*[shift > i + 1 for i in range(width)])


def shift_onehot(shift, width: int):
    """onehot[i] = (shift == i), i < width: registered by the callers with ``below``, for
    ``shift_round_bit``'s AND-OR form."""
    return Cat(*[shift == i for i in range(width)])


def or_all(vals):
    """Bitwise OR of an iterable of values (an AND-OR multiplexer with one-hot selects)."""
    out = Const(0, 1)
    for v in vals:
        out = out | v
    return out


def shift_round_bit(x, shift, below, onehot=None):
    """(q, up) of round_half_even(x / 2**shift) = q + up, by bit tests: q = x >> shift;
    with rem = x mod 2**shift and half = 2**(shift-1), rem > half iff the guard bit
    x[shift-1] and a bit under it (``below``) are set, rem == half iff only the guard bit
    is, so up = guard & (sticky | q[0]).

    With ``onehot`` (``shift_onehot(shift, n)``, a register; n covers every shift used),
    the guard bit and q[0] = x[shift] are AND-ORs of ``x`` (sign-extended) by it, beside
    the shifter, instead of multiplexers on the shift in series with it (for Fmax)."""
    q = x >> shift
    sticky = (x.as_unsigned() & below).any()
    if onehot is None:
        guard = Cat(Const(0, 1), x).bit_select(shift, 1)      # x[shift-1], 0 if shift == 0
        return q, guard & (sticky | q[0])
    n = len(onehot)
    xe = Cat(x, *([x[-1]] * max(0, n - len(x))))               # x[i] for i >= len(x): the sign
    guard = or_all(xe[i - 1] & onehot[i] for i in range(1, n))
    q0 = or_all(xe[i] & onehot[i] for i in range(n))
    return q, guard & (sticky | q0)


def saturate_bits(v, bits: int):
    """Saturate ``v`` to signed ``bits`` from its sign and high bits (no comparator carry
    chains): the high bits all equal the sign iff v fits."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    neg, high = v[-1], v[bits - 1:]
    return Mux(~neg & high.any(), hi, Mux(neg & ~high.all(), lo, v))


def round_saturate(q, up, bits: int):
    """(out, pos) for r = q + up (``q`` the shifted value, ``up`` its round-up bit):
    ``out`` = r saturated to signed ``bits``, ``pos`` = r > 0; by range flags on q's high
    bits and a ``bits``-wide add (for Fmax: no carry chain as wide as q in front of the
    saturation).  q >= 2**(bits-1) - 1 saturates high (q + up too), q < -2**(bits-1) low
    (q + up <= -2**(bits-1) too); in between the low bits + up cannot overflow."""
    hi = (1 << (bits - 1)) - 1
    neg, high = q[-1], q[bits - 1:]
    q_hi = ~neg & (high.any() | q[:bits - 1].all())
    q_lo = neg & ~high.all()
    low = (q[:bits] + up)[:bits].as_signed()
    return Mux(q_hi, hi, Mux(q_lo, -hi - 1, low)), ~neg & (q.any() | up)


class Requantize(wiring.Component):
    """``row`` (C accumulators) -> ``out`` (C operands) and ``mask``, ``latency``
    (0 or 1) enabled cycles later."""

    def __init__(self, cfg: AcceleratorConfig, latency: int = 0, shift_held: bool = False):
        if latency not in (0, 1):
            raise ValueError(f"Requantize: latency={latency!r}: must be 0 (combinational) or 1")
        self.cfg = cfg
        self.latency = latency
        # shift_held: ``shift`` is held at least one cycle before the first row (per
        # instruction), so its guard mask is a register (for Fmax)
        self.shift_held = shift_held
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
        aw = cfg.acc_bits
        # Per-instruction mask of the bits under the guard bit (bit tests, for Fmax).
        below = Signal(aw, name="below")
        domain = m.d.sync if self.shift_held else m.d.comb
        domain += below.eq(below_guard_mask(self.shift, aw))
        # and, for a held shift, its one-hot (shift_round_bit's AND-OR form; the engine's
        # ERR_SHIFT keeps shifts within the accumulator, 0..aw)
        onehot = None
        if self.shift_held and cfg.fmax_logic:
            onehot = Signal(aw + 1, name="shift_oh")
            m.d.sync += onehot.eq(shift_onehot(self.shift, aw + 1))
        # a held shift is registered once more per lane, in copies of distinct kinds (for
        # Fmax: each lane's shifter has its own select register, not one with ~300 loads)
        shifts = ([self.shift] * cfg.cols if not self.shift_held else
                  register_copies(m, self.shift, [COPY_KINDS[j % len(COPY_KINDS)] for j in range(cfg.cols)],
                                  "shift"))
        for j in range(cfg.cols):
            # stage 1: shift and round-half-to-even decision
            q = Signal(signed(aw), name=f"q{j}")
            up = Signal(name=f"up{j}")
            q_x, up_x = shift_round_bit(self.row[j], shifts[j], below, onehot)
            m.d.comb += [q.eq(q_x), up.eq(up_x)]
            q_r = Signal(signed(aw), name=f"q_r{j}")
            up_r = Signal(name=f"up_r{j}")
            if self.latency:
                with m.If(self.en):
                    m.d.sync += [q_r.eq(q), up_r.eq(up)]
            else:
                m.d.comb += [q_r.eq(q), up_r.eq(up)]
            # stage 2: round, saturate (range flags on q_r), ReLU (q + up <= 0 -> 0)
            sat, pos = round_saturate(q_r, up_r, cfg.op_bits)
            m.d.comb += [self.out[j].eq(Mux(self.relu & ~pos, 0, sat)), self.mask[j].eq(pos)]
        return m
