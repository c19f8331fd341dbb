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
from amaranth import Module, Signal, Mux, Cat, Const, Value, signed
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


def table_lookup(index, fn, width: int):
    """``fn(v)`` (``width`` bits, 0 <= fn(v) < 2**width) for ``v`` the value of ``index``
    (signed or unsigned), as a sum of products of index's bits per output bit: a function
    of a few bits is a few LUT levels, not the carry chains of the arithmetic that
    defines it (for Fmax; meant for indices of up to about 8 bits)."""
    index = Value.cast(index)
    n, is_signed = len(index), index.shape().signed
    u = index.as_unsigned()
    outs = {}
    for p in range(1 << n):
        v = p - (1 << n) if is_signed and p >> (n - 1) else p
        out = fn(v)
        if not 0 <= out < 1 << width:
            raise ValueError(f"table_lookup: fn({v}) = {out} does not fit {width} unsigned bits")
        outs[p] = out
    return Cat(*[or_all(u == p for p in range(1 << n) if outs[p] >> b & 1) for b in range(width)])


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


def round_saturate(q, up, bits: int, fits=None, q_any=None, q_inc=None, q_ones=None):
    """(out, pos) for r = q + up (``q`` the shifted value, ``up`` its round-up bit):
    ``out`` = r saturated to signed ``bits``, ``pos`` = r > 0; by range flags on q's high
    bits and a ``bits``-wide add (for Fmax: no carry chain as wide as q in front of the
    saturation).  q >= 2**(bits-1) - 1 saturates high (q + up too), q < -2**(bits-1) low
    (q + up <= -2**(bits-1) too); in between the low bits + up cannot overflow.
    ``fits`` (q's bits from bits-1 up all equal its sign) and ``q_any`` (q != 0) may come
    precomputed, e.g. registered beside q by ``shifted_range_flags``; so may ``q_inc``
    (q's low ``bits`` + 1) and ``q_ones`` (q's low ``bits - 1`` all set), e.g. registered
    with q (for Fmax: then no carry chain is after the register)."""
    hi = (1 << (bits - 1)) - 1
    neg, high = q[-1], q[bits - 1:]
    fits = (high.all() | ~high.any()) if fits is None else fits
    q_any = q.any() if q_any is None else q_any
    q_ones = q[:bits - 1].all() if q_ones is None else q_ones
    q_hi = ~neg & (~fits | q_ones)
    q_lo = neg & ~fits
    if q_inc is None:
        low = (q[:bits] + up)[:bits].as_signed()
    else:
        low = Mux(up, q_inc[:bits], q[:bits]).as_signed()
    return Mux(q_hi, hi, Mux(q_lo, -hi - 1, low)), ~neg & (q_any | up)


def range_masks(shift, width: int, bits: int):
    """Per-shift masks of ``x``'s bits (registered per instruction by the caller) for
    ``shifted_range_flags``: bits at or above ``shift + bits - 1``, and at or above ``shift``."""
    # shift + bits - 1 <= i written as shift <= i - (bits - 1), a compare with a constant
    # (for Fmax: the add's carry chain and the compares after it were an estimated 9.4 ns)
    return (Cat(*[(shift <= i - (bits - 1)) if i >= bits - 1 else Const(0) for i in range(width)]),
            Cat(*[shift <= i for i in range(width)]))


def shifted_range_flags(x, hi_mask, ge_mask, slice_bits: int):
    """``round_saturate``'s flags of q = x >> shift, from ``x`` and ``range_masks(shift)``,
    beside the shifter rather than after it (for Fmax): q fits iff x's bits from
    shift + bits - 1 up all equal x's sign; q != 0 iff a bit of x at or above ``shift``
    is set (used for x >= 0 only).  As lists of partial flags, one per slice of
    ``slice_bits`` of x's bits: q fits iff every ``fits`` part is set, q != 0 iff any
    ``any`` part is."""
    width, n = len(x), slice_bits
    sign = x[-1]
    off = (x.as_unsigned() ^ sign.replicate(width)) & hi_mask
    on = x.as_unsigned() & ge_mask
    starts = range(0, width, n)
    return [~off[i:i + n].any() for i in starts], [on[i:i + n].any() for i in starts]


# bits per partial range flag (an OR tree of two LUT4 levels after the per-bit mask)
RANGE_SLICE_BITS = 8


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
        # (the Fmax forms need a held shift: their selects and masks are per-instruction registers)
        fast = self.shift_held and cfg.fmax_logic
        if fast:
            onehot = Signal(aw + 1, name="shift_oh")
            m.d.sync += onehot.eq(shift_onehot(self.shift, aw + 1))
        # a held shift is registered once more per lane, in copies of distinct kinds (for
        # Fmax: each lane's shifter has its own select register, not one with ~300 loads)
        shifts = ([self.shift] * cfg.cols if not self.shift_held else
                  register_copies(m, self.shift, [COPY_KINDS[j % len(COPY_KINDS)] for j in range(cfg.cols)],
                                  "shift"))
        # and, with a held shift and a register stage, q's range flags beside the shifter
        # (per-instruction masks; for Fmax: the flags' OR trees on q_r were in front of the
        # saturation's select, 2bc8168's routed critical path on seed 2, 87.4 MHz)
        early_flags = fast and self.latency
        if early_flags:
            hi_mask, ge_mask = Signal(aw, name="hi_mask"), Signal(aw, name="ge_mask")
            m.d.sync += [x.eq(v) for x, v in zip((hi_mask, ge_mask), range_masks(self.shift, aw, cfg.op_bits))]
        for j in range(cfg.cols):
            # stage 1: shift and round-half-to-even decision
            q = Signal(signed(aw), name=f"q{j}")
            up = Signal(name=f"up{j}")
            q_x, up_x = shift_round_bit(self.row[j], shifts[j], below, onehot)
            m.d.comb += [q.eq(q_x), up.eq(up_x)]
            q_r = Signal(signed(aw), name=f"q_r{j}")
            up_r = Signal(name=f"up_r{j}")
            flags = {}
            if self.latency:
                with m.If(self.en):
                    m.d.sync += [q_r.eq(q), up_r.eq(up)]
                    if early_flags:
                        # as partial flags over slices of RANGE_SLICE_BITS, combined after the
                        # register (for Fmax: one flag's OR tree over all the bits was five
                        # LUTs after a 4.4 ns hop from the sum, fb65cc5's routed critical path
                        # on seed 1, 91.24 MHz)
                        fits_x, any_x = shifted_range_flags(self.row[j], hi_mask, ge_mask,
                                                            RANGE_SLICE_BITS)
                        fits_r = Signal(len(fits_x), name=f"fits_r{j}")
                        any_r = Signal(len(any_x), name=f"any_r{j}")
                        m.d.sync += [fits_r.eq(Cat(*fits_x)), any_r.eq(Cat(*any_x))]
                        # and q's low bits + 1 and "q's low bits - 1 all set" registered with
                        # q (for Fmax: 4a9cbc4's ULX3S critical path, 80.74 MHz, was up_r ->
                        # the low bits' add, a carry chain -> the saturation's select)
                        ob = cfg.op_bits
                        inc_r = Signal(ob, name=f"q_inc_r{j}")
                        ones_r = Signal(name=f"q_ones_r{j}")
                        m.d.sync += [inc_r.eq(q[:ob] + 1), ones_r.eq(q[:ob - 1].all())]
                        flags = {"fits": fits_r.all(), "q_any": any_r.any(), "q_inc": inc_r, "q_ones": ones_r}
            else:
                m.d.comb += [q_r.eq(q), up_r.eq(up)]
            # stage 2: round, saturate (range flags on q_r), ReLU (q + up <= 0 -> 0)
            sat, pos = round_saturate(q_r, up_r, cfg.op_bits, **flags)
            m.d.comb += [self.out[j].eq(Mux(self.relu & ~pos, 0, sat)), self.mask[j].eq(pos)]
        return m
