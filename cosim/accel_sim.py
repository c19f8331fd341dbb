"""The Accelerator top (rtl/accelerator.py) on Verilator/Icarus, and ADA-GP GP steps on it.

:class:`AccelSim` is :class:`cosim.rtlsim.RtlSim` with the Accelerator's Verilog and
``tb/accel_harness.sv`` (the same server, tb/server.py, drives it).  :func:`gp_program`
lays out a captured model_sw step (cosim.bench_predictor.capture_digits) in external
memory and builds the instruction, reorganization-descriptor and update-descriptor
streams of ``steps`` GP steps; :func:`gp_golden` computes everything the run must
produce from model_sw's integer functions alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model_sw import numerics
from model_sw.adagp_predictor import predictor_forward_int
from model_sw.adagp_reorg import reorg_samples_int
from predictor_hw.predictor_array import pack_predictor_weights, weight_layout
from predictor_hw.reorg import desc_layout, pack_desc, reorg_descriptor
from predictor_hw.update import update_desc_layout, update_descriptor
from rtl import accelerator as acc
from rtl.config import AcceleratorConfig
from rtl.generate import accelerator_verilog
from rtl.engine import COUNTERS, counters_layout
from . import driver
from .driver import ConvGeom, MemoryImage
from .rtlsim import ROOT, RtlSim, SimError, _hex

DMAX, WMAX = 256, 8192


class AccelError(ValueError):
    """A step the Accelerator cannot run as asked, or a run that ended in an error status."""


def _pack(layout, d: dict) -> int:
    return layout.const(d).as_bits()


class AccelSim(RtlSim):
    harness = ROOT / "tb" / "accel_harness.sv"
    toplevel = "accel_harness"
    counter_names = COUNTERS + acc.PRED_COUNTERS

    def design_verilog(self, cfg: AcceleratorConfig) -> str:
        self.iw = acc.accel_instr_width(cfg)
        return accelerator_verilog(cfg, self.platform)

    def harness_params(self, cfg: AcceleratorConfig) -> dict:
        ecw = counters_layout(cfg).size
        return dict(R=cfg.rows, C=cfg.cols, AW=cfg.mem_addr_bits, SLOT=cfg.slot_bits, IW=self.iw,
                    CW=ecw + acc.pred_counters_layout().size, ECW=ecw, LAT=cfg.dram_latency, PMAX=4096,
                    L=cfg.pred_cols, RDW=desc_layout(cfg).size, UDW=update_desc_layout(cfg).size,
                    PWW=weight_layout(cfg).size, DMAX=DMAX, WMAX=WMAX)

    def load_streams(self, rdescs: list[int], udescs: list[int], pweights: list[int], shift1: int, shift2: int):
        """Write the descriptor and weight ROM files (read on the next load_program)."""
        cfg = self.cfg
        for name, words, width, depth in (("rdesc", rdescs, desc_layout(cfg).size, DMAX),
                                          ("udesc", udescs, update_desc_layout(cfg).size, DMAX),
                                          ("pw", pweights, weight_layout(cfg).size, WMAX)):
            if len(words) > depth - 1:
                raise AccelError(f"{len(words)} {name} words exceed the harness ROM ({depth - 1})")
            full = [w | (1 << width) for w in words] + [0] * (depth - len(words))
            (self.work / f"{name}.hex").write_text("\n".join(_hex(w, width + 1) for w in full) + "\n")
        (self.work / "acfg.hex").write_text(_hex(shift1 | (shift2 << 8), 16) + "\n")


# ----------------------------------------------------------------------------------
# GP steps of a captured model
# ----------------------------------------------------------------------------------
@dataclass
class GpRun:
    cfg: AcceleratorConfig
    img: MemoryImage
    prog: list                  # accelerator instruction words
    rdescs: list
    udescs: list
    pweights: list
    shift1: int
    shift2: int
    layers: list                # per layer: dict(name, geom, kind, y, w16, w8, mask, ...)
    steps: int
    fwd_instr: list = field(default_factory=list)   # engine instruction dicts (for the cycle model)


def _geom(L, batch: int, prev: ConvGeom | None) -> ConvGeom:
    shape = L.input_shape
    mod = L.module
    if L.kind == "conv":
        _, cin, h, w = shape
        return ConvGeom(batch, cin, h, w, mod.out_channels, *mod.kernel_size, mod.stride[0], mod.padding[0])
    if prev is not None and prev.ho * prev.wo > 1:
        # a linear layer after a conv: a conv whose kernel covers the [C, B, H, W] map
        return ConvGeom(batch, prev.cout, prev.ho, prev.wo, mod.out_features, prev.ho, prev.wo, 1, 0)
    return ConvGeom(batch, int(np.prod(shape[1:])), 1, 1, mod.out_features, 1, 1, 1, 0)


def gp_program(cfg: AcceleratorConfig, cap, steps: int = 1, g_shift_override: int | None = None) -> GpRun:
    """``steps`` GP steps on the same batch (the weights change between them)."""
    img = MemoryImage(cfg)
    batch = cap.batch
    x0 = cap.layers[0].x_int
    img.put("x", np.ascontiguousarray(x0.transpose(1, 0, 2, 3)) if x0.ndim == 4 else x0.T.copy())
    pp = cap.pred
    layers = []
    g = None
    for i, L in enumerate(cap.layers):
        g = _geom(L, batch, g)
        img.put("w8_" + L.name, L.w_int.reshape(L.w_int.shape[0], -1))
        img.put("w16_" + L.name, L.w_master.reshape(L.w_master.shape[0], -1))
        y = img.alloc("y_" + L.name, (g.cout, batch, g.ho, g.wo))
        mk = img.alloc("mask_" + L.name, (g.cout, batch, g.ho, g.wo)) if L.relu else None
        layers.append(dict(name=L.name, geom=g, kind=L.kind, relu=L.relu, y=y, mask=mk, cap=L))
    nl = len(layers)
    prog, rdescs, udescs, fwd = [], [], [], []
    d8s = {}
    for s in range(steps):
        src, f_src = "x", cap.layers[0].x_frac
        for i, Ld in enumerate(layers):
            L, g = Ld["cap"], Ld["geom"]
            shift = f_src + L.w_frac - L.y_frac
            if shift < 0:
                raise AccelError(f"{L.name}: output frac {L.y_frac} finer than the product's "
                                 f"{f_src + L.w_frac}: the engine only shifts right")
            a, b = driver.conv_fwd_descs(g, img.tensors[src].base, img.tensors["w8_" + L.name].base)
            n = g.batch * g.ho * g.wo
            mk = Ld["mask"]
            ins = driver.gemm_program(cfg, g.cout, n, g.cin * g.kh * g.kw, a, b, d_addr=Ld["y"].base, d_si=n,
                                      shift=shift, relu=L.relu,
                                      mask_addr=mk.base if mk is not None else None,
                                      mask_si=n if mk is not None else None, layer=L.name)
            lid = (s * nl + i) % 255 + 1
            wait_upd = (s - 1) * nl + i + 1 if s > 0 else 0
            for j, one in enumerate(ins):
                prog.append(acc.encode(cfg, one, wait_arm=int(j == 0), arm_id=lid if j == 0 else 0,
                                       wait_upd=wait_upd if j == 0 else 0))
            fwd.append(ins)
            rd = reorg_descriptor(cfg, kind=L.kind, base=Ld["y"].base, batch=batch, c_out=g.cout,
                                  h=g.ho if L.kind == "conv" else 1, w=g.wo if L.kind == "conv" else 1,
                                  y_frac=L.y_frac, k=L.fan_in, layer_id=lid, name=L.name)
            rdescs.append(pack_desc(cfg, rd))
            if L.gp_scale_log2 is None and g_shift_override is None:
                raise AccelError(f"{L.name}: no GP scale yet (capture after at least one BP step)")
            gsh = (g_shift_override if g_shift_override is not None else
                   L.w_master_frac + cap.lr_log2 + L.gp_scale_log2 - pp["frac_out"])
            d8 = L.w_master_frac - L.w_frac
            d8s[L.name] = d8
            ud = update_descriptor(cfg, w_base=img.tensors["w16_" + L.name].base, c_out=g.cout, k=L.fan_in,
                                   g_shift=gsh, w_bits=16, w8_base=img.tensors["w8_" + L.name].base, d8=d8,
                                   name=L.name)
            Ld["g_shift"] = gsh
            udescs.append(_pack(update_desc_layout(cfg), ud))
            src, f_src = "y_" + L.name, L.y_frac
    pw = [_pack(weight_layout(cfg), w) for w in pack_predictor_weights(cfg, pp["w1"], pp["w2"])]
    return GpRun(cfg, img, prog, rdescs, udescs, pw, pp["shift1"], pp["shift2"], layers, steps, fwd)


def gp_golden(run: GpRun, cap) -> dict:
    """Per step and layer: engine output, samples, predicted gradient, updated weights."""
    cfg = run.cfg
    pp = cap.pred
    w16 = {L.name: L.w_master.reshape(L.w_master.shape[0], -1).astype(np.int64) for L in cap.layers}
    w8 = {L.name: L.w_int.reshape(L.w_int.shape[0], -1).astype(np.int64) for L in cap.layers}
    out = []
    for s in range(run.steps):
        x = cap.layers[0].x_int.astype(np.int64)
        f_src = cap.layers[0].x_frac
        per = {}
        for Ld in run.layers:
            L, g = Ld["cap"], Ld["geom"]
            w = w8[L.name].reshape(L.w_int.shape)
            if x.ndim == 4 and g.kh * g.kw > 1 and x.shape[1] != g.cin:
                raise AccelError(f"{L.name}: input {x.shape} does not match {g}")
            y = _conv_int(x, w, g, f_src + L.w_frac - L.y_frac, L.kind)
            y_st = np.maximum(y, 0) if L.relu else y
            q, _ = reorg_samples_int(y_st, L.y_frac, L.kind, cfg.pred_p, L.name)
            pred = predictor_forward_int(q, pp["w1"], pp["w2"], pp["shift1"], pp["shift2"], cfg.pred_pool, L.fan_in)
            gpred = pred[:, :L.fan_in]
            w16[L.name] = numerics.sgd_update_int(w16[L.name], gpred, Ld["g_shift"], 16)
            w8[L.name] = numerics.shift_round_saturate(w16[L.name], -(L.w_master_frac - L.w_frac), 8)
            per[L.name] = dict(y=y_st, samples=q, pred=gpred, w16=w16[L.name].copy(), w8=w8[L.name].copy())
            x, f_src = y_st, L.y_frac
        out.append(per)
    return dict(steps=out)


def _conv_int(x, w, g: ConvGeom, shift: int, kind: str):
    """The engine's forward in integers (torch conv in float64 is exact at these sizes)."""
    import torch
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    if xt.dim() == 2:
        xt = xt.reshape(xt.shape[0], -1, 1, 1)
    wt = torch.from_numpy(np.asarray(w, dtype=np.float64).reshape(g.cout, g.cin, g.kh, g.kw))
    accv = torch.nn.functional.conv2d(xt, wt, stride=g.stride, padding=g.pad).numpy().astype(np.int64)
    y, _ = numerics.requantize(accv, shift, 8)
    if kind == "linear":
        y = y.reshape(y.shape[0], -1)
    return y


def run_gp(sim: AccelSim, run: GpRun, watchdog: int = 5_000_000, stall_prob: int = 0) -> dict:
    """Load and execute; returns dict(rep, mem) and raises AccelError on an error status."""
    sim.load_mem(run.img.mem)
    sim.load_streams(run.rdescs, run.udescs, run.pweights, run.shift1, run.shift2)
    sim.load_program(run.prog)
    rep = sim.run(len(run.prog), watchdog, stall_prob=stall_prob)
    if rep["error"]:
        f = acc.error_fields(rep["error"])
        raise AccelError(f"accelerator error status {rep['error']:#x}: {f}")
    return rep
