"""ADA-GP vs back-propagation on the digits set: the command line.

    python -m model_sw.train --model cnn --method bp,adagp --seeds 5 --json

prints one JSON object per method (mean over seeds) and writes to ``--out``
(default build/adagp): results.json (summary + every seed's curve, written
atomically), steplog.jsonl (every step of every run: phase, GP length, loss,
per-layer cosine similarity, the adaptive rule's decisions) and the plots
acc_vs_step.png, gp_fraction.png, cosine.png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from model_sw.fileio import write_atomic




def summarize(method: str, runs: list[dict]) -> dict:
    acc = np.array([r["acc"] for r in runs]) * 100.0
    cos = [r["mean_cos_post_warmup"] for r in runs if r["mean_cos_post_warmup"]]
    return dict(
        method=method, model=runs[0]["model"], quant=runs[0]["quant"], seeds=len(runs),
        acc_mean=round(float(acc.mean()), 3), acc_std=round(float(acc.std()), 3),
        acc_per_seed=[round(float(a), 2) for a in acc],
        gp_fraction=round(float(np.mean([r["gp_fraction"] for r in runs])), 4),
        backward_macs_saved=round(float(np.mean([r["backward_macs_saved"] for r in runs])), 4),
        backward_macs_saved_abs=int(np.mean([r["backward_macs_saved_abs"] for r in runs])),
        predictor_macs=int(np.mean([r["predictor_macs"] for r in runs])),
        backward_macs_bp_run=int(runs[0]["backward_macs_bp_run"]),
        steps=runs[0]["steps"], warmup_steps=runs[0]["warmup_steps"],
        mean_cos_post_warmup=({k: round(float(np.mean([c[k] for c in cos])), 3) for k in cos[0]} if cos else None),
        seconds=round(float(sum(r["seconds"] for r in runs)), 1),
    )


def _plots(out: str, results: dict[str, list[dict]]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, runs in results.items():
        steps = [s for s, _ in runs[0]["curve"]]
        accs = np.array([[a for _, a in r["curve"]] for r in runs]) * 100
        ax.plot(steps, accs.mean(0), label=m)
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy (%) - mean over seeds")
    ax.set_ylim(80, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "acc_vs_step.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    win = 50
    for m, runs in results.items():
        if all(r["gp_steps"] == 0 for r in runs):
            continue
        gp = np.array([[e["phase"] == "gp" for e in r["log"]] for r in runs], dtype=float).mean(0)
        k = np.ones(win) / win
        ax.plot(np.arange(len(gp) - win + 1) + win, np.convolve(gp, k, mode="valid"), label=m)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"GP fraction (moving window {win} steps, mean over seeds)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "gp_fraction.png"), dpi=110)
    plt.close(fig)

    with_cos = [m for m, runs in results.items() if any("cos" in e for e in runs[0]["log"])]
    if with_cos:
        fig, axes = plt.subplots(len(with_cos), 1, figsize=(7, 2.6 * len(with_cos)), squeeze=False)
        for ax, m in zip(axes[:, 0], with_cos):
            r = results[m][0]
            pts = [(e["step"], e["cos"]) for e in r["log"] if "cos" in e]
            for name in pts[0][1]:
                s = np.array([p[0] for p in pts])
                c = np.array([p[1][name] for p in pts])
                k = min(10, len(c))
                ax.plot(s[k - 1:], np.convolve(c, np.ones(k) / k, mode="valid"), label=name)
            ax.axvline(r["warmup_steps"], color="k", lw=0.8, ls="--")
            ax.set_title(f"{m} (seed {r['seed']}): cosine(predicted, true dW), BP steps, mean of 10", fontsize=9)
            ax.set_ylim(-0.5, 1.0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=3)
        axes[-1, 0].set_xlabel("training step")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "cosine.png"), dpi=110)
        plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    from .adagp import METHODS
    from .models import MODELS
    p = argparse.ArgumentParser(prog="python -m model_sw.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--method", default="bp,adagp", help=f"comma list of: {', '.join(METHODS)}")
    p.add_argument("--seeds", type=int, default=5, help="runs per method, seeds 0..N-1")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: TrainConfig)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="SGD learning rate (a power of two)")
    p.add_argument("--warmup-epochs", type=float, default=None)
    p.add_argument("--theta-up", type=float, default=None, help="adaptive rule: grow GP phases above this")
    p.add_argument("--theta-down", type=float, default=None, help="adaptive rule: shrink GP phases below this")
    p.add_argument("--max-fan-in", type=int, default=None,
                   help="size the shared predictor's fc for this fan-in (default: the largest layer)")
    p.add_argument("--json", action="store_true", help="print one JSON object per method")
    p.add_argument("--out", default="build/adagp", help="directory for results.json, steplog.jsonl and plots")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    torch.set_num_threads(max(1, args.threads))
    from dataclasses import replace

    from .adagp import TrainConfig, parse_method, run
    from .data import load_digits_split

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    if not methods:
        raise SystemExit("error: --method is empty")
    try:
        for m in methods:
            parse_method(m)
        cfg = TrainConfig(model=args.model)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if args.seeds < 1:
        raise SystemExit(f"error: --seeds {args.seeds} must be >= 1")
    over = {k: v for k, v in dict(epochs=args.epochs, batch=args.batch, lr=args.lr,
                                  warmup_epochs=args.warmup_epochs, max_fan_in=args.max_fan_in).items()
            if v is not None}
    ph = {k: v for k, v in dict(theta_up=args.theta_up, theta_down=args.theta_down).items() if v is not None}
    try:
        cfg = replace(cfg, **over, phases=replace(cfg.phases, **ph))
    except ValueError as e:
        raise SystemExit(f"error: {e}")

    data = load_digits_split()
    os.makedirs(args.out, exist_ok=True)
    results, summaries = {}, []
    t0 = time.perf_counter()
    for m in methods:
        runs = []
        for s in range(args.seeds):
            try:
                runs.append(run(data, m, s, cfg))
            except ValueError as e:  # bad configuration (sizes, rates): a clear message, no traceback
                raise SystemExit(f"error: method {m}, seed {s}: {e}")
        results[m] = runs
        summ = summarize(m, runs)
        summaries.append(summ)
        if args.json:
            print(json.dumps(summ), flush=True)
        else:
            print(f"{m:16s} acc {summ['acc_mean']:.2f} +- {summ['acc_std']:.2f}  GP {summ['gp_fraction']:.3f}  "
                  f"backward MACs saved {summ['backward_macs_saved']:.3f}  ({summ['seconds']} s)", flush=True)
        write_atomic(os.path.join(args.out, "results.json"), json.dumps(dict(
            command=" ".join(["python -m model_sw.train"] + (argv if argv is not None else sys.argv[1:])),
            config=_cfg_dict(cfg), summaries=summaries,
            runs={k: [{kk: vv for kk, vv in r.items() if kk != "log"} for r in v] for k, v in results.items()},
        ), indent=1))
    lines = []
    for m, runs in results.items():
        for r in runs:
            for e in r["log"]:
                lines.append(json.dumps(dict(method=m, seed=r["seed"], **e)))
    write_atomic(os.path.join(args.out, "steplog.jsonl"), "\n".join(lines) + "\n")
    if not args.no_plots:
        _plots(args.out, results)
    if not args.json:
        print(f"wrote {args.out}/ in {time.perf_counter() - t0:.1f} s")
    return 0


def _cfg_dict(cfg) -> dict:
    from dataclasses import asdict
    return asdict(cfg)


if __name__ == "__main__":
    sys.exit(main())
