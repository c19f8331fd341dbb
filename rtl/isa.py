"""The engine's instruction set: one declarative description that gives both the
Amaranth ``lib.data`` layout of an instruction word and the Python packer that
the driver uses, so the two can never disagree.

An instruction is one wide word (fields LSB first, in the order listed here).

GEMM  D[M,N] = epilogue( (accumulate ? ACC : 0) + A[M,K] . B[K,N] )

Operands are *gathered*: element (lane l, step k) of an operand lives at

    addr = base + cb + (sp >> dil)        with (cb, sp, y, x) = init + lane_ctr(l) + k_ctr(k)

where each counter is a 3-digit mixed-radix counter (digit 0 innermost) whose
digits add a step vector (cb, sp, y, x) as they count.  With ``geo`` set, an
element is real only if 0 <= y < h_lim, 0 <= x < w_lim and y, x are multiples of
2**dil; otherwise it reads as zero (padding, or the holes of a dilated tensor).
One such descriptor expresses a plain or transposed matrix (1 digit), an im2col
view of a conv input (forward and backward-weight), and the dilated, flipped view
of the output gradient that backward-data convolution reads.  No multiplier is
needed: the counters only add.
"""
from __future__ import annotations

from amaranth import unsigned, signed
from amaranth.lib import data

from .config import AcceleratorConfig, ConfigError

DIGITS = 3

OP_NOP = 0
OP_GEMM = 1
OPCODES = {"nop": OP_NOP, "gemm": OP_GEMM}

# Error status codes (the engine's `error` output, sticky until the next instruction).
ERR_NONE = 0
ERR_OPCODE = 1
ERR_ZERO_DIM = 2
ERR_SPAD_A = 3          # A panels (ceil(M/R) * K words) do not fit scratchpad A
ERR_SPAD_B = 4          # B panels (ceil(N/C) * K words) do not fit scratchpad B
ERR_ACC = 5             # accumulator rows needed do not fit the accumulator SRAM
ERR_ADDR_WRITE = 6      # an output or mask address falls outside external memory
ERR_ADDR_READ = 7       # a gathered operand address falls outside external memory
ERR_SHIFT = 8           # requantize shift wider than the accumulator
ERR_MASK_ADDR = 9       # an output-mask (omask) address falls outside external memory
ERR_MASK_SHAPE = 10     # omask without store, or ocompact outside its limits (see _spec)
ERROR_NAMES = {
    ERR_NONE: "ok", ERR_OPCODE: "unknown opcode", ERR_ZERO_DIM: "zero dimension",
    ERR_SPAD_A: "A operand does not fit scratchpad A", ERR_SPAD_B: "B operand does not fit scratchpad B",
    ERR_ACC: "output tiles do not fit the accumulator SRAM", ERR_ADDR_WRITE: "write address out of range",
    ERR_ADDR_READ: "read address out of range", ERR_SHIFT: "shift out of range",
    ERR_MASK_ADDR: "output mask address out of range",
    ERR_MASK_SHAPE: "output mask does not fit the instruction",
}


class Field:
    """A leaf field: ``width`` bits, signed or not."""

    def __init__(self, width: int, is_signed: bool = False):
        self.width, self.signed = width, is_signed

    def shape(self):
        # a field configured out (width 0) reads as the constant 0
        return signed(self.width) if self.signed and self.width else unsigned(self.width)


# Fields of the engine options (rtl/config.py): without the option they have width 0
# (absent from the instruction word; the engine sees 0) and `encode` refuses them.
SPARSE_FIELDS = ("omask", "om_addr", "om_si", "om_sj", "compact_a", "ocompact")
MASK_FIELDS = ("write_mask", "mask_addr", "mask_si")
CONV_FIELDS = ("geo", "dil", "h_lim", "w_lim")         # per gather descriptor
CONV_VEC = ("sp", "y", "x")                            # step / init vector components


def _spec(cfg: AcceleratorConfig, full: bool = False) -> dict:
    """The instruction's fields for one configuration (widths depend on it).  Without an
    engine option (``cfg.sparse``, ``cfg.conv``, ``cfg.relu_mask``) its fields have width 0:
    absent from the instruction word.  ``full``: every field, as with all options (the
    engine's latched copy, where the absent fields are the constant 0: ``widen``)."""
    aw = cfg.mem_addr_bits
    dw = cfg.dim_bits
    cv = cfg.conv or full    # without it: one digit that never wraps, cb only, no geometry
    vec4 = {"cb": Field(aw + 2, True), "sp": Field(aw + 2 if cv else 0, True),
            "y": Field(dw + 1 if cv else 0, True), "x": Field(dw + 1 if cv else 0, True)}
    # the outermost digit's count is ignored
    digit = {"count": Field(dw if cv else 0), "step": vec4}
    gather = {
        "base": Field(aw),
        "lane": [digit] * (DIGITS if cv else 1),
        "k": [digit] * (DIGITS if cv else 1),
        "init": vec4,
        "geo": Field(1 if cv else 0), "dil": Field(2 if cv else 0),
        "h_lim": Field(dw if cv else 0), "w_lim": Field(dw if cv else 0),
    }
    acc_addr_bits = max(1, (cfg.acc_words - 1).bit_length())
    sp = 1 if cfg.sparse or full else 0        # sparse fields' widths scale by this
    rm = 1 if cfg.relu_mask or full else 0     # and the ReLU-mask write's
    return {
        "opcode": Field(4),
        "m": Field(dw), "n": Field(dw), "k": Field(dw),
        "accumulate": Field(1),   # add the accumulator SRAM's partial sums
        "store": Field(1),        # 1: epilogue + write D; 0: keep int sums in the accumulator SRAM
        "out_raw": Field(1),      # D gets raw accumulator values (no requantization)
        "relu": Field(1),
        "write_mask": Field(rm),  # write the 1-bit ReLU mask (out > 0) beside D
        "shift": Field(6),
        "acc_addr": Field(acc_addr_bits),
        "a": gather, "b": gather,
        "d_addr": Field(aw), "d_si": Field(aw + 2, True), "d_sj": Field(aw + 2, True),
        "mask_addr": Field(rm * aw), "mask_si": Field(rm * (aw + 2), True),
        # --- sparsity (rtl/engine.py, docs/sparsity.md); all zero = dense ---------
        # omask: D[i,j] is forced to 0 where the 1-bit mask slot (bit 0) at
        # om_addr + i*om_si + j*om_sj is 0 (the forward ReLU mask: dL/dx = dL/dy * mask)
        "omask": Field(sp), "om_addr": Field(sp * aw), "om_si": Field(sp * (aw + 2), True),
        "om_sj": Field(sp * (aw + 2), True),
        # compact_a: the A gather keeps only nonzero words (R elements) with their k;
        # the sequencer steps only those, reading B at the same k (zero-word skipping)
        "compact_a": Field(sp),
        # ocompact (needs omask, M <= min(R, C), no accumulate, no write_mask): the B
        # gather walks only the output columns some row needs (their mask vector is
        # read per column), the writer scatters the tiles' columns to their addresses
        # and a zero-write port clears the columns no row needs (output sparsity)
        "ocompact": Field(sp),
    }


def _layout(spec):
    if isinstance(spec, Field):
        return spec.shape()
    if isinstance(spec, list):
        return data.ArrayLayout(_layout(spec[0]), len(spec))
    # fields configured out (width 0) are left out of the layout (no 0-wide Verilog wires)
    return data.StructLayout({k: _layout(v) for k, v in spec.items()
                              if not (isinstance(v, Field) and v.width == 0)})


def instr_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """The instruction word as it is sent (the engine's ``instr`` stream)."""
    return _layout(_spec(cfg))


def engine_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """The engine's latched instruction: every field (``instr_layout`` with the fields
    of the options the configuration leaves out, which ``widen`` sets to 0)."""
    return _layout(_spec(cfg, full=True))


def vec4_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return _layout(_spec(cfg, full=True)["a"]["init"])


def gather_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return _layout(_spec(cfg, full=True)["a"])


def widen(cfg: AcceleratorConfig, dst, src) -> list:
    """Statements loading ``dst`` (an ``engine_layout`` view) from ``src`` (an
    ``instr_layout`` view): the fields the instruction has, the others 0 (so the engine's
    logic for a mode that is not built sees it off and synthesis removes it).  With all
    options (every preset but the lite ones) the layouts are equal: ``dst.eq(src)``."""
    if cfg.sparse and cfg.conv and cfg.relu_mask:
        return [dst.eq(src)]
    stmts = [dst.eq(0)]

    def walk(spec, d, s_):
        if isinstance(spec, Field):
            stmts.append(d.eq(s_))
        elif isinstance(spec, list):
            for i in range(len(spec)):
                walk(spec[i], d[i], s_[i])
        else:
            for k, v in spec.items():
                if not (isinstance(v, Field) and v.width == 0):     # absent: stays 0
                    walk(v, d[k], s_[k])
    walk(_spec(cfg), dst, src)
    return stmts


class EncodeError(ValueError):
    """A field value that does not fit its instruction field."""


def _pack(spec, value, path: str) -> tuple[int, int]:
    """Returns (bits, width) of ``value`` packed by ``spec`` (missing fields are 0)."""
    if isinstance(spec, Field):
        v = 0 if value is None else int(value)
        sg = spec.signed and spec.width > 0
        lo = -(1 << (spec.width - 1)) if sg else 0
        hi = (1 << (spec.width - 1)) - 1 if sg else (1 << spec.width) - 1
        if not lo <= v <= hi:
            raise EncodeError(f"instruction field {path}={v} does not fit {spec.width} "
                              f"{'signed' if spec.signed else 'unsigned'} bits [{lo}, {hi}]")
        return v & ((1 << spec.width) - 1), spec.width
    bits, pos = 0, 0
    if isinstance(spec, list):
        items = [(f"{path}[{i}]", spec[i], (value or [None] * len(spec))[i]) for i in range(len(spec))]
    else:
        value = value or {}
        unknown = set(value) - set(spec)
        if unknown:
            raise EncodeError(f"unknown instruction field(s) {sorted(unknown)} under {path or 'instr'}")
        items = [(f"{path}.{k}" if path else k, s, value.get(k)) for k, s in spec.items()]
    for p, s, v in items:
        b, w = _pack(s, v, p)
        bits |= b << pos
        pos += w
    return bits, pos


class ModeError(ConfigError, EncodeError):
    """An instruction that uses an engine mode the configuration does not build."""


def _nonzero(v) -> bool:
    if isinstance(v, dict):
        return any(_nonzero(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(_nonzero(x) for x in v)
    return v is not None and int(v) != 0


def check_modes(cfg: AcceleratorConfig, fields: dict) -> dict:
    """``fields`` for an engine with the configuration's options: raises ModeError (naming
    the mode and the preset) for a sparse mode without ``cfg.sparse``, the ReLU-mask write
    without ``cfg.relu_mask`` or a convolution descriptor without ``cfg.conv``; returns the
    fields reduced to what the instruction holds (without ``cfg.conv``: base, digit 0's cb
    steps, init.cb)."""
    if not cfg.sparse:
        used = [f for f in SPARSE_FIELDS if _nonzero(fields.get(f))]
        if used:
            raise ModeError(f"preset {cfg.name!r} is built without the sparse modes "
                            f"(sparse=False): instruction sets {', '.join(used)}; use a preset "
                            f"with sparse=True (e.g. 'small')")
        fields = {k: v for k, v in fields.items() if k not in SPARSE_FIELDS}
    if not cfg.relu_mask:
        if _nonzero(fields.get("write_mask")):
            raise ModeError(f"preset {cfg.name!r} is built without the ReLU-mask write "
                            f"(relu_mask=False): instruction sets write_mask; the mask is "
                            f"D > 0 (compute it from the stored output), or use a preset with "
                            f"relu_mask=True (e.g. 'small')")
        fields = {k: v for k, v in fields.items() if k not in MASK_FIELDS}
    if cfg.conv:
        return fields
    full = (1 << cfg.dim_bits) - 1           # no instruction has more lanes or steps
    out = dict(fields)
    for side in ("a", "b"):
        d = fields.get(side)
        if not d:
            continue
        why = [f"{side}.{f}" for f in CONV_FIELDS if _nonzero(d.get(f))]
        why += [f"{side}.init.{f}" for f in CONV_VEC if _nonzero((d.get("init") or {}).get(f))]
        red = {k: v for k, v in d.items() if k not in CONV_FIELDS}
        red["init"] = {"cb": (d.get("init") or {}).get("cb", 0)}
        for ctr in ("lane", "k"):
            digits = list(d.get(ctr) or [])
            for i, dg in enumerate(digits):
                dg = dg or {}
                step = dg.get("step") or {}
                why += [f"{side}.{ctr}[{i}].step.{f}" for f in CONV_VEC if _nonzero(step.get(f))]
                if i and _nonzero(step.get("cb")):
                    why.append(f"{side}.{ctr}[{i}].step.cb")
                if i == 0 and len(digits) > 1 and int(dg.get("count", 0) or 0) < full:
                    why.append(f"{side}.{ctr}[0].count={dg.get('count')} (wraps)")
            d0 = (digits[0] or {}) if digits else {}
            red[ctr] = [{"step": {"cb": (d0.get("step") or {}).get("cb", 0)}}]
        if why:
            raise ModeError(f"preset {cfg.name!r} is built without convolution addressing "
                            f"(conv=False: matrices only, one gather digit): instruction sets "
                            f"{', '.join(why)}; use a preset with conv=True (e.g. 'small')")
        out[side] = red
    return out


def encode(cfg: AcceleratorConfig, fields: dict) -> int:
    """Pack a nested dict of field values into the instruction word (an int); a mode the
    configuration does not build raises ModeError (see ``check_modes``)."""
    bits, _ = _pack(_spec(cfg), check_modes(cfg, fields), "")
    return bits


def encode_gather(cfg: AcceleratorConfig, desc: dict) -> int:
    """Pack one operand descriptor (the instruction's ``a`` or ``b`` fields) into a
    ``gather_layout`` word, as an OperandGather's ``desc`` input takes it (unit tests)."""
    return _pack(_spec(cfg, full=True)["a"], desc, "gather")[0]


def instr_width(cfg: AcceleratorConfig) -> int:
    return _pack(_spec(cfg), {}, "")[1]
