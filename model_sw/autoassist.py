"""AutoAssist (Zhang, Yu, Dhillon 2019) vs plain SGD on the digits set: runs and command line.

    python -m model_sw.autoassist --model cnn --seeds 5 --json

prints one JSON object per method (``sgd``, ``autoassist``, ``autoassist+adagp`` by
default) and writes ``results.json`` (atomically) to ``--out`` (build/autoassist).

Methods
-------
``sgd``               the Boss alone: every instance of every pass, plain SGD.
``autoassist``        the Boss fed by the Assistant (feature set ``--features``).
``autoassist-pixels`` / ``autoassist-loss``   the same with an explicit feature set.
``sgd-short``         control: plain SGD with ``--short-fraction`` (0.5) of the passes,
                      the same learning-rate schedule compressed.
``shrink-random``     control: the shrink rule with a constant p (uniform random
                      subsampling at a similar keep rate, ``--random-p``).
``adagp``             control: ADA-GP's trainer (method "adagp") without the Assistant.
``autoassist+adagp``  the Assistant feeding ADA-GP's trainer (model_sw.adagp.Trainer,
                      method "adagp"): filtered batches go through its BP/GP phases.

A *pass* is one epoch of the Assistant: every training instance is once either
trained on or shrunk.  The Boss's learning rate is halved at 50 % and 75 % of the
passes.  Test accuracy is measured twice per pass: when half of the pass's
instances have been consumed (trained or shrunk) and at its end.

Backward MACs (from the layer shapes, model_sw.adagp_engine): per trained instance
``B1 = sum_l F_l + sum_{l>=2} F_l`` with ``F_l`` the forward MACs of layer l for
one instance (weight gradient of every layer + data gradient of all but the first);
a run's backward MACs are ``B1 * (instances trained with back-propagation)``.
Overheads (``assistant_macs``: decisions + Assistant training; ``predictor_macs`` of
ADA-GP) are reported separately and in ``net_backward_macs_to_target``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from model_sw.fileio import write_atomic
import torch

from . import adagp_engine as eng
from .adagp import TrainConfig, Trainer, evaluate
from .autoassist_assistant import (FEATURE_SETS, Assistant, ConstantAssistant, check_base_prob,
                                   make_features)
from .autoassist_async import Feeder
from .data import Digits
from .models import MODELS

log = logging.getLogger("model_sw.autoassist")

METHODS = ("sgd", "sgd-short", "autoassist", "autoassist-pixels", "autoassist-loss", "shrink-random", "adagp",
           "autoassist+adagp")
DEFAULT_METHODS = ("sgd", "autoassist", "autoassist+adagp")


@dataclass
class AAConfig:
    model: str = "cnn"
    passes: int = 30
    batch: int = 32
    lr: float = 0.125
    lr_halve_at: tuple = (0.5, 0.75)
    base_prob: float = 0.3
    features: str = "loss"
    assistant_lr: float = 0.01
    l2: float = 1e-3
    ema_decay: float = 0.75
    queue_size: int = 20
    random_p: float = 0.3
    short_fraction: float = 0.5
    threaded: bool = True
    fail_after: int | None = None   # fault injection: the worker raises in this chunk + 1

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.passes < 1 or self.batch < 1:
            raise ValueError(f"passes={self.passes} and batch={self.batch} must be >= 1")
        check_base_prob(self.base_prob)
        if self.features not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {self.features!r}; choose one of {', '.join(FEATURE_SETS)}")


class ReportingTrainer(Trainer):
    """ADA-GP's Trainer, unchanged, except that its loss keeps the per-instance losses and margins.

    ``Trainer._loss`` is the one place both its BP and GP steps turn logits into
    the loss; returning the mean of the per-instance losses is what it returned.
    """
    last = None

    def _loss(self, logits, y):
        per = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        with torch.no_grad():
            z = logits.detach()
            zy = z.gather(1, y[:, None])[:, 0]
            other = z.scatter(1, y[:, None], float("-inf")).max(1).values
            self.last = (per.detach().numpy().copy(), (zy - other).numpy().copy())
        return per.mean()


def _boss(method: str) -> str:
    return "adagp" if method in ("adagp", "autoassist+adagp") else "bp"


def run(data: Digits, method: str, seed: int, cfg: AAConfig = AAConfig()) -> dict:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    passes = max(1, round(cfg.passes * cfg.short_fraction)) if method == "sgd-short" else cfg.passes
    tcfg = TrainConfig(model=cfg.model, epochs=passes, batch=cfg.batch, lr=cfg.lr)
    t = ReportingTrainer(data, _boss(method), seed, tcfg)
    n_train = int(data.x_train.shape[0])
    fwd1 = eng.forward_macs(t.model, (1, *data.x_train.shape[1:]))
    bwd1 = eng.backward_macs(fwd1)
    feeder = None
    if method not in ("sgd", "sgd-short", "adagp"):
        feats_name = {"autoassist-pixels": "pixels", "autoassist-loss": "loss"}.get(method, cfg.features)
        feats = make_features(feats_name, data.x_train.numpy())
        if method == "shrink-random":
            assistant = ConstantAssistant(cfg.random_p)
        else:
            assistant = Assistant(feats.n, 10, lr=cfg.assistant_lr, l2=cfg.l2)
        feeder = Feeder(assistant, feats, data.y_train.numpy(), cfg.batch, cfg.base_prob, cfg.queue_size,
                        cfg.ema_decay, seed, threaded=cfg.threaded, fail_after=cfg.fail_after)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    trained = bp_trained = steps = n_gp = 0
    pred_macs = 0
    acc0 = evaluate(t.model, data.x_test, data.y_test, False)
    curve = [dict(passes=0, acc=acc0, trained=0, backward_macs=0, overhead_macs=0)]
    events = []
    perm = torch.randperm(n_train, generator=gen).numpy()
    if feeder is not None:
        feeder.start_epoch(perm)
    try:
        for p in range(passes):
            t.lr = cfg.lr * 0.5 ** sum(p >= f * passes for f in cfg.lr_halve_at)
            pos = 0
            mid_done = False
            while True:
                if feeder is None:
                    if pos >= n_train:
                        break
                    idx, kind = perm[pos:pos + cfg.batch], "plain"
                    pos += len(idx)
                else:
                    nb = feeder.next_batch()
                    if nb is None:
                        break
                    idx, kind = nb
                it = torch.from_numpy(idx)
                xb, yb = data.x_train[it], data.y_train[it]
                phase = t.ctrl.phase
                if phase == "gp":
                    info = t.gp_step(xb, yb, steps)
                    n_gp += 1
                    if t.bank is not None:
                        pred_macs += t.bank.forward_macs()
                else:
                    info = t.bp_step(xb, yb, steps)
                    bp_trained += len(idx)
                    if t.bank is not None:
                        pred_macs += t.bank.train_macs()
                t.ctrl.advance(**info)
                steps += 1
                trained += len(idx)
                if feeder is not None:
                    losses, margins = t.last
                    feeder.report(idx, losses, margins)
                if not mid_done:  # the mid-pass evaluation: half of the pass's instances consumed
                    if feeder is None:
                        consumed = pos
                    else:
                        with feeder.cv:
                            consumed = feeder.counts.trained + feeder.counts.shrunk
                    if 2 * consumed >= n_train:
                        mid_done = True
                        curve.append(dict(passes=p + 0.5, acc=evaluate(t.model, data.x_test, data.y_test, False),
                                          trained=trained, backward_macs=bp_trained * bwd1,
                                          overhead_macs=_assistant_macs(feeder) + pred_macs))
            if not mid_done:  # (cannot happen: the pass consumes all instances) keep the grid aligned
                raise AssertionError("mid-pass evaluation missed")
            counts = None
            if feeder is not None:
                counts = feeder.end_epoch()
                if counts["shrunk"] + counts["trained_filtered"] + counts["trained_plain"] != n_train:
                    raise AssertionError("unreachable: end_epoch checks this")
            # start the next pass before evaluating: the worker gets a head start
            perm = torch.randperm(n_train, generator=gen).numpy()
            if feeder is not None and p + 1 < passes:
                feeder.start_epoch(perm)
            acc = evaluate(t.model, data.x_test, data.y_test, False)
            am = _assistant_macs(feeder)
            curve.append(dict(passes=p + 1, acc=acc, trained=trained, backward_macs=bp_trained * bwd1,
                              overhead_macs=am + pred_macs, counts=counts))
            if feeder is not None and feeder.error and not any(e["event"] == "worker_died" for e in events):
                events.append(dict(event="worker_died", pass_index=feeder.died_at_epoch, error=feeder.error))
    finally:
        if feeder is not None:
            feeder.close()
    post = max(steps - t.warmup, 0) if t.bank is not None else 0
    res = dict(
        method=method, seed=seed, model=cfg.model, acc=curve[-1]["acc"], curve=curve,
        n_train=n_train, backward_macs_per_instance=bwd1, forward_macs_per_instance=sum(fwd1.values()),
        steps=steps, trained=trained, bp_trained=bp_trained, keep_rate=trained / (n_train * passes),
        gp_steps=n_gp, gp_fraction=(n_gp / post if post else 0.0), predictor_macs=pred_macs,
        assistant_macs=_assistant_macs(feeder), seconds=time.perf_counter() - t0, events=events,
    )
    if feeder is not None:
        tot = {k: sum(h[k] for h in feeder.history) for k in
               ("trained_filtered", "trained_plain", "shrunk", "forced_keep", "filtered_batches", "plain_batches")}
        res.update(tot, reports_dropped=feeder.reports_dropped, worker_error=feeder.error,
                   worker_died_at_pass=feeder.died_at_epoch, assistant_auc=_auc(feeder.quality),
                   features=getattr(feeder.features, "name", None) if method != "shrink-random" else "constant")
    return res


def _assistant_macs(feeder) -> int:
    if feeder is None:
        return 0
    a = feeder.assistant
    return feeder.decisions * a.decide_macs() + feeder.assistant_trained * a.train_macs()


def _auc(quality) -> float | None:
    """Area under the ROC of the Assistant's p (before training on a report) vs the report's label."""
    if not quality:
        return None
    p = np.array([q[0] for q in quality])
    lab = np.array([q[1] for q in quality], dtype=bool)
    if lab.all() or not lab.any():
        return None
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(lab, p))


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

def summarize(method: str, runs: list[dict], target: float, sgd_macs: float | None = None,
              sgd_stay_macs: float | None = None, sgd_total_macs: float | None = None) -> dict:
    """Mean over seeds; time to ``target`` (test accuracy %, on the seed-mean curve)."""
    acc = np.array([r["acc"] for r in runs]) * 100.0
    n = runs[0]["n_train"]
    curves = [r["curve"] for r in runs]
    k_max = min(len(c) for c in curves)
    acc_mean = np.array([np.mean([c[k]["acc"] for c in curves]) for k in range(k_max)]) * 100.0
    hit = next((k for k in range(k_max) if acc_mean[k] >= target), None)
    # sustained: the first evaluation from which the seed-mean curve stays >= target to the end
    stay = next((k for k in range(k_max) if all(a >= target for a in acc_mean[k:])), None)

    def at(k, key):
        return float(np.mean([c[k][key] for c in curves]))

    out = dict(method=method, model=runs[0]["model"], seeds=len(runs), target_acc=round(target, 3),
               final_acc_mean=round(float(acc.mean()), 3), final_acc_std=round(float(acc.std()), 3),
               final_acc_per_seed=[round(float(a), 2) for a in acc])
    if hit is None:
        out.update(epochs_to_target=None, passes_to_target=None, backward_macs_to_target=None,
                   net_backward_macs_to_target=None)
    else:
        bw = at(hit, "backward_macs")
        out.update(epochs_to_target=round(at(hit, "trained") / n, 3), passes_to_target=curves[0][hit]["passes"],
                   backward_macs_to_target=int(bw), net_backward_macs_to_target=int(bw + at(hit, "overhead_macs")))
        if sgd_macs:
            out["backward_macs_saved_to_target"] = round(1.0 - bw / sgd_macs, 4)
            out["net_backward_macs_saved_to_target"] = round(1.0 - (bw + at(hit, "overhead_macs")) / sgd_macs, 4)
    per_seed = []
    for c in curves:
        k = next((k for k in range(len(c)) if c[k]["acc"] * 100.0 >= target), None)
        per_seed.append(None if k is None else int(c[k]["backward_macs"]))
    out["backward_macs_to_target_per_seed"] = per_seed
    if stay is None:
        out.update(sustained_epochs_to_target=None, sustained_backward_macs_to_target=None)
    else:
        out.update(sustained_epochs_to_target=round(at(stay, "trained") / n, 3),
                   sustained_backward_macs_to_target=int(at(stay, "backward_macs")))
        if sgd_stay_macs:
            out["sustained_backward_macs_saved"] = round(1.0 - at(stay, "backward_macs") / sgd_stay_macs, 4)
    out.update(
        total_backward_macs=int(np.mean([r["bp_trained"] * r["backward_macs_per_instance"] for r in runs])),
        effective_epochs=round(float(np.mean([r["trained"] for r in runs])) / n, 3),
        keep_rate=round(float(np.mean([r["keep_rate"] for r in runs])), 4),
        acc_curve_mean=[round(float(a), 2) for a in acc_mean],
        seconds=round(float(sum(r["seconds"] for r in runs)), 1),
    )
    total_net = float(np.mean([r["bp_trained"] * r["backward_macs_per_instance"] + r["assistant_macs"]
                               + r["predictor_macs"] for r in runs]))
    out["total_net_backward_macs"] = int(total_net)
    if sgd_total_macs:
        out["total_net_backward_macs_saved"] = round(1.0 - total_net / sgd_total_macs, 4)
    if "shrunk" in runs[0]:
        aucs = [r["assistant_auc"] for r in runs if r["assistant_auc"] is not None]
        out.update(
            features=runs[0]["features"],
            assistant_auc=round(float(np.mean(aucs)), 4) if aucs else None,
            plain_fraction=round(float(np.mean([r["trained_plain"] / max(r["trained"], 1) for r in runs])), 4),
            forced_keep=int(sum(r["forced_keep"] for r in runs)),
            reports_dropped=int(sum(r["reports_dropped"] for r in runs)),
            assistant_macs=int(np.mean([r["assistant_macs"] for r in runs])),
            worker_errors=[r["worker_error"] for r in runs if r["worker_error"]],
        )
    if runs[0]["method"] in ("adagp", "autoassist+adagp"):
        out.update(gp_fraction=round(float(np.mean([r["gp_fraction"] for r in runs])), 4),
                   predictor_macs=int(np.mean([r["predictor_macs"] for r in runs])))
    return out




def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model_sw.autoassist", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma list of: {', '.join(METHODS)}")
    p.add_argument("--seeds", type=int, default=5, help="runs per method, seeds 0..N-1")
    p.add_argument("--passes", type=int, default=None, help="passes over the data (default 30)")
    p.add_argument("--base-prob", type=float, default=None, help="shrink rule base probability (default 0.3)")
    p.add_argument("--features", default=None, help=f"Assistant features for 'autoassist': {', '.join(FEATURE_SETS)}")
    p.add_argument("--assistant-lr", type=float, default=None)
    p.add_argument("--random-p", type=float, default=None, help="constant p of shrink-random")
    p.add_argument("--sync", action="store_true", help="run the Assistant inline (deterministic) instead of a thread")
    p.add_argument("--fail-after", type=int, default=None, help="fault injection: the worker dies after N chunks")
    p.add_argument("--target", type=float, default=None,
                   help="target accuracy %% (default: sgd's final mean - 0.5; needs sgd in --methods)")
    p.add_argument("--json", action="store_true", help="print one JSON object per method")
    p.add_argument("--out", default="build/autoassist")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .data import load_digits_split

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad:
        raise SystemExit(f"error: unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    if args.seeds < 1:
        raise SystemExit(f"error: --seeds {args.seeds} must be >= 1")
    if args.target is None and "sgd" not in methods:
        raise SystemExit("error: without --target, 'sgd' must be among --methods (it defines the target)")
    over = dict(model=args.model, passes=args.passes, base_prob=args.base_prob, features=args.features,
                assistant_lr=args.assistant_lr, random_p=args.random_p, fail_after=args.fail_after)
    try:
        cfg = AAConfig(threaded=not args.sync, **{k: v for k, v in over.items() if v is not None})
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    data = load_digits_split()
    methods = (["sgd"] if "sgd" in methods else []) + [m for m in methods if m != "sgd"]
    results, summaries = {}, []
    target, sgd_macs, sgd_stay, sgd_total = args.target, None, None, None
    for m in methods:
        runs = [run(data, m, s, cfg) for s in range(args.seeds)]
        results[m] = runs
        if m == "sgd" and target is None:
            target = float(np.mean([r["acc"] for r in runs])) * 100.0 - 0.5
        summ = summarize(m, runs, target, sgd_macs, sgd_stay, sgd_total)
        if m == "sgd":
            sgd_macs, sgd_stay = summ["backward_macs_to_target"], summ["sustained_backward_macs_to_target"]
            sgd_total = summ["total_net_backward_macs"]
        for r in runs:
            for e in r["events"]:
                log.warning("method %s seed %s: %s", m, r["seed"], e)
        summaries.append(summ)
        if args.json:
            print(json.dumps(summ), flush=True)
        else:
            print(f"{m:18s} acc {summ['final_acc_mean']:.2f} +- {summ['final_acc_std']:.2f}  "
                  f"epochs to {target:.2f}: {summ['epochs_to_target']}  backward MACs to target: "
                  f"{summ['backward_macs_to_target']}  ({summ['seconds']} s)", flush=True)
        write_atomic(os.path.join(args.out, "results.json"), json.dumps(dict(
            command=" ".join(["python -m model_sw.autoassist"] + (argv if argv is not None else sys.argv[1:])),
            config=asdict(cfg), target_acc=target, summaries=summaries,
            runs={k: v for k, v in results.items()}), indent=1, default=_jsonable))
    return 0


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-able: {type(o).__name__}")


if __name__ == "__main__":
    sys.exit(main())
