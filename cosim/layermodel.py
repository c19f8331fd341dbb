"""Per-layer analytic cost of training GEMMs: cycles (``cosim.cyclemodel``'s exact
instruction model) and the RTL's counters, for layers far too large to enumerate
instruction by instruction.

How a GEMM becomes instructions is the driver's rule (``driver.gemm_program``):
K is cut into ranges of at most ``min(max_k, 2**dim_bits - 1)`` (whole periods
of the operands' k counters), then M and N into ranges that fit the scratchpads
(and the accumulator SRAM when K is split).  The program is the product
M-ranges x N-ranges x K-ranges, and an instruction's busy cycles depend only on
its (m, n, k, store), so

    program cycles = sum over distinct (mc, nc) of  count(mc) * count(nc) *
                     sum over the K ranges of instruction_cycles(mc, nc, kc, store = last)

which :func:`gemm_cost` evaluates with one cycle-model call per distinct
instruction shape (a handful per layer).  The counters have closed forms over
the same ranges (``R``, ``C`` array size; ``TM = sum ceil(mc/R)``,
``TN = sum ceil(nc/C)``; ``|mR|``, ``|nR|``, ``|kR|`` the number of ranges):

    macs         = M N K
    compute      = TM TN K                      (array steps)
    spad_reads   = 2 TM TN K                    (one A and one B word per step)
    spad_writes  = (TM |nR| + TN |mR|) K        (each instruction loads its panels once)
    acc_reads    = acc_writes = (|kR| - 1) TM TN R
    rd_bytes     = op_bytes (validA |nR| + validB |mR|)   (the ranges partition A and B;
                   valid = elements the gather really reads: inside the image, on the stride grid)
    wr_bytes     = M N (acc_bytes if raw else op_bytes);  mask_bits = M N if the mask is written

``tests/test_layermodel.py`` checks all of this against the driver's real
programs (cycles, instruction shapes, gathered elements) on every shape the RTL
tests simulate and on small network layers, and against the RTL's counters.

Where the driver's rule fails (an image row wider than the scratchpad allows at
that K: ``DriverError``), the plan halves the K limit until the rows fit --
K split across instructions, partial sums in the accumulator SRAM, which the ISA
supports -- and marks the layer ``fallback``.  A layer that does not fit even then
raises :class:`PlanError` naming the layer and the limit.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from rtl import isa
from rtl.config import AcceleratorConfig
from . import cyclemodel, driver, golden
from .driver import ConvGeom, DriverError

OPS = ("fwd", "bwd_data", "bwd_weight")
COUNTER_KEYS = ("busy_cycles", "compute_cycles", "macs", "rd_bytes", "wr_bytes", "mask_bits",
                "spad_reads", "spad_writes", "acc_reads", "acc_writes", "retired")


class PlanError(DriverError):
    """A layer that cannot be mapped onto the preset at all."""


@dataclass
class Gemm:
    """One training GEMM of a layer (``repeat`` identical copies: groups, heads)."""
    layer: str
    op: str
    m: int
    n: int
    k: int
    a: dict
    b: dict
    valid_a: int
    valid_b: int
    relu: bool = False
    mask: bool = False
    out_raw: bool = False
    repeat: int = 1


# ---------------------------------------------------------------- valid-element counts
def _tap_hits(n_out: int, k: int, first, lo: int, hi: int, grid: int = 1) -> int:
    """sum over outputs o < n_out of #{taps t < k : c = first(o) + t, lo <= c < hi, c % grid == 0}."""
    c = first(np.arange(n_out))[:, None] + np.arange(k)[None, :]
    return int(((c >= lo) & (c < hi) & (c % grid == 0)).sum())


def im2col_valid(g: ConvGeom) -> int:
    """Elements of im2col(x) inside the (unpadded) input."""
    sy = _tap_hits(g.ho, g.kh, lambda o: o * g.stride - g.pad, 0, g.h)
    sx = _tap_hits(g.wo, g.kw, lambda o: o * g.stride - g.pad, 0, g.w)
    return g.batch * g.cin * sy * sx


def dilated_dy_valid(g: ConvGeom) -> int:
    """Elements of the backward-data view of dY that are real (on the stride grid, inside)."""
    s = g.stride
    ty = _tap_hits(g.h, g.kh, lambda i: i - (g.kh - 1 - g.pad), 0, (g.ho - 1) * s + 1, s)
    tx = _tap_hits(g.w, g.kw, lambda i: i - (g.kw - 1 - g.pad), 0, (g.wo - 1) * s + 1, s)
    return g.batch * g.cout * ty * tx


# ---------------------------------------------------------------- the GEMMs of a layer
def conv_gemms(g: ConvGeom, layer: str, *, relu: bool = False, out_raw: bool = False,
               input_grad: bool = True, repeat: int = 1) -> list[Gemm]:
    """forward, backward-weight and (if ``input_grad``) backward-data of a convolution,
    with the epilogue flags of ``cosim.cnn_pass``: forward requantized (+ReLU and mask, or
    raw for the logits), dW raw int32, dX requantized."""
    kk = g.cin * g.kh * g.kw
    a, b = driver.conv_fwd_descs(g, 0, 0)
    vb = im2col_valid(g)
    out = [Gemm(layer, "fwd", g.cout, g.batch * g.ho * g.wo, kk, a, b, g.cout * kk, vb,
                relu=relu, mask=relu, out_raw=out_raw, repeat=repeat)]
    a, b = driver.conv_bwd_weight_descs(g, 0, 0)
    out.append(Gemm(layer, "bwd_weight", g.cout, kk, g.batch * g.ho * g.wo, a, b,
                    g.cout * g.batch * g.ho * g.wo, vb, out_raw=True, repeat=repeat))
    if input_grad:
        a, b = driver.conv_bwd_data_descs(g, 0, 0)
        out.append(Gemm(layer, "bwd_data", g.cin, g.batch * g.h * g.w, g.cout * g.kh * g.kw, a, b,
                        g.cin * g.cout * g.kh * g.kw, dilated_dy_valid(g), repeat=repeat))
    return out


def matmul_gemms(m: int, n: int, k: int, layer: str, *, input_grad: bool = True,
                 repeat: int = 1) -> list[Gemm]:
    """C = A.B of two activations (attention): backward-data is dA = dC.B^T, backward-weight
    (the second operand's gradient) dB = A^T.dC; row-major operands."""
    def gm(op, mm, nn, kk):
        return Gemm(layer, op, mm, nn, kk, driver.matrix_desc(0, kk, 1), driver.matrix_desc(0, 1, nn),
                    mm * kk, kk * nn, repeat=repeat)
    out = [gm("fwd", m, n, k), gm("bwd_weight", k, n, m)]
    if input_grad:
        out.append(gm("bwd_data", m, k, n))
    return out


# ---------------------------------------------------------------- planning (the driver's split)
def _split(cfg: AcceleratorConfig, gm: Gemm, k_limit: int):
    """The driver's M/N/K ranges for a K limit (mirrors driver.gemm_program)."""
    R, C = cfg.rows, cfg.cols
    maxdim = (1 << cfg.dim_bits) - 1
    (ai, ao), (bi, bo) = driver._periods(gm.a, "k"), driver._periods(gm.b, "k")
    k_ranges = driver._ranges(gm.k, k_limit, int(np.lcm(ai, bi)), int(np.lcm(ao, bo)), "K", gm.layer)
    kc = max(size for _, size in k_ranges)
    m_lim = min(R * (cfg.spad_a_words // kc), maxdim)
    n_lim = min(C * (cfg.spad_b_words // kc), maxdim)
    if len(k_ranges) > 1:
        n_tiles = -(-min(gm.n, n_lim) // C)
        m_lim = min(m_lim, R * max(1, cfg.acc_words // R // max(1, n_tiles)))
        while -(-min(gm.m, m_lim) // R) * -(-min(gm.n, n_lim) // C) * R > cfg.acc_words and n_lim > C:
            n_lim //= 2
    m_ranges = driver._ranges(gm.m, m_lim, *driver._periods(gm.a, "lane"), "M", gm.layer)
    n_ranges = driver._ranges(gm.n, n_lim, *driver._periods(gm.b, "lane"), "N", gm.layer)
    return m_ranges, n_ranges, k_ranges


def _probe(m, n, k, first, last) -> dict:
    return {"opcode": isa.OP_GEMM, "m": m, "n": n, "k": k, "accumulate": int(not first),
            "store": int(last), "acc_addr": 0, "out_raw": 1, "d_addr": 0, "d_si": 0, "d_sj": 0}


@dataclass
class Plan:
    m_sizes: Counter
    n_sizes: Counter
    k_sizes: list
    fallback: bool

    @property
    def instructions(self) -> int:
        return sum(self.m_sizes.values()) * sum(self.n_sizes.values()) * len(self.k_sizes)

    def shapes(self) -> Counter:
        """Multiset of instruction shapes (m, n, k, accumulate, store)."""
        out = Counter()
        last = len(self.k_sizes) - 1
        for mc, cm in self.m_sizes.items():
            for nc, cn in self.n_sizes.items():
                for i, kc in enumerate(self.k_sizes):
                    out[(mc, nc, kc, int(i > 0), int(i == last))] += cm * cn
        return out


def plan(cfg: AcceleratorConfig, gm: Gemm) -> Plan:
    limit = min(cfg.max_k, (1 << cfg.dim_bits) - 1)
    errs = []
    while limit >= 1:
        try:
            m_r, n_r, k_r = _split(cfg, gm, limit)
            p = Plan(Counter(s for _, s in m_r), Counter(s for _, s in n_r), [s for _, s in k_r], bool(errs))
            for (mc, nc, kc, acc, st) in p.shapes():
                code = golden.check(cfg, _probe(mc, nc, kc, not acc, st))
                if code:
                    raise DriverError(f"{isa.ERROR_NAMES[code]} for a {mc}x{nc}x{kc} instruction "
                                      f"(K limit {limit}, acc_words={cfg.acc_words})")
            return p
        except DriverError as e:
            errs.append(str(e))
            limit //= 2
    tried = "; ".join(dict.fromkeys(errs))
    raise PlanError(f"layer {gm.layer} ({gm.op}, M={gm.m} N={gm.n} K={gm.k}) does not fit preset "
                    f"{cfg.name!r} with any K split: {tried}")


@lru_cache(maxsize=None)
def instruction_cycles(cfg: AcceleratorConfig, m: int, n: int, k: int, first: bool, last: bool) -> int:
    return cyclemodel.instruction_cycles(cfg, _probe(m, n, k, first, last))


def gemm_cost(cfg: AcceleratorConfig, gm: Gemm) -> dict:
    """Counters (``COUNTER_KEYS``) of the whole GEMM (times ``repeat``), plus
    ``instructions``, ``ideal_cycles`` and ``fallback``."""
    p = plan(cfg, gm)
    R, C = cfg.rows, cfg.cols
    last = len(p.k_sizes) - 1
    cyc = 0
    for mc, cm in p.m_sizes.items():
        for nc, cn in p.n_sizes.items():
            per = sum(instruction_cycles(cfg, mc, nc, kc, i == 0, i == last) for i, kc in enumerate(p.k_sizes))
            cyc += cm * cn * per
    nm_r, nn_r, nk_r = sum(p.m_sizes.values()), sum(p.n_sizes.values()), len(p.k_sizes)
    tm = sum(-(-mc // R) * c for mc, c in p.m_sizes.items())
    tn = sum(-(-nc // C) * c for nc, c in p.n_sizes.items())
    K = gm.k
    out = {
        "busy_cycles": cyc,
        "compute_cycles": tm * tn * K,
        "macs": gm.m * gm.n * K,
        "rd_bytes": cfg.op_bytes * (gm.valid_a * nn_r + gm.valid_b * nm_r),
        "wr_bytes": gm.m * gm.n * (cfg.acc_bytes if gm.out_raw else cfg.op_bytes),
        "mask_bits": gm.m * gm.n if gm.mask else 0,
        "spad_reads": 2 * tm * tn * K,
        "spad_writes": (tm * nn_r + tn * nm_r) * K,
        "acc_reads": (nk_r - 1) * tm * tn * R,
        "acc_writes": (nk_r - 1) * tm * tn * R,
        "retired": p.instructions,
    }
    out = {k: v * gm.repeat for k, v in out.items()}
    out["instructions"] = out["retired"]
    out["ideal_cycles"] = cyclemodel.ideal_cycles(cfg, gm.m, gm.n, K) * gm.repeat
    out["fallback"] = p.fallback
    return out


def layer_gemms(layer, batch: int, *, first: bool = False, last: bool = False,
                input_grad: bool = False) -> list[Gemm]:
    """The training GEMMs of a ``cosim.networks.Layer`` at a batch size.

    Convolutions use the driver's conv mapping; a grouped convolution (depthwise:
    groups = channels) is ``groups`` independent convolutions of cin/groups ->
    cout/groups channels (a depthwise one has M = 1: one array row of R busy).  A linear
    layer is a 1x1 convolution over batch x tokens; attention matmuls are ``count`` x
    batch plain GEMMs.  The first layer has no backward-data unless ``input_grad``."""
    bwd_data = input_grad or not first
    if layer.kind == "conv":
        g = ConvGeom(batch, layer.cin // layer.groups, layer.h, layer.w, layer.cout // layer.groups,
                     layer.k, layer.k, layer.stride, layer.pad)
        return conv_gemms(g, layer.name, relu=layer.relu, out_raw=last, input_grad=bwd_data,
                          repeat=layer.groups)
    if layer.kind == "linear":
        g = ConvGeom(batch * layer.h, layer.cin, 1, 1, layer.cout, 1, 1, 1, 0)
        return conv_gemms(g, layer.name, relu=layer.relu, out_raw=last, input_grad=bwd_data)
    return matmul_gemms(layer.h, layer.cout, layer.cin, layer.name, input_grad=bwd_data,
                        repeat=layer.count * batch)
