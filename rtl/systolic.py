"""Output-stationary R x C systolic MAC array with double-buffered results.

Operand vectors enter together (A column of R values, B row of C values) and are
skewed inside: PE(i,j) sees step k of a tile at cycle t0 + k + i + j.  Each PE
registers its product (``p = a*b``: the multiplier's pipeline register, so the
multiply and the accumulate are in different cycles) together with the step's
valid and ``first`` bits, and accumulates one cycle later.  A ``first`` marker
travels with the A operand; when a PE's product stage holds it, the tile it was
accumulating is finished: the sum moves to the PE's drain register and the
accumulator restarts with the new product.  So a new tile streams in right
behind the previous one, with no fill or drain bubble (SCALE-Sim's R + C - 2 per
tile disappears).

Drain registers of a column form a chain toward row 0 and shift up one row per
cycle, except in the cycle a PE captures.  Because PE(i,j) captures one cycle
after PE(i-1,j) and its value reaches row i-1 one cycle later still, values never
collide: column j emits tile row i at t_b + 2i + j, where t_b is the cycle PE(0,0)
captured (t0 + ``product_stages(cfg)`` for a marker that entered at t0).  The chain needs 2R - 1 cycles to empty, which is the minimum spacing
of two ``first`` markers (``cfg.drain_period``); the sequencer enforces it.
Outputs are de-skewed so a whole tile row (C sums) leaves in one cycle, rows
0..R-1 two cycles apart, at t_b + 2i + C - 1.

``en`` freezes every register (global stall for output back-pressure).  ``en_row``
(all ones unless driven) splits it physically: row i's registers (and column j's skew
and de-skew registers, j mod R) advance when ``en & en_row[i]``.  The engine drives
``en_row`` with copies of one stall decision, so that no single net reaches every
register of the array (for Fmax); logically every bit must be equal.
"""
from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .dsp import registered_product

def product_stages(cfg: AcceleratorConfig) -> int:
    """Registers between a PE's operands and its accumulator: the multiplier's own, and
    with ``cfg.fmax_logic`` one more in the fabric beside the accumulator (for Fmax: the
    placer put some accumulators far from their DSP block, and that hop was in front of
    the add; 2051d98's OOC critical path, 95.18 MHz, was one, DSP -> 7.06 ns -> add).
    The cycle model takes its latency from here (cosim.cyclemodel.array_in_stages)."""
    return 2 if cfg.fmax_logic else 1


def delay(m, sig, n, en, name):
    """``sig`` delayed by ``n`` enabled cycles (a register chain)."""
    for s in range(n):
        r = Signal.like(sig, name=f"{name}_d{s}")
        with m.If(en):
            m.d.sync += r.eq(sig)
        sig = r
    return sig


class SystolicArray(wiring.Component):
    def __init__(self, cfg: AcceleratorConfig):
        self.cfg = cfg
        R, C = cfg.rows, cfg.cols
        super().__init__({
            "en": In(1),
            "en_row": In(R, init=(1 << R) - 1),
            "in_a": In(data.ArrayLayout(signed(cfg.op_bits), R)),
            "in_b": In(data.ArrayLayout(signed(cfg.op_bits), C)),
            "in_valid": In(1),
            "in_first": In(1),
            "out_row": Out(data.ArrayLayout(signed(cfg.acc_bits), C)),
            "out_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        en = [self.en & self.en_row[i] for i in range(R)]      # per row (see the module doc)
        op = signed(cfg.op_bits)
        acc_shape = signed(cfg.acc_bits)
        stages = product_stages(cfg)
        if stages not in (1, 2):
            raise ValueError(f"product_stages={stages}: the PE is built with 1 or 2")

        # input skew
        a_edge = [delay(m, self.in_a[i], i, en[i], f"skew_a{i}") for i in range(R)]
        v_edge = [delay(m, self.in_valid, i, en[i], f"skew_v{i}") for i in range(R)]
        f_edge = [delay(m, self.in_first, i, en[i], f"skew_f{i}") for i in range(R)]
        b_edge = [delay(m, self.in_b[j], j, en[j % R], f"skew_b{j}") for j in range(C)]

        a_r = [[Signal(op, name=f"a_{i}_{j}") for j in range(C)] for i in range(R)]
        b_r = [[Signal(op, name=f"b_{i}_{j}") for j in range(C)] for i in range(R)]
        v_r = [[Signal(name=f"v_{i}_{j}") for j in range(C)] for i in range(R)]
        f_r = [[Signal(name=f"f_{i}_{j}") for j in range(C)] for i in range(R)]
        acc = [[Signal(acc_shape, name=f"acc_{i}_{j}") for j in range(C)] for i in range(R)]
        live = [[Signal(name=f"live_{i}_{j}") for j in range(C)] for i in range(R)]
        # the products, registered (outside the row's `If(en)`: the register takes en itself)
        p_r = [[registered_product(m, a_edge[i] if j == 0 else a_r[i][j - 1],
                                   b_edge[j] if i == 0 else b_r[i - 1][j], en[i],
                                   platform=platform, name=f"p_{i}_{j}")
                for j in range(C)] for i in range(R)]
        pv_r = [[Signal(name=f"pv_{i}_{j}") for j in range(C)] for i in range(R)]
        pf_r = [[Signal(name=f"pf_{i}_{j}") for j in range(C)] for i in range(R)]
        d = [[Signal(acc_shape, name=f"d_{i}_{j}") for j in range(C)] for i in range(R)]
        dv = [[Signal(name=f"dv_{i}_{j}") for j in range(C)] for i in range(R)]

        for i in range(R):
            with m.If(en[i]):
                for j in range(C):
                    a_in = a_edge[i] if j == 0 else a_r[i][j - 1]
                    v_in = v_edge[i] if j == 0 else v_r[i][j - 1]
                    f_in = f_edge[i] if j == 0 else f_r[i][j - 1]
                    b_in = b_edge[j] if i == 0 else b_r[i - 1][j]
                    m.d.sync += [a_r[i][j].eq(a_in), v_r[i][j].eq(v_in),
                                 f_r[i][j].eq(f_in), b_r[i][j].eq(b_in)]
                    # product stage (one DSP per PE and its pipeline register: on an ECP5
                    # the block's own output register, rtl/dsp.py), and with two product
                    # stages a register of the product in the fabric (see product_stages)
                    m.d.sync += [pv_r[i][j].eq(v_in), pf_r[i][j].eq(f_in)]
                    prod, v_p, f_p = p_r[i][j], pv_r[i][j], pf_r[i][j]
                    if stages == 2:
                        prod2 = Signal(prod.shape(), name=f"p2_{i}_{j}", reset_less=True)
                        v_p2, f_p2 = Signal(name=f"pv2_{i}_{j}"), Signal(name=f"pf2_{i}_{j}")
                        m.d.sync += [prod2.eq(prod), v_p2.eq(v_p), f_p2.eq(f_p)]
                        prod, v_p, f_p = prod2, v_p2, f_p2
                    below_d = d[i + 1][j] if i + 1 < R else 0
                    below_v = dv[i + 1][j] if i + 1 < R else 0
                    with m.If(f_p):
                        m.d.sync += [d[i][j].eq(acc[i][j]), dv[i][j].eq(live[i][j]),
                                     acc[i][j].eq(Mux(v_p, prod, 0)), live[i][j].eq(v_p)]
                    with m.Else():
                        m.d.sync += [d[i][j].eq(below_d), dv[i][j].eq(below_v)]
                        with m.If(v_p):
                            m.d.sync += [acc[i][j].eq(acc[i][j] + prod), live[i][j].eq(1)]

        # de-skew the column outputs so a tile row leaves in one cycle
        for j in range(C):
            m.d.comb += self.out_row[j].eq(delay(m, d[0][j], C - 1 - j, en[j % R], f"deskew{j}"))
        m.d.comb += self.out_valid.eq(delay(m, dv[0][0], C - 1, en[(C - 1) % R], "deskew_v"))
        return m
