"""A processing element's registered product, ``p <= a * b`` while ``en``: one DSP each.

On a generic target (the simulations, ``rtl.generate``'s portable Verilog, iCE40) it is
an Amaranth multiply and a register; synthesis maps the multiply to a DSP block and
keeps the register in the fabric.

On an ECP5 (an elaboration platform whose ``family`` is ``"ecp5"``: the board builds'
``amaranth_boards`` platforms, and ``ECP5`` below for the out-of-context builds of
``rtl.timing``, ``rtl.paths`` and ``rtl.synth``) it is a ``MULT18X18D`` instance whose own
output register holds the product.  Why: the DSP blocks sit in fixed rows of the die,
so a product register in the fabric is a long route away from the multiplier; on a
routed ``default`` Accelerator that was the critical path (4.7 ns of routing into the
DSP, its 3.9 ns, then 5.0 ns back out to the register: 70.7 MHz).  With the register
inside the block the multiply ends at the block's own setup (3.5 ns after its inputs)
and the route out starts at its clock-to-out (0.74 ns, nextpnr 0.11's timing data).

Both forms behave alike: the product of the operands at the last enabled edge; the
register has no reset (its product is read only with the valid bit beside it).
``tb/ecp5_cells.py`` holds a behavioural model of the primitive's used subset, and
``tests/test_dsp_ecp5.py`` runs the engine with the instances and that model.
"""
from __future__ import annotations

from amaranth import ClockSignal, Const, Instance, Signal, Value, signed

DSP_WIDTH = 18                # MULT18X18D operand width (signed with SIGNEDA/B)
DSP_PRODUCT = 36


class Ecp5Target:
    """An elaboration platform that only says "the target is an ECP5": units choose ECP5
    primitives by ``platform.family`` (for out-of-context builds, with no board)."""
    family = "ecp5"

    def __repr__(self):
        return "Ecp5Target()"


ECP5 = Ecp5Target()


def is_ecp5(platform) -> bool:
    return getattr(platform, "family", None) == "ecp5"


def target_for_family(family: str):
    """The elaboration platform of an out-of-context build for ``family``: ``ECP5`` on an
    ECP5, else None (portable: the units use no vendor primitive there)."""
    return ECP5 if family == "ecp5" else None


def mult18x18d_params() -> dict:
    """The primitive's parameters: only the output register, clocked by CLK0, enabled by
    CE0, no reset in use (RST0 tied low), the global set/reset off."""
    return {
        "REG_INPUTA_CLK": "NONE", "REG_INPUTB_CLK": "NONE", "REG_INPUTC_CLK": "NONE",
        "REG_PIPELINE_CLK": "NONE",
        "REG_OUTPUT_CLK": "CLK0", "REG_OUTPUT_CE": "CE0", "REG_OUTPUT_RST": "RST0",
        "GSR": "DISABLED", "RESETMODE": "SYNC", "MULT_BYPASS": "DISABLED",
        "CAS_MATCH_REG": "FALSE", "HIGHSPEED_CLK": "NONE", "SOURCEB_MODE": "B_SHIFT",
        "CLK0_DIV": "ENABLED", "CLK1_DIV": "ENABLED", "CLK2_DIV": "ENABLED", "CLK3_DIV": "ENABLED",
    }


def registered_product(m, a, b, en, *, platform, name: str) -> Signal:
    """``a * b`` (both signed) registered at each clock edge with ``en`` high; a signal as
    wide as the exact product.  The instance (on ECP5) is a cell of ``m`` itself, so it
    stays in the caller's Verilog module (rtl.synth counts the array's DSPs there)."""
    a, b = Value.cast(a), Value.cast(b)
    if not (a.shape().signed and b.shape().signed):
        raise ValueError(f"registered_product {name}: operands must be signed, got {a.shape()} and {b.shape()}")
    width = len(a) + len(b)
    p = Signal(signed(width), name=name, reset_less=True)
    if not is_ecp5(platform):
        with m.If(en):
            m.d.sync += p.eq(a * b)
        return p
    if len(a) > DSP_WIDTH or len(b) > DSP_WIDTH:
        raise ValueError(f"registered_product {name}: {len(a)} x {len(b)} bits does not fit a "
                         f"{DSP_WIDTH}x{DSP_WIDTH} MULT18X18D")
    a18, b18 = Signal(signed(DSP_WIDTH), name=f"{name}_a"), Signal(signed(DSP_WIDTH), name=f"{name}_b")
    p36 = Signal(DSP_PRODUCT, name=f"{name}_p")
    m.d.comb += [a18.eq(a), b18.eq(b), p.eq(p36[:width])]    # sign-extended operands
    ports = {}
    for k in range(DSP_WIDTH):
        ports[f"i_A{k}"] = a18[k]
        ports[f"i_B{k}"] = b18[k]
        ports[f"i_C{k}"] = Const(0, 1)
    for k in range(DSP_PRODUCT):
        ports[f"o_P{k}"] = p36[k]
    m.submodules[f"{name}_dsp"] = Instance(
        "MULT18X18D",
        **{f"p_{k}": v for k, v in mult18x18d_params().items()},
        i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
        i_CLK0=ClockSignal("sync"), i_CE0=en, i_RST0=Const(0, 1),
        **ports)
    return p
