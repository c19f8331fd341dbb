"""The Accelerator side of co-simulated training (cosim.train): what runs on the
predictor side of rtl/accelerator.py besides the engine's GEMMs.

* **BP weight updates.**  The engine writes each layer's weight gradient as int8
  (dW of the mean loss); the weight-update unit reads it from memory (``from_mem``,
  fenced on the engine having retired the gradient's program) and applies
  ``w16 <- sat16(w16 - round(dW * 2**g_shift))`` to the layer's 16-bit master weights
  in external memory (``g_shift = fm + lr_log2 - f_dw``).  Golden:
  ``model_sw.numerics.sgd_update_int``; cycles: ``predictor_model.update_from_mem_cycles``.
* **ADA-GP GP steps.**  Forward on the engine, the reorganization unit tapping its
  outputs, the predictor array predicting every layer's weight gradient and the
  update unit applying it, one Accelerator run (cosim.accel_sim.gp_program) per step.
  Golden: ``accel_sim.gp_golden`` (model_sw's integer functions); counters:
  ``predictor_model.gp_timeline`` (exact).

On the RTL backends one Accelerator simulator (``TimedAccelSim``) runs everything:
the engine-only operations see empty descriptor ROMs, so they behave exactly like the
engine alone (the reorganization tap never back-pressures the engine).
"""
from __future__ import annotations

import numpy as np
import torch

from model_sw import adagp_reorg as reorg
from model_sw import numerics as nx
from predictor_hw.update import UpdateError, update_desc_layout, update_descriptor  # noqa: F401
from . import predictor_model as PM
from .accel_sim import AccelError, gp_golden, gp_program, run_gp
from .bench_predictor import Capture, CapturedLayer
from .reports import op_row

MASTER_BITS = 16
MASTER_HEADROOM = 2     # bits above the weights' current range: one step's update must not saturate
LAYER_NAMES = ("conv1", "conv2", "fc")


def layer_modules(model) -> dict:
    return {"conv1": model.conv1, "conv2": model.conv2, "fc": model.fc}


# ------------------------------------------------------------------------------
# 16-bit master weights (the state the update unit updates)
# ------------------------------------------------------------------------------
def masters_of(model) -> dict:
    """Per layer ``(w16 [C_out, k] int64, frac)``: the model's weights on a 16-bit grid
    whose frac the host picks each step (``choose_frac_bits`` less ``MASTER_HEADROOM``
    bits, so that the step's update can grow the largest weight 4x before the update
    unit saturates; a tensor whose range grows is re-gridded by the host at the next
    step, exactly as its 8-bit operand copy is).  After the first step the model's weights are this grid's values, so the
    conversion is exact unless the frac changes."""
    out = {}
    for n, mod in layer_modules(model).items():
        w = mod.weight.detach()
        f = nx.choose_frac_bits(w, MASTER_BITS) - MASTER_HEADROOM
        out[n] = (nx.quantize(w, f, MASTER_BITS).reshape(w.shape[0], -1).numpy().astype(np.int64), f)
    return out


@torch.no_grad()
def set_masters(model, masters: dict):
    """The model's weights := the updated 16-bit masters (dequantized)."""
    for n, mod in layer_modules(model).items():
        w16, f = masters[n]
        mod.weight.copy_(nx.dequantize(torch.from_numpy(np.asarray(w16)), f).reshape(mod.weight.shape))


def lr_log2(lr: float) -> int:
    e = int(round(np.log2(lr)))
    if 2.0 ** e != lr:
        raise ValueError(f"--lr {lr} is not a power of two: the update unit applies it as a shift")
    return e


# ------------------------------------------------------------------------------
# BP updates
# ------------------------------------------------------------------------------
def bp_update_descriptor(cfg, name: str, w16_base: int, dw_base: int, c_out: int, k: int,
                         fm: int, f_dw: int, lr_l2: int, after: int) -> dict:
    return update_descriptor(cfg, w_base=w16_base, c_out=c_out, k=k, g_shift=fm + lr_l2 - f_dw,
                             w_bits=MASTER_BITS, g_base=dw_base, after=after, name=name)


def apply_update_golden(mem: np.ndarray, ud: dict):
    """The update unit's BP update on a memory image (golden)."""
    n = ud["c_out"] * ud["k"]
    w = mem[ud["w_base"]:ud["w_base"] + n]
    g = mem[ud["g_base"]:ud["g_base"] + n]
    mem[ud["w_base"]:ud["w_base"] + n] = nx.sgd_update_int(w, g, ud["g_shift"], MASTER_BITS)


def pack_updates(cfg, uds: list[dict]) -> list[int]:
    lay = update_desc_layout(cfg)
    return [lay.const(ud).as_bits() for ud in uds]


def update_row(cfg, ud: dict, name: str, cycles: int, model: int, energy_pj) -> dict:
    # int8 gradient read, 16-bit weight read and write
    return op_row(name, "update", cycles, model, dram_bytes=ud["c_out"] * ud["k"] * 5, energy_pj=energy_pj)


def update_energy_pj(cfg, ud: dict):
    from .energy import energy
    elems = ud["c_out"] * ud["k"]
    return round(energy({"rd_bytes": 3 * elems, "wr_bytes": 2 * elems}, cfg)["total_pj"], 1)


# ------------------------------------------------------------------------------
# GP steps
# ------------------------------------------------------------------------------
def gp_capture(p, masters: dict, pred: dict, lr_l2: int, scale_log2: dict) -> Capture:
    """The GP step's inputs in cosim.accel_sim's form, from a StepPass (its quantized
    input, 8-bit weights and calibrated scales) and the trainer's 16-bit masters.
    Only the first layer's input values are needed (later inputs are the engine's own
    outputs); the others give their shape only."""
    m, f, q = p.model, p.frac, p.q
    B = p.batch
    x = q["x"].numpy()
    spec = (("conv1", "conv", m.conv1, x, (), f["x"], "h1", True),
            ("conv2", "conv", m.conv2, None, (B, m.conv1.out_channels, 8, 8), f["h1"], "h2", True),
            ("fc", "linear", m.fc, None, (B, m.conv2.out_channels * 16), f["h2"], "logits", False))
    layers = []
    for name, kind, mod, x_int, x_shape, x_frac, out, relu in spec:
        w16, fm = masters[name]
        layers.append(CapturedLayer(
            name=name, kind=kind, module=mod, x_int=x_int, x_shape=x_shape, x_frac=x_frac,
            w_int=q["w_" + name].numpy().reshape(w16.shape), w_frac=f["w_" + name],
            y_pre=None, y_post=None, y_frac=f[out], relu=relu, fan_in=reorg.fan_in(mod),
            gp_scale_log2=scale_log2[name], w_master=w16, w_master_frac=fm))
    return Capture(layers=layers, pred=pred, lr_log2=lr_l2, batch=B)


def gp_expected(run, cap) -> tuple[dict, dict]:
    """Tensor name -> the values the GP run must leave in memory (the image's layout),
    and layer -> the golden predicted gradient (int, ``frac_out``)."""
    gold = gp_golden(run, cap)["steps"][0]
    want = {}
    for Ld in run.layers:
        n = Ld["name"]
        t = run.img.tensors["y_" + n]
        y = gold[n]["y"]
        want["y_" + n] = (y.transpose(1, 0, 2, 3) if y.ndim == 4 else y.T).reshape(t.shape)
        want["w16_" + n] = gold[n]["w16"]
        want["w8_" + n] = gold[n]["w8"]
    return want, {n: gold[n]["pred"] for n in gold}


def predictor_macs(cfg, c_out: int, fan_in: int) -> int:
    """MACs of the predictor array's forward over one layer's samples (conv 3x3 over
    the p x p sample, then the fc to the fan-in outputs)."""
    return c_out * (cfg.pred_channels * cfg.pred_p ** 2 * 9 + cfg.pred_features * fan_in)


def gp_model_counters(run) -> dict:
    return PM.gp_timeline(run.cfg, PM.specs_from_run(run), run.steps)


def first_difference(want: dict, got: dict):
    """(tensor name, index, expected, got, count) of the first differing tensor, or None."""
    for name, w in want.items():
        g = got[name]
        bad = np.argwhere(np.asarray(w).reshape(g.shape) != g)
        if len(bad):
            i = tuple(int(v) for v in bad[0])
            return name, list(i), int(np.asarray(w).reshape(g.shape)[i]), int(g[i]), len(bad)
    return None


def run_gp_on(sim, run) -> dict:
    """Run a GP step on an AccelSim; the descriptor ROMs are emptied afterwards."""
    try:
        return run_gp(sim, run)
    finally:
        sim.load_streams([], [], [], 0, 0)


__all__ = ["AccelError", "masters_of", "set_masters", "lr_log2", "bp_update_descriptor",
           "apply_update_golden", "pack_updates", "gp_capture", "gp_expected", "gp_program",
           "gp_model_counters", "first_difference", "run_gp_on"]
