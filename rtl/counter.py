"""A 3-digit mixed-radix counter that carries an address vector along.

It is the address generator of the DMA: counting digits (d0 innermost; the
outermost digit never wraps, its ``count`` is ignored) it keeps
the vector ``init + sum_d digit_d * step_d`` up to date with adders only.  Each
level remembers the vector at the start of its current count (``base1``,
``base2``) so that a wrap rewinds by assignment rather than by a multiply.

Without convolution addressing (``cfg.conv`` False) the descriptor has one digit that
never wraps and only the ``cb`` component: the counter is one adder.
"""
from amaranth import Module, Signal, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .copies import register_copies
from .isa import DIGITS, vec4_layout, _layout, _spec

VEC_FIELDS = ("cb", "sp", "y", "x")


def vec_add(a, b):
    """Component-wise sum of two vec4 views, as a dict of Values."""
    return {f: a[f] + b[f] for f in VEC_FIELDS}


class MixedRadixCounter(wiring.Component):
    """``clear`` loads ``init`` and zeroes the digits; ``step`` advances by one (``clear``
    wins when both are up).
    ``digits`` must be held from at least one cycle before ``clear`` (the counts' starts
    are registered from them)."""

    def __init__(self, cfg: AcceleratorConfig, split_step: bool = False):
        self.cfg = cfg
        # split_step: the digits' counts and flags step on ``step_flags``, a copy of ``step``
        # that the caller computes apart (for Fmax: the vector's ~150 registers and the
        # flags then hang on two nets, not one)
        self.split_step = split_step
        digit_layout = _layout(_spec(cfg, full=True)["a"]["lane"])
        super().__init__({
            "digits": In(digit_layout),
            "init": In(vec4_layout(cfg)),
            "clear": In(1),
            "step": In(1),
            **({"step_flags": In(1)} if split_step else {}),
            "value": Out(vec4_layout(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        dw = cfg.dim_bits
        # the outermost digit never wraps, so only the inner two keep a count of the steps
        # left before they wrap (counting down, for Fmax: "last" is then an equality with a
        # constant, not an adder and a comparator against the digit's count)
        rem = [Signal(dw, name=f"rem{d}") for d in range(DIGITS - 1)]
        base1 = Signal(vec4_layout(cfg))
        base2 = Signal(vec4_layout(cfg))
        dig = self.digits
        if not cfg.conv:                     # one digit, cb only (the other fields are 0-wide)
            with m.If(self.clear):
                m.d.sync += self.value.cb.eq(self.init.cb)
            with m.Elif(self.step):
                m.d.sync += self.value.cb.eq(self.value.cb + dig[0].step.cb)
            return m
        # A digit wraps when it reaches count-1 (count 0 is treated as 1).  Whether it
        # is there is kept as a registered flag per digit (for Fmax: the compare is
        # not in series with ``step``), updated with the count it describes; the count's
        # start (count - 1) and whether it is 0 are registered from the digits (held per
        # instruction, final long before the first clear).
        last = [Signal(name=f"last{d}") for d in range(DIGITS - 1)]
        rem_init = [Signal(dw, name=f"rem_init{d}") for d in range(DIGITS - 1)]
        last_init = [Signal(name=f"last_init{d}") for d in range(DIGITS - 1)]
        for d in range(DIGITS - 1):
            c = dig[d].count
            m.d.sync += [rem_init[d].eq(Mux(c == 0, 0, c - 1)), last_init[d].eq(c <= 1)]

        # both inner digits at their last count (last0 & last1), a register of its own kept
        # from the same next values (for Fmax: the outer level's ~75 enables are
        # clear | step & last01, one LUT after the caller's registers)
        last01 = Signal()
        last01_init = last_init[0] & last_init[1]

        def restart(d):
            return [rem[d].eq(rem_init[d]), last[d].eq(last_init[d])]

        def advance(d):
            return [rem[d].eq(rem[d] - 1), last[d].eq(rem[d] == 1)]

        # The flags decide with their own copy of last01 (last01_f, a register of another
        # kind that Yosys keeps apart; for Fmax: the estimate's worst path after aab768f ran
        # from last01's ~225 enables of the vector's registers into the flags' next values,
        # six LUTs); both copies take the same next value.
        last01_nx = Signal()
        (last01_f,) = (register_copies(m, last01_nx, [(1, 1, 0)], "last01_f")   # stored inverted
                       if cfg.fmax_logic else (last01,))
        m.d.comb += last01_nx.eq(last01)
        m.d.sync += last01.eq(last01_nx)
        step_f = self.step_flags if self.split_step else self.step
        with m.If(self.clear):
            m.d.sync += [*restart(0), *restart(1)]
            m.d.comb += last01_nx.eq(last01_init)
        with m.Elif(step_f):
            with m.If(last01_f):
                m.d.sync += [*restart(0), *restart(1)]
                m.d.comb += last01_nx.eq(last01_init)
            with m.Elif(~last[0]):
                m.d.sync += advance(0)
                m.d.comb += last01_nx.eq((rem[0] == 1) & last[1])
            with m.Else():                   # last0, not last1
                m.d.sync += [*restart(0), *advance(1)]
                m.d.comb += last01_nx.eq(last_init[0] & (rem[1] == 1))
        # the vector and the levels' bases
        with m.If(self.clear):
            m.d.sync += [self.value.eq(self.init), base1.eq(self.init), base2.eq(self.init)]
        with m.Elif(self.step):
            with m.If(last01):
                for f in VEC_FIELDS:
                    nxt = base2[f] + dig[2].step[f]
                    m.d.sync += [base2[f].eq(nxt), base1[f].eq(nxt), self.value[f].eq(nxt)]
            with m.Elif(~last[0]):
                for f in VEC_FIELDS:
                    m.d.sync += self.value[f].eq(self.value[f] + dig[0].step[f])
            with m.Else():                   # last0, not last1
                for f in VEC_FIELDS:
                    nxt = base1[f] + dig[1].step[f]
                    m.d.sync += [base1[f].eq(nxt), self.value[f].eq(nxt)]
        return m
