"""PNG plots of a co-simulated training run (matplotlib, Agg backend):

* ``cycles_per_phase.png``  engine cycles of every step, stacked by operation
  (forward, backward-data, backward-weight), with the BP-equivalent cycles;
* ``cycles_per_layer.png``  total cycles per layer, stacked by operation;
* ``accuracy.png``          test accuracy vs step (one line per method).
Each figure is written to a temporary name and renamed (no half-written file).
"""
from __future__ import annotations

import io
import os

import matplotlib

from model_sw.fileio import write_atomic

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OPS = ("fwd", "bwd_data", "bwd_weight")


def _save(fig, path: str):
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=100, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())


def plot_run(out_dir: str, res: dict) -> list[str]:
    recs = res["steps_log"]
    steps = [r["step"] for r in recs]
    paths = []
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bottom = [0] * len(recs)
    for op in OPS:
        vals = [sum(o["cycles"] for o in r["ops"] if o["op"] == op) for r in recs]
        ax.bar(steps, vals, bottom=bottom, label=op)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.plot(steps, [r["bp_cycles"] for r in recs], "k--", marker=".", label="BP-equivalent")
    ax.set_xlabel("step")
    ax.set_ylabel("engine cycles")
    ax.set_title(f"{res['method']} on {res['backend']} ({res['preset']}, batch {res['batch']}): "
                 f"cycles per step and phase")
    ax.legend(fontsize=8)
    paths.append(os.path.join(out_dir, "cycles_per_phase.png"))
    _save(fig, paths[-1])

    fig, ax = plt.subplots(figsize=(5, 3.5))
    layers = list(dict.fromkeys(o["layer"] for o in res["ops"]))
    bottom = [0] * len(layers)
    for op in OPS:
        vals = [sum(o["cycles"] for o in res["ops"] if o["layer"] == lay and o["op"] == op) for lay in layers]
        ax.bar(layers, vals, bottom=bottom, label=op)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel(f"engine cycles over {res['steps']} steps")
    ax.set_title("cycles per layer")
    ax.legend(fontsize=8)
    paths.append(os.path.join(out_dir, "cycles_per_layer.png"))
    _save(fig, paths[-1])
    paths.append(plot_accuracy(os.path.join(out_dir, "accuracy.png"), {res["method"]: res}))
    return paths


def plot_accuracy(path: str, runs: dict) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, res in runs.items():
        xs = [s + 1 for s, _ in res["curve"]]
        ax.plot(xs, [100 * a for _, a in res["curve"]], marker=".", label=name)
    ax.set_xlabel("training steps")
    ax.set_ylabel("test accuracy % (quantized model)")
    ax.set_title("accuracy vs step")
    ax.legend(fontsize=8)
    _save(fig, path)
    return path
