"""Training methods of the co-simulation (cosim.train): one step function each,
in a registry so that a method whose hardware lands later plugs in
(:func:`register_method`).  A method gets the Trainer and returns one record per
step; ``state``/``load_state`` make it resumable, ``extra`` adds its figures."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from model_sw import adagp_reorg as reorg
from model_sw.adagp import cosine
from model_sw.adagp_phases import PhaseConfig, PhaseController
from model_sw.adagp_predictor import PredictorBank, PredictorConfig
from model_sw.autoassist_assistant import (Assistant, LossEMA, LossFeatures, quantize_assistant,
                                          quantize_features)
from .predictor_array_model import assistant_filter_hw
from model_sw import numerics as nx
from .train_engine import LAYERS, StepPass, TrainError, check_errors, losses_and_margins, rel_err
from .train_hw import gp_capture
from .reports import op_row

if TYPE_CHECKING:
    from .train import Trainer


class BP:
    """Back-propagation: forward, backward-data, backward-weight all on the engine."""
    name = "bp"

    def __init__(self, t: Trainer):
        self.t = t

    def state(self) -> dict:
        return {}

    def load_state(self, st: dict):
        pass

    sparse = False   # the backward pass in the sparse engine modes (Sparse below)

    def bp_step(self, step: int, idx: torch.Tensor, phase: str = "bp") -> tuple[dict, StepPass]:
        t = self.t
        p = t.new_pass(idx, sparse=self.sparse)
        rows = t.forward(p, step) + t.backward(p, step)      # the backward ends with the weight updates
        errs = p.check_tolerance(step, backward=True)
        loss = float(F.cross_entropy(p.logits(), p.y))
        t.set_masters(p.updated_masters())
        ref = t.bp_cycles(t.rc.batch)
        return dict(step=step, phase=phase, batch=len(idx), loss=loss, ops=rows, errors_vs_fp32=errs,
                    bp_cycles=sum(ref.values()), skipped_cycles=0), p

    def step(self, step: int, idx: torch.Tensor) -> dict:
        return self.bp_step(step, idx)[0]

    def extra(self) -> dict:
        return {}


class Sparse(BP):
    """BP whose backward pass uses the ReLU masks: backward-data computes only the
    output columns some row of a tile needs (ocompact) and backward-weight skips
    all-zero gradient words (compact_a); cycles depend on the masks, so the cycle
    model is evaluated on the memory image of each operation."""
    name = "sparse"
    sparse = True


class AdaGP(BP):
    """ADA-GP with model_sw's schedule and its quantized predictor.

    BP steps: as BP (weight updates on the update unit), plus one predictor training
    step on (engine output activations, engine weight gradients).  The predictor
    learns in software (model_sw, quantized); its training GEMMs on the main engine
    (our choice, docs/predictor.md) are charged from the cycle model as ``pred_train``
    rows, marked not simulated.
    GP steps: one Accelerator run: the forward on the engine, the reorganization unit
    on its outputs, the predictor array predicting each layer's weight gradient from
    the predictor's integer weights, and the update unit applying it to the 16-bit
    master weights (``g_shift = fm + lr_log2 + s - frac_out``, ``2**s`` the layer's
    gradient scale, a running RMS rounded to a power of two).  Checked bit-exact
    (outputs, masters, operand copies) and against the predictor side's cycle model.
    The backward's cycles (cycle model) are counted as skipped."""
    name = "adagp"

    def __init__(self, t: Trainer):
        super().__init__(t)
        m = t.model
        self.layer_mods = {"conv1": m.conv1, "conv2": m.conv2, "fc": m.fc}
        fan_ins = {n: reorg.fan_in(l) for n, l in self.layer_mods.items()}
        self.bank = PredictorBank(fan_ins, "shared", PredictorConfig(), quant=True, seed=t.rc.seed)
        self.bank.set_out_channels({n: int(l.weight.shape[0]) for n, l in self.layer_mods.items()})
        self.ctrl = PhaseController(PhaseConfig(schedule="adaptive", warmup=t.rc.warmup))
        self.scale = {n: None for n in LAYERS}
        self.predictor_macs = 0
        self._train_rows = None

    def state(self) -> dict:
        return {"bank": self.bank, "ctrl": self.ctrl, "scale": self.scale, "predictor_macs": self.predictor_macs}

    def load_state(self, st: dict):
        self.bank, self.ctrl, self.scale = st["bank"], st["ctrl"], st["scale"]
        self.predictor_macs = st["predictor_macs"]

    def _samples(self, name, act):
        return reorg.quantize_samples(reorg.layer_samples(self.layer_mods[name], act, self.bank.cfg.p, name))

    def predictor_train_rows(self) -> list[dict]:
        """Cycle-model rows of the predictor's training GEMMs on the engine (per layer)."""
        if self._train_rows is None:
            from . import cyclemodel
            from .bench_predictor import _predictor_train_programs
            from .driver import MemoryImage
            from .energy import energy
            from .train_engine import golden_counters
            cfg = self.t.cfg
            img = MemoryImage(cfg.replace(mem_addr_bits=max(cfg.mem_addr_bits, 20)))
            rows = []
            for n, mod in self.layer_mods.items():
                prog = _predictor_train_programs(cfg, int(mod.weight.shape[0]), reorg.fan_in(mod), img)
                c = golden_counters(cfg, prog)
                cyc = cyclemodel.program_cycles(cfg, prog)
                # energy from the modelled counters (MACs, external bytes; no scratchpad terms)
                e = None if self.t.engine.sim is None else round(energy(c, cfg)["total_pj"], 1)
                rows.append(op_row(n, "pred_train", cyc, cyc, counters=c, instructions=len(prog),
                                   dram_bytes=c["rd_bytes"] + c["wr_bytes"], energy_pj=e, bit_exact=None))
            self._train_rows = rows
        return [dict(r) for r in self._train_rows]

    def step(self, step: int, idx: torch.Tensor) -> dict:
        t, phase = self.t, self.ctrl.phase
        if phase != "gp":
            rec, p = self.bp_step(step, idx, phase)
            rec["ops"] += self.predictor_train_rows()
            # the weights were updated with the engine's gradients; the predictor learns from them
            grads = p.weight_grads()
            act = p.activations()
            batch = {}
            for n in LAYERS:
                tg, rms = reorg.normalize_targets(grads[n])
                batch[n] = (self._samples(n, act[n]), tg)
                s = self.scale[n]
                self.scale[n] = rms if s is None else 0.8 * s + 0.2 * rms
            preds = self.bank.train_step(batch)
            cos = {n: cosine(preds[n], reorg.grad_targets(grads[n])) for n in LAYERS}
            self.ctrl.record_cos(cos)
            self.predictor_macs += self.bank.train_macs()
            rec["cos"] = cos
            self.ctrl.advance(loss=rec["loss"], cos=cos)
            return rec
        return self.gp_step(step, idx)

    def gp_step(self, step: int, idx: torch.Tensor) -> dict:
        t = self.t
        p = t.new_pass(idx)                 # quantization, scales and the PyTorch fp32 reference
        net = next(iter(self.bank.nets.values()))
        pred = net.int_params()
        scale_log2 = {}
        for n in LAYERS:
            s = self.scale[n]
            if not s or not math.isfinite(s):
                raise TrainError(f"step {step}: layer {n} has no gradient scale for a GP step (scale {s})")
            scale_log2[n] = int(round(math.log2(s)))      # a shift in the update unit
        cap = gp_capture(p, t.masters(), pred, t.lr_log2, scale_log2)
        rows, out = t.engine.run_gp(cap, step)
        f = p.frac
        d = lambda name, fr: nx.dequantize(torch.from_numpy(np.asarray(out[name], dtype=np.int64)), fr)
        logits = d("y_fc", f["logits"]).reshape(-1, p.batch).T
        eng = {"h1": d("y_conv1", f["h1"]).permute(1, 0, 2, 3), "h2": d("y_conv2", f["h2"]).permute(1, 0, 2, 3),
               "logits": logits}
        errs = {k: rel_err(v, p.ref[k]) for k, v in eng.items()}
        # the array's prediction (golden = RTL, bit-exact) against model_sw's predictor in PyTorch
        act = {"conv1": eng["h1"], "conv2": eng["h2"], "fc": logits}
        with torch.no_grad():
            for n in LAYERS:
                ref = self.bank.predict(n, self._samples(n, act[n]))
                got = nx.dequantize(torch.from_numpy(np.asarray(out["pred"][n], dtype=np.int64)),
                                    pred["frac_out"]).reshape(ref.shape)
                errs["pred_" + n] = rel_err(got, ref)
        check_errors(step, errs)
        self.predictor_macs += self.bank.forward_macs()
        loss = float(F.cross_entropy(logits, p.y))
        t.set_masters({n: (np.asarray(out["w16_" + n], dtype=np.int64), cap.layers[i].w_master_frac)
                       for i, n in enumerate(LAYERS)})
        self.ctrl.advance(loss=loss)
        ref = t.bp_cycles(t.rc.batch)
        return dict(step=step, phase="gp", batch=len(idx), loss=loss, ops=rows, errors_vs_fp32=errs,
                    bp_cycles=sum(ref.values()), skipped_cycles=ref["bwd"] + ref["update"])

    def extra(self) -> dict:
        post = [r for r in self.t.records if r["phase"] != "warmup"]
        return {"gp_steps": sum(r["phase"] == "gp" for r in self.t.records),
                "gp_fraction_post_warmup": (sum(r["phase"] == "gp" for r in post) / len(post)) if post else 0.0,
                "predictor": "inference and weight update on the Accelerator (reorganization unit, predictor "
                             "array, update unit; golden model on the golden backend); training in software "
                             "(model_sw quantized predictor), its engine GEMMs charged from the cycle model",
                "predictor_macs_software": self.predictor_macs}


class AutoAssist(BP):
    """AutoAssist: model_sw's Assistant (loss features, shrink rule) decides, per
    candidate batch of ``--batch`` instances, which instances the engine trains on;
    the engine runs forward and backward on the kept ones only.  Cycles saved =
    the full batch's BP cycles (cycle model) - the cycles spent.  The Assistant
    is trained in software (synchronously, so runs are reproducible); its keep
    decisions come from the predictor array's Assistant mode (int8 features and
    weights, int32 logits: cosim.predictor_array_model.assistant_filter_hw, whose
    golden the RTL matches bit for bit), and the array's cycles are counted."""
    name = "autoassist"

    def __init__(self, t: Trainer):
        super().__init__(t)
        self.features = LossFeatures(t.data.x_train.shape[0])
        self.assistant = Assistant(self.features.n, 10)
        self.ema = LossEMA(0.75)
        self.rng = np.random.default_rng(t.rc.seed + 7919)
        self.assistant_macs = self.shrunk = self.forced = self.array_cycles = 0

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("features", "assistant", "ema", "rng", "assistant_macs",
                                              "shrunk", "forced", "array_cycles")}

    def load_state(self, st: dict):
        for k, v in st.items():
            setattr(self, k, v)

    def step(self, step: int, idx: torch.Tensor) -> dict:
        t = self.t
        y = t.data.y_train[idx].numpy()
        f = self.features(idx.numpy())
        # the decision runs on the predictor array's Assistant mode: int8 features and
        # weights, exact int32 logits (golden = the RTL bit for bit, tests/test_assistant_hw.py)
        _, fx = quantize_features(f)
        hw = assistant_filter_hw(t.cfg, f, y, quantize_assistant(self.assistant, fx),
                                 self.rng.random(len(idx)), t.rc.base_prob, backend="golden",
                                 engine_cycles=False)
        keep, prob = hw["keep"], hw["p"]
        if not keep.any():                     # an empty batch still makes progress
            keep[int(np.argmax(prob))] = True
            self.forced += 1
        self.shrunk += int((~keep).sum())
        self.assistant_macs += len(idx) * self.assistant.decide_macs()
        self.array_cycles += hw["array_cycles"]["busy_cycles"]
        kept = idx[torch.from_numpy(keep)]
        rec, p = self.bp_step(step, kept)
        per, margin = losses_and_margins(p.logits(), p.y)
        labels = self.ema.update(per.numpy())
        self.assistant.train_step(f[keep], y[keep], labels)
        self.assistant_macs += int(keep.sum()) * self.assistant.train_macs()
        self.features.update(kept.numpy(), per.numpy(), margin.numpy())
        rec["candidates"] = len(idx)
        return rec

    def extra(self) -> dict:
        cfg = self.t.cfg
        n = sum(r.get("candidates", 0) for r in self.t.records)
        return {"candidates": n, "shrunk": self.shrunk, "forced_keep": self.forced,
                "keep_rate": (1 - self.shrunk / n) if n else 1.0,
                "assistant": "model_sw Assistant (loss features) trained in software; its decisions "
                             "from the predictor array's integer Assistant (golden, bit-exact with the RTL)",
                "assistant_array_cycles": self.array_cycles,
                "assistant_macs": self.assistant_macs,
                "assistant_cycles_estimate": -(-self.assistant_macs // (cfg.rows * cfg.cols))}


METHODS: dict[str, type] = {"bp": BP, "adagp": AdaGP, "sparse": Sparse, "autoassist": AutoAssist}
UNAVAILABLE: dict[str, str] = {}   # a method whose hardware has not landed: name -> why
ALL_ORDER = ("bp", "adagp", "sparse", "autoassist")


def register_method(name: str, cls: type):
    """Make a method available (a branch whose hardware landed calls this)."""
    METHODS[name] = cls
    UNAVAILABLE.pop(name, None)
