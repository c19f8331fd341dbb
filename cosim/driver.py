"""Python driver: lays tensors out in the engine's external memory and turns
GEMMs and convolutions into instruction programs, splitting what does not fit
into instructions that do.  Every instruction is checked here first, so bad input
raises a clear :class:`DriverError` naming the field before anything is sent.

Layouts: matrices are row-major; activations are channel-major ``[C, B, H, W]``
(CNHW) so that a convolution's output ``[Co, B*Ho*Wo]`` is a plain row-major
matrix; weights are PyTorch's ``[Co, Ci, KH, KW]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rtl import isa
from rtl.config import AcceleratorConfig
from rtl.engine import ocompact_ring, panel_info_depth
from . import golden

UNBOUNDED = 0xFFFF      # digit count that never wraps within one instruction


class DriverError(ValueError):
    """An operation the engine cannot run as asked; the message names the field."""


# ----------------------------------------------------------------------------
# memory image
# ----------------------------------------------------------------------------
@dataclass
class Tensor:
    name: str
    base: int
    shape: tuple

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class MemoryImage:
    """External memory as signed slot values, with a bump allocator."""
    cfg: AcceleratorConfig
    top: int = 0
    tensors: dict = field(default_factory=dict)

    def __post_init__(self):
        self.mem = np.zeros(self.cfg.mem_words, dtype=np.int64)

    def alloc(self, name: str, shape) -> Tensor:
        shape = tuple(int(s) for s in shape)
        n = int(np.prod(shape))
        if self.top + n > self.cfg.mem_words:
            raise DriverError(f"tensor {name!r} {shape} does not fit external memory: needs "
                              f"{self.top + n} slots, preset {self.cfg.name!r} has {self.cfg.mem_words}")
        t = Tensor(name, self.top, shape)
        self.top += n
        self.tensors[name] = t
        return t

    def put(self, name: str, values) -> Tensor:
        values = np.asarray(values, dtype=np.int64)
        t = self.tensors.get(name) or self.alloc(name, values.shape)
        if tuple(values.shape) != t.shape:
            raise DriverError(f"tensor {name!r}: shape {values.shape} != allocated {t.shape}")
        self.mem[t.base:t.base + t.size] = values.ravel()
        return t

    def get(self, name: str, mem: np.ndarray | None = None) -> np.ndarray:
        t = self.tensors[name]
        src = self.mem if mem is None else mem
        return src[t.base:t.base + t.size].reshape(t.shape).copy()


# ----------------------------------------------------------------------------
# descriptors
# ----------------------------------------------------------------------------
def digit(count=UNBOUNDED, **step):
    return {"count": count, "step": step}


def matrix_desc(base: int, lane_stride: int, k_stride: int) -> dict:
    """Element (lane, k) at base + lane*lane_stride + k*k_stride."""
    return {"base": base, "lane": [digit(cb=lane_stride), digit(1), digit(1)],
            "k": [digit(cb=k_stride), digit(1), digit(1)], "init": {}}


@dataclass(frozen=True)
class ConvGeom:
    batch: int
    cin: int
    h: int
    w: int
    cout: int
    kh: int
    kw: int
    stride: int = 1
    pad: int = 0

    @property
    def ho(self) -> int:
        return (self.h + 2 * self.pad - self.kh) // self.stride + 1

    @property
    def wo(self) -> int:
        return (self.w + 2 * self.pad - self.kw) // self.stride + 1

    def check(self, cfg: AcceleratorConfig):
        for f in ("batch", "cin", "h", "w", "cout", "kh", "kw", "stride"):
            if getattr(self, f) < 1:
                raise DriverError(f"conv {f}={getattr(self, f)} must be >= 1")
        if self.pad < 0:
            raise DriverError(f"conv pad={self.pad} must be >= 0")
        if self.stride not in (1, 2, 4, 8):
            raise DriverError(f"conv stride={self.stride}: the engine supports strides 1, 2, 4, 8 "
                              "(backward-data reads the output gradient dilated by a shift)")
        if self.ho < 1 or self.wo < 1:
            raise DriverError(f"conv output would be {self.ho}x{self.wo}: kernel larger than padded input")


def im2col_pair(g: ConvGeom, base: int):
    """(pixel digits, tap digits, init, geo) of the im2col view of x[Ci,B,H,W]."""
    pix = [digit(g.wo, sp=g.stride, x=g.stride), digit(g.ho, sp=g.stride * g.w, y=g.stride),
           digit(cb=g.h * g.w)]
    taps = [digit(g.kw, sp=1, x=1), digit(g.kh, sp=g.w, y=1), digit(cb=g.batch * g.h * g.w)]
    init = {"sp": -g.pad * g.w - g.pad, "y": -g.pad, "x": -g.pad}
    geo = {"geo": 1, "h_lim": g.h, "w_lim": g.w, "dil": 0}
    return pix, taps, init, geo


def conv_fwd_descs(g: ConvGeom, x_base: int, w_base: int):
    """A = W [Co, Ci*KH*KW]; B = im2col(x) with lanes over output pixels."""
    pix, taps, init, geo = im2col_pair(g, x_base)
    a = matrix_desc(w_base, g.cin * g.kh * g.kw, 1)
    b = {"base": x_base, "lane": pix, "k": taps, "init": init, **geo}
    return a, b


def conv_bwd_weight_descs(g: ConvGeom, dy_base: int, x_base: int):
    """A = dY [Co, B*Ho*Wo]; B = im2col(x) transposed: lanes over taps, k over pixels."""
    pix, taps, init, geo = im2col_pair(g, x_base)
    a = matrix_desc(dy_base, g.batch * g.ho * g.wo, 1)
    b = {"base": x_base, "lane": taps, "k": pix, "init": init, **geo}
    return a, b


def conv_bwd_data_descs(g: ConvGeom, dy_base: int, w_base: int):
    """dX = conv(dilate(dY), flip(W)^T) with stride 1 and pad KH-1-pad.

    A[ci, (co,kh',kw')] = W[co, ci, KH-1-kh', KW-1-kw'];  B[(co,kh',kw'), (b,ih,iw)] =
    dY[co, b, u/s, v/s] with u = ih - (KH-1-pad) + kh', real only where u, v are
    multiples of the stride s and inside the output: the gather's dilation shift.
    """
    s = g.stride
    kk = g.kh * g.kw
    ph, pw = g.kh - 1 - g.pad, g.kw - 1 - g.pad
    if ph < 0 or pw < 0:
        raise DriverError(f"conv backward-data needs pad <= kernel-1 (pad={g.pad}, kernel {g.kh}x{g.kw})")
    a = {"base": w_base, "lane": [digit(cb=kk), digit(1), digit(1)],
         "k": [digit(g.kw, cb=-1), digit(g.kh, cb=-g.kw), digit(cb=g.cin * kk)],
         "init": {"cb": kk - 1}}
    wo = g.wo
    b = {"base": dy_base,
         "lane": [digit(g.w, sp=1, x=1), digit(g.h, sp=wo, y=1), digit(cb=g.ho * g.wo)],
         "k": [digit(g.kw, sp=1, x=1), digit(g.kh, sp=wo, y=1), digit(cb=g.batch * g.ho * g.wo)],
         "init": {"sp": -ph * wo - pw, "y": -ph, "x": -pw},
         "geo": 1, "h_lim": (g.ho - 1) * s + 1, "w_lim": (g.wo - 1) * s + 1,
         "dil": s.bit_length() - 1}
    return a, b


# ----------------------------------------------------------------------------
# splitting into instructions that fit
# ----------------------------------------------------------------------------
def _periods(desc: dict, side: str) -> tuple[int, int]:
    """(inner, outer): positions between restarts of digit 1 and of digit 2.

    An instruction may start at any position where digit 0 is zero as long as it
    does not cross an outer boundary (its own counter then never wraps digit 1
    early); a chunk made of whole outer periods may start at any outer boundary."""
    d = desc[side]
    c0 = max(int(d[0]["count"]), 1)
    c1 = max(int(d[1]["count"]), 1)
    if c0 >= UNBOUNDED:
        return 1, 1
    return c0, c0 * (1 if c1 >= UNBOUNDED else c1)


def _ranges(total: int, limit: int, inner: int, outer: int, what: str,
            layer: str) -> list[tuple[int, int]]:
    """Split 0..total into (start, size) chunks of at most ``limit``: whole outer
    periods when one fits, else pieces of whole inner periods inside each outer one."""
    if total <= limit:
        return [(0, total)]
    step = (limit // outer) * outer
    if step >= 1:
        return [(s, min(step, total - s)) for s in range(0, total, step)]
    step = (limit // inner) * inner
    if step < 1:
        raise DriverError(f"{layer}: {what} cannot be split to fit: one indivisible group of "
                          f"{inner} exceeds the limit {limit}")
    return [(s, min(step, end - s)) for g in range(0, total, outer)
            for end in [min(g + outer, total)] for s in range(g, end, step)]


def _offset(desc: dict, side: str, pos: int) -> dict:
    """The counter's vector at position ``pos`` (a multiple of its period)."""
    v = golden.counter_vectors([golden._norm_digit(x) for x in desc[side]], pos + 1)
    return {f: int(v[f][pos]) for f in v}


def _shifted(desc: dict, lane0: int, k0: int) -> dict:
    out = dict(desc)
    init = dict(desc.get("init", {}))
    lo, ko = _offset(desc, "lane", lane0), _offset(desc, "k", k0)
    for f in ("cb", "sp", "y", "x"):
        init[f] = init.get(f, 0) + lo[f] + ko[f]
    out["init"] = init
    return out


def gemm_program(cfg: AcceleratorConfig, m: int, n: int, k: int, a: dict, b: dict, *,
                 d_addr: int, d_si: int, d_sj: int = 1, shift: int = 0, relu: bool = False,
                 out_raw: bool = False, mask_addr: int | None = None, mask_si: int | None = None,
                 om_addr: int | None = None, om_si: int = 0, om_sj: int = 1, compact_a: bool = False,
                 ocompact: bool = False, layer: str = "gemm") -> list[dict]:
    """Instructions computing D = epilogue(A.B), split to fit the scratchpads.

    Sparsity (docs/sparsity.md): with ``om_addr`` the engine forces D[i,j] to 0
    where the mask slot at om_addr + i*om_si + j*om_sj has bit 0 clear (the ReLU
    mask of the backward pass); ``compact_a`` skips the K steps whose A word (R
    elements) is all zero; ``ocompact`` (with ``om_addr``) computes only the output
    columns some row needs (instructions of at most min(R, C) rows, K unsplit)."""
    for name, v in (("M", m), ("N", n), ("K", k)):
        if v < 1:
            raise DriverError(f"{layer}: {name}={v} must be >= 1")
    R, C = cfg.rows, cfg.cols
    maxdim = (1 << cfg.dim_bits) - 1
    (ai, ao), (bi, bo) = _periods(a, "k"), _periods(b, "k")
    k_inner, k_outer = int(np.lcm(ai, bi)), int(np.lcm(ao, bo))
    k_ranges = _ranges(k, min(cfg.max_k, maxdim), k_inner, k_outer, "K", layer)
    kc = max(size for _, size in k_ranges)
    split_k = len(k_ranges) > 1
    m_lim = min(R * (cfg.spad_a_words // kc), maxdim)
    n_lim = min(C * (cfg.spad_b_words // kc), maxdim)
    if split_k:   # partial sums of one output chunk live in the accumulator SRAM
        m_lim = min(m_lim, R * max(1, cfg.acc_words // R // max(1, -(-min(n, n_lim) // C))))
        while -(-min(m, m_lim) // R) * -(-min(n, n_lim) // C) * R > cfg.acc_words and n_lim > C:
            n_lim //= 2
    if ocompact:
        if om_addr is None:
            raise DriverError(f"{layer}: ocompact needs the output mask (om_addr)")
        if split_k:
            raise DriverError(f"{layer}: ocompact needs K={k} in one instruction (max {kc})")
        m_lim = min(m_lim, R, C)
        # scratchpad B as a ring: any N in one instruction (else N/C <= the info ring)
        n_lim = maxdim if ocompact_ring(cfg, kc) else min(n_lim, C * panel_info_depth(cfg))
    m_ranges = _ranges(m, m_lim, *_periods(a, "lane"), "M", layer)
    n_ranges = _ranges(n, n_lim, *_periods(b, "lane"), "N", layer)
    prog = []
    for m0, mc in m_ranges:
        for n0, nc in n_ranges:
            for i, (k0, kc) in enumerate(k_ranges):
                first, last = i == 0, i == len(k_ranges) - 1
                ins = {
                    "opcode": isa.OP_GEMM, "m": mc, "n": nc, "k": kc,
                    "accumulate": int(not first), "store": int(last), "acc_addr": 0,
                    "out_raw": int(out_raw), "relu": int(relu), "shift": shift,
                    "a": _shifted(a, m0, k0), "b": _shifted(b, n0, k0),
                    "d_addr": d_addr + m0 * d_si + n0 * d_sj, "d_si": d_si, "d_sj": d_sj,
                }
                if mask_addr is not None:
                    ins.update(write_mask=1, mask_addr=mask_addr + m0 * mask_si + n0 * d_sj,
                               mask_si=mask_si)
                if om_addr is not None:
                    ins.update(omask=1, om_addr=om_addr + m0 * om_si + n0 * om_sj, om_si=om_si, om_sj=om_sj)
                if compact_a:
                    ins["compact_a"] = 1
                if ocompact:
                    ins["ocompact"] = 1
                validate(cfg, ins, layer)
                prog.append(ins)
    return prog


def gemm_program_t(cfg: AcceleratorConfig, m: int, n: int, k: int, a: dict, b: dict, *,
                   d_addr: int, d_si: int, d_sj: int = 1, om_addr: int | None = None,
                   om_si: int = 0, om_sj: int = 1, **kw) -> list[dict]:
    """D = A.B computed as D^T = B^T.A^T: the engine's A side becomes the old B.

    The gathers and the writer are addressed per lane, so this costs no copy; it
    puts the operand whose zero words are to be skipped (compact_a) on the A side."""
    return gemm_program(cfg, n, m, k, b, a, d_addr=d_addr, d_si=d_sj, d_sj=d_si, om_addr=om_addr,
                        om_si=om_sj, om_sj=om_si, **kw)


def validate(cfg: AcceleratorConfig, ins: dict, layer: str = "instruction") -> None:
    """Raise :class:`DriverError` for anything the engine would reject."""
    code = golden.check(cfg, ins)
    if code:
        M, N, K = ins.get("m"), ins.get("n"), ins.get("k")
        detail = {
            isa.ERR_OPCODE: f"opcode={ins.get('opcode')}",
            isa.ERR_ZERO_DIM: f"M={M}, N={N}, K={K}",
            isa.ERR_SPAD_A: f"ceil(M/{cfg.rows})*K = {-(-M // cfg.rows) * K} words > spad_a_words={cfg.spad_a_words}",
            isa.ERR_SPAD_B: f"ceil(N/{cfg.cols})*K = {-(-N // cfg.cols) * K} words > spad_b_words={cfg.spad_b_words}",
            isa.ERR_ACC: f"acc_addr + tiles*R > acc_words={cfg.acc_words}",
            isa.ERR_ADDR_WRITE: f"d_addr={ins.get('d_addr')} / mask_addr={ins.get('mask_addr')} span leaves "
                                f"memory of {cfg.mem_words} slots",
            isa.ERR_SHIFT: f"shift={ins.get('shift')} >= acc_bits={cfg.acc_bits}",
            isa.ERR_MASK_SHAPE: f"omask=1 with store={ins.get('store')}: the output mask applies to "
                                "stored outputs only",
            isa.ERR_MASK_ADDR: f"om_addr={ins.get('om_addr')} (om_si={ins.get('om_si')}, "
                               f"om_sj={ins.get('om_sj')}, M={M}, N={N}) span leaves memory of "
                               f"{cfg.mem_words} slots",
        }[code]
        raise DriverError(f"{layer}: {isa.ERROR_NAMES[code]}: {detail}")
    try:
        isa.encode(cfg, ins)
    except isa.EncodeError as e:
        raise DriverError(f"{layer}: {e}") from None
    for opnd, total in (("a", ins["m"]), ("b", ins["n"])):
        _, _, bad = golden.gather(cfg, ins[opnd], total, ins["k"])
        if bad.any():
            raise DriverError(f"{layer}: operand {opnd.upper()} reads outside external memory "
                              f"({int(bad.sum())} elements)")
