"""Golden model of the engine: what one instruction does to external memory and
to the accumulator SRAM, computed directly from the instruction's definition
(multiplications and divisions, not the RTL's incremental counters), in the
arithmetic of ``model_sw.numerics``.

Memory images are numpy int64 arrays of *signed slot values*.
"""
from __future__ import annotations

import numpy as np

from model_sw import numerics
from rtl import isa
from rtl.config import AcceleratorConfig
from rtl.engine import ocompact_ring, panel_info_depth


def wrap(x, bits: int):
    """Two's-complement wrap of integers to ``bits`` bits (what a register does)."""
    x = np.asarray(x, dtype=np.int64)
    if bits >= 64:
        return x
    m = np.int64(1) << np.int64(bits)
    h = np.int64(1) << np.int64(bits - 1)
    return ((x + h) & (m - 1)) - h


def counter_vectors(digits, n: int, init=None) -> dict:
    """Vectors (cb, sp, y, x) of a 3-digit counter at positions 0..n-1.

    Digit d counts modulo max(count_d, 1) (count 0 acts as 1); the outermost digit
    never wraps.  Definition: vec(p) = init + sum_d digit_d(p) * step_d.
    """
    p = np.arange(n, dtype=np.int64)
    c0 = max(int(digits[0]["count"]), 1)
    c1 = max(int(digits[1]["count"]), 1)
    dig = [p % c0, (p // c0) % c1, p // (c0 * c1)]
    out = {}
    for f in ("cb", "sp", "y", "x"):
        v = np.full(n, int((init or {}).get(f, 0)), dtype=np.int64)
        for d in range(3):
            v = v + dig[d] * int(digits[d]["step"].get(f, 0))
        out[f] = v
    return out


def _d(desc, key):
    return desc.get(key, [{"count": 0, "step": {}}] * 3)


def gather(cfg: AcceleratorConfig, desc: dict, lanes_total: int, k: int):
    """Addresses and enables of an operand: arrays of shape (lanes_total, k).

    Returns ``(addr, en, bad)``: ``en`` is where a real element is read, ``bad``
    where a wanted element's address falls outside memory (an error)."""
    lane = counter_vectors([_norm_digit(x) for x in _d(desc, "lane")], lanes_total, desc.get("init"))
    kv = counter_vectors([_norm_digit(x) for x in _d(desc, "k")], k)
    v = {f: lane[f][:, None] + kv[f][None, :] for f in lane}
    dil = int(desc.get("dil", 0))
    addr = int(desc.get("base", 0)) + v["cb"] + (v["sp"] >> dil)
    want = np.ones_like(addr, dtype=bool)
    if desc.get("geo"):
        low = (1 << dil) - 1
        y, x = v["y"], v["x"]
        want = ((y >= 0) & (y < int(desc["h_lim"])) & (x >= 0) & (x < int(desc["w_lim"]))
                & ((y & low) == 0) & ((x & low) == 0))
    in_range = (addr >= 0) & (addr < cfg.mem_words)
    return addr, want & in_range, want & ~in_range


def _norm_digit(d):
    return {"count": d.get("count", 0), "step": d.get("step", {})}


def check(cfg: AcceleratorConfig, ins: dict) -> int:
    """The error code the engine returns at decode (0 if the instruction runs)."""
    op = ins.get("opcode", isa.OP_GEMM)
    if op == isa.OP_NOP:
        return isa.ERR_NONE
    if op != isa.OP_GEMM:
        return isa.ERR_OPCODE
    M, N, K = ins["m"], ins["n"], ins["k"]
    if M == 0 or N == 0 or K == 0:
        return isa.ERR_ZERO_DIM
    nm, nn = -(-M // cfg.rows), -(-N // cfg.cols)
    if nm * K > cfg.spad_a_words:
        return isa.ERR_SPAD_A
    oc = ins.get("ocompact", 0)
    if nn * K > cfg.spad_b_words and not (oc and ocompact_ring(cfg, K)):
        return isa.ERR_SPAD_B
    store = ins.get("store", 1)
    if (ins.get("accumulate", 0) or not store) and ins.get("acc_addr", 0) + nm * nn * cfg.rows > cfg.acc_words:
        return isa.ERR_ACC
    if store:
        spans = [(ins.get("d_addr", 0), ins.get("d_si", 0))]
        if ins.get("write_mask", 0):
            spans.append((ins.get("mask_addr", 0), ins.get("mask_si", 0)))
        sj = ins.get("d_sj", 0)
        for base, si in spans:
            corners = [base + a * (M - 1) * si + b * (N - 1) * sj for a in (0, 1) for b in (0, 1)]
            if min(corners) < 0 or max(corners) >= cfg.mem_words:
                return isa.ERR_ADDR_WRITE
        if not ins.get("out_raw", 0) and ins.get("shift", 0) >= cfg.acc_bits:
            return isa.ERR_SHIFT
    if ins.get("omask", 0) and not store:
        return isa.ERR_MASK_SHAPE
    if ins.get("ocompact", 0) and (not ins.get("omask", 0) or ins.get("accumulate", 0)
                                   or ins.get("write_mask", 0) or M > min(cfg.rows, cfg.cols)
                                   or (not ocompact_ring(cfg, K) and nn > panel_info_depth(cfg))):
        return isa.ERR_MASK_SHAPE
    if ins.get("omask", 0):
        base, si, sj = ins.get("om_addr", 0), ins.get("om_si", 0), ins.get("om_sj", 0)
        corners = [base + a * (M - 1) * si + b * (N - 1) * sj for a in (0, 1) for b in (0, 1)]
        if min(corners) < 0 or max(corners) >= cfg.mem_words:
            return isa.ERR_MASK_ADDR
    return isa.ERR_NONE


def output_mask(cfg: AcceleratorConfig, ins: dict, mem: np.ndarray) -> np.ndarray:
    """The omask bits of an instruction's M x N outputs (bit 0 of each mask slot)."""
    i = np.arange(ins["m"])[:, None]
    j = np.arange(ins["n"])[None, :]
    return (mem[ins.get("om_addr", 0) + i * ins.get("om_si", 0) + j * ins.get("om_sj", 0)] & 1).astype(bool)


def operand_values(cfg, mem, addr, en):
    vals = np.where(en, mem[np.where(en, addr, 0)], 0)
    return wrap(vals, cfg.op_bits)


def execute(cfg: AcceleratorConfig, ins: dict, mem: np.ndarray, acc: np.ndarray) -> int:
    """Apply one instruction to ``mem`` (slots) and ``acc`` (acc_words x C) in place.

    Returns the error code.  Operands beyond M and N are zero, exactly as the
    engine's padded edge tiles, so the accumulator SRAM's contents match too.
    """
    code = check(cfg, ins)
    if code or ins.get("opcode", isa.OP_GEMM) == isa.OP_NOP:
        return code
    R, C = cfg.rows, cfg.cols
    M, N, K = ins["m"], ins["n"], ins["k"]
    nm, nn = -(-M // R), -(-N // C)
    aa, ae, abad = gather(cfg, ins["a"], M, K)
    ba, be, bbad = gather(cfg, ins["b"], N, K)
    A = np.zeros((nm * R, K), dtype=np.int64)
    B = np.zeros((K, nn * C), dtype=np.int64)
    A[:M] = operand_values(cfg, mem, aa, ae)
    B[:, :N] = operand_values(cfg, mem, ba, be).T
    P = A @ B                                           # exact (int64)
    # accumulator SRAM rows: tile (ti, tj) row i at acc_addr + (ti*nn + tj)*R + i
    base = ins.get("acc_addr", 0)
    tiles = P.reshape(nm, R, nn, C).transpose(0, 2, 1, 3).reshape(nm * nn * R, C)
    if ins.get("accumulate", 0):
        tiles = tiles + acc[base:base + nm * nn * R]
    tiles = wrap(tiles, cfg.acc_bits)
    if not ins.get("store", 1):
        acc[base:base + nm * nn * R] = tiles
    else:
        S = tiles.reshape(nm, nn, R, C).transpose(0, 2, 1, 3).reshape(nm * R, nn * C)[:M, :N]
        # the mask is always that of the requantized value, as the epilogue computes it
        req, mask = numerics.requantize(S, ins.get("shift", 0), cfg.op_bits, bool(ins.get("relu", 0)))
        out = S if ins.get("out_raw", 0) else np.asarray(req)
        if ins.get("omask", 0):        # dense result, then masking
            keep = output_mask(cfg, ins, mem)
            out = np.where(keep, out, 0)
            mask = np.asarray(mask) & keep
        i = np.arange(M)[:, None]
        j = np.arange(N)[None, :]
        mem[ins.get("d_addr", 0) + i * ins.get("d_si", 0) + j * ins.get("d_sj", 0)] = wrap(out, cfg.slot_bits)
        if ins.get("write_mask", 0):
            mem[ins.get("mask_addr", 0) + i * ins.get("mask_si", 0) + j * ins.get("d_sj", 0)] = \
                np.asarray(mask).astype(np.int64)
    if abad.any() or bbad.any():
        return isa.ERR_ADDR_READ
    return isa.ERR_NONE
