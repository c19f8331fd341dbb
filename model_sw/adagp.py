"""ADA-GP training loop: BP steps, GP steps, methods, cost accounting.

Pieces (one concern per module):
  adagp_reorg      tensor reorganization (activations -> predictor samples, dW -> targets)
  adagp_predictor  the predictor networks (shared/masked, per-layer; float/quantized)
  adagp_phases     the BP/GP phase controller and the adaptive rule
  adagp_engine     the main model's layer walk and float/engine arithmetic
  adagp            this file: one training run of one method and seed

A BP step: forward with autograd, ``loss.backward()``, true dW per layer; the
predictor predicts each layer's normalized gradient from the reorganized output
activations, post-ReLU for hidden layers (reorg.predictor_input), before it learns
from this step (that prediction gives the logged cosine similarity), then trains
one step on (samples, dW / rms(dW)); the per-layer gradient scale is tracked as an
EMA of rms(dW); the model is updated with dW.

A GP step runs entirely under ``torch.no_grad()``: for each layer in order,
forward -> reorganize its output -> predict -> dW_pred = prediction * scale ->
update that layer -> next layer.  No autograd graph exists, no backward runs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from . import adagp_engine as eng
from . import adagp_reorg as reorg
from .adagp_phases import PhaseConfig, PhaseController
from .adagp_predictor import PredictorBank, PredictorConfig
from .data import Digits
from .models import MODELS, build_model

# method -> (schedule, predictor mode, what a GP step does)
_BASE_METHODS = {
    "bp": ("bp", None, None),
    "adagp": ("adaptive", "shared", "predict"),
    "adagp-fixed": ("fixed", "shared", "predict"),
    "adagp-perlayer": ("adaptive", "per_layer", "predict"),
    "gp": ("always", "shared", "predict"),
    "skip-fixed": ("fixed", None, "skip"),  # control: the fixed schedule with GP steps doing nothing
}
METHODS = tuple(list(_BASE_METHODS) + [m + "-q" for m in _BASE_METHODS])


def parse_method(method: str) -> tuple[str, str | None, str | None, bool]:
    quant = method.endswith("-q")
    base = method[:-2] if quant else method
    if base not in _BASE_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return (*_BASE_METHODS[base], quant)


@dataclass
class TrainConfig:
    model: str = "cnn"
    epochs: int = 30
    batch: int = 32
    lr: float = 0.125            # SGD, power of two (a shift in the engine)
    lr_halve_at: tuple = (0.5, 0.75)  # halve the rate at these fractions of the run (stays a power of two)
    warmup_epochs: float = 2.0   # BP steps before the first GP step, in epochs
    scale_ema: float = 0.8       # EMA factor of the per-layer gradient rms (over BP steps)
    eval_every: int = 0          # steps between test evaluations (0: once per epoch)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    phases: PhaseConfig = field(default_factory=PhaseConfig)
    max_fan_in: int | None = None  # size the shared predictor's fc (None: the largest layer)

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.epochs < 1 or self.batch < 1:
            raise ValueError(f"epochs={self.epochs} and batch={self.batch} must be >= 1")
        if not 0.0 <= self.scale_ema < 1.0:
            raise ValueError(f"scale_ema={self.scale_ema} must be in [0, 1)")


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float((a.flatten() @ b.flatten()) / (na * nb))


@torch.no_grad()
def evaluate(model, x, y, quant: bool) -> float:
    logits = eng.forward(model, x, quant)
    return float((logits.argmax(1) == y).float().mean())


class Trainer:
    """One method, one seed.  ``run()`` returns a result dict (JSON-able)."""

    def __init__(self, data: Digits, method: str, seed: int, cfg: TrainConfig = TrainConfig()):
        self.schedule, self.pmode, self.gp_action, self.quant = parse_method(method)
        eng.check_lr(cfg.lr, self.quant)
        self.method, self.seed, self.cfg, self.data = method, seed, cfg, data
        torch.manual_seed(seed)
        self.model = build_model(cfg.model)
        if self.quant:
            eng.quantize_master(self.model)
        self.layer_list = eng.layers(self.model)
        self.names = [n for n, _ in self.layer_list]
        self.fan_ins = {n: reorg.fan_in(m) for n, m in self.layer_list}
        self.out_ch = {n: int(m.weight.shape[0]) for n, m in self.layer_list}
        self.relu = eng.relu_after(self.layer_list)
        n_train = data.x_train.shape[0]
        self.steps_per_epoch = math.ceil(n_train / cfg.batch)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch)) if self.schedule != "bp" else 0
        self.warmup = warmup
        pc = replace(cfg.phases, schedule=self.schedule, warmup=warmup)
        self.ctrl = PhaseController(pc)
        self.bank = None
        if self.pmode is not None:
            self.bank = PredictorBank(self.fan_ins, self.pmode, cfg.predictor, self.quant,
                                      k_max=cfg.max_fan_in, seed=seed)
            self.bank.set_out_channels(self.out_ch)
        self.scale = {n: None for n in self.names}
        self.lr = cfg.lr
        self.fwd_macs = eng.forward_macs(self.model, (cfg.batch, *data.x_train.shape[1:]))
        self.bwd_macs_step = eng.backward_macs(self.fwd_macs)

    # -- steps ---------------------------------------------------------------
    def _loss(self, logits, y):
        return torch.nn.functional.cross_entropy(logits, y)

    def _samples(self, name, layer, y):
        """Predictor samples of layer ``name`` from its output ``y`` (pre-ReLU, as the
        forward hook sees it): built from the output activation ReLU(y) where a ReLU
        follows (reorg.predictor_input), as the hardware reorganization unit sees it."""
        a = reorg.predictor_input(y, self.relu[name])
        r = reorg.layer_samples(layer, a, self.cfg.predictor.p, name)
        return reorg.quantize_samples(r) if self.quant else reorg.normalize_samples(r)

    def bp_step(self, x, y, step) -> dict:
        outs = {}

        def keep(name, layer, out):
            outs[name] = (layer, out)

        for _, layer in self.layer_list:
            layer.weight.grad = None
        logits = eng.forward(self.model, x, self.quant, step, keep)
        loss = self._loss(logits, y)
        eng.check_finite(loss.detach(), "loss", self.names[-1], step)
        loss.backward()
        info = {"loss": float(loss.detach())}
        cos = {}
        if self.bank is not None:
            batch = {}
            for name, (layer, out) in outs.items():
                g = layer.weight.grad
                eng.check_finite(g, "weight gradient", name, step)
                t, rms = reorg.normalize_targets(g)
                batch[name] = (self._samples(name, layer, out), t)
                s = self.scale[name]
                self.scale[name] = rms if s is None else self.cfg.scale_ema * s + (1 - self.cfg.scale_ema) * rms
            preds = self.bank.train_step(batch)
            for name, (layer, _) in outs.items():
                cos[name] = cosine(preds[name], reorg.grad_targets(layer.weight.grad))
            self.ctrl.record_cos(cos)
            info["cos"] = cos
            info["pred_loss"] = self.bank.last_loss
        for name, layer in self.layer_list:
            g = layer.weight.grad
            eng.check_finite(g, "weight gradient", name, step)
            eng.apply_update(layer.weight, g, self.lr, self.quant)
            layer.weight.grad = None
        return info

    def _gp_scale(self, name) -> float:
        s = self.scale[name]
        if s is None or s == 0.0:
            return 0.0
        if self.quant:  # a shift in the engine: round log2 of the scale
            return 2.0 ** round(math.log2(s))
        return s

    @torch.no_grad()
    def gp_step(self, x, y, step) -> dict:
        if self.gp_action == "skip":
            return {}

        def update(name, layer, out):
            pred = self.bank.predict(name, self._samples(name, layer, out))
            dw = reorg.targets_to_grad(pred, layer.weight.shape) * self._gp_scale(name)
            eng.check_finite(dw, "predicted gradient", name, step)
            eng.apply_update(layer.weight, dw, self.lr, self.quant)

        logits = eng.forward(self.model, x, self.quant, step, update)
        return {"loss": float(self._loss(logits, y))}

    # -- run -----------------------------------------------------------------
    def run(self) -> dict:
        cfg, d = self.cfg, self.data
        gen = torch.Generator().manual_seed(self.seed)
        eval_every = cfg.eval_every or self.steps_per_epoch
        curve = [(0, evaluate(self.model, d.x_test, d.y_test, self.quant))]
        n_gp = n_bp_post = n_bp = 0
        t0 = time.perf_counter()
        step = 0
        for _ in range(cfg.epochs):
            perm = torch.randperm(d.x_train.shape[0], generator=gen)
            for i in range(0, len(perm), cfg.batch):
                idx = perm[i:i + cfg.batch]
                xb, yb = d.x_train[idx], d.y_train[idx]
                phase = self.ctrl.phase
                self.lr = cfg.lr * 0.5 ** sum(step >= f * self.total_steps for f in cfg.lr_halve_at)
                if phase == "gp":
                    info = self.gp_step(xb, yb, step)
                    n_gp += 1
                else:
                    info = self.bp_step(xb, yb, step)
                    n_bp += 1
                    n_bp_post += phase == "bp" and step >= self.warmup
                self.ctrl.advance(**info)
                step += 1
                if step % eval_every == 0 or step == self.total_steps:
                    curve.append((step, evaluate(self.model, d.x_test, d.y_test, self.quant)))
        post = self.total_steps - self.warmup
        gp_fraction = n_gp / post if post > 0 else 0.0
        bwd_bp_run = self.bwd_macs_step * self.total_steps  # the BP baseline's backward MACs
        pred_cost = 0
        if self.bank is not None:
            pred_cost = n_gp * self.bank.forward_macs() + n_bp * self.bank.train_macs()
        saved_abs = n_gp * self.bwd_macs_step - pred_cost
        cos_hist = [(e["step"], e["cos"]) for e in self.ctrl.log if "cos" in e]
        post_cos = [c for s, c in cos_hist if s >= self.warmup]
        mean_cos = ({n: float(np.mean([c[n] for c in post_cos])) for n in self.names} if post_cos else None)
        return dict(
            method=self.method, seed=self.seed, model=cfg.model, quant=self.quant,
            acc=curve[-1][1], curve=curve, steps=self.total_steps, warmup_steps=self.warmup,
            gp_steps=n_gp, bp_steps=n_bp, gp_fraction=gp_fraction,
            backward_macs_bp_run=bwd_bp_run, predictor_macs=pred_cost,
            backward_macs_saved_abs=saved_abs,
            backward_macs_saved=saved_abs / bwd_bp_run,
            mean_cos_post_warmup=mean_cos,
            seconds=time.perf_counter() - t0,
            log=self.ctrl.log,
        )


def run(data: Digits, method: str, seed: int, cfg: TrainConfig = TrainConfig()) -> dict:
    return Trainer(data, method, seed, cfg).run()
