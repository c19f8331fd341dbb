"""``python -m cosim report``: speed-up, energy and off-chip traffic of training
methods on networks too big to simulate, from the analytic models (cycles exact
against the RTL on every shape the tests simulate; see cosim/layermodel.py).

    python -m cosim report --networks paper --preset default --json
    python -m cosim report --networks resnet50/imagenet,vgg16 --methods bp,adagp --out build/report

Prints one row (``--json``: one JSON object) per network and method, then the
papers' anchors beside this model's figures.  Writes ``results.json`` (with the
per-layer table of BP), ``report.csv`` and PNG plots into ``--out``, atomically.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

from model_sw.fileio import write_atomic
from rtl.config import ConfigError, preset
from . import energy as energy_mod
from . import methods as M
from . import networks as N
from .layermodel import PlanError

ANCHORS = {
    "adagp_speedup_avg": 1.47, "adagp_energy_change": -0.34,
    "sparse_backward_speedup_range": [1.69, 5.43],
    "sources": {"adagp": "Janfaza et al., ADA-GP, MICRO 2023 (1.47x average, 34 % less energy)",
                "sparse": "Sarma et al., arXiv 2109.07710 (back-propagation 1.69x-5.43x on 5 ImageNet CNNs)"},
}
COLUMNS = ("network", "dataset", "method", "cycles", "speedup_vs_bp", "backward_speedup_vs_bp",
           "energy_j", "energy_vs_bp", "dram_bytes", "utilization", "fallback_layers")


class ReportError(ValueError):
    """Bad command-line input; the message says what is allowed."""


def run(keys, cfg, methods, asm, table=None):
    """(results: list of per-(network, method) dicts, layers: {key: per-layer BP rows})."""
    results, layers = [], {}
    for key in keys:
        net = N.build(key)
        ev = M.evaluate(cfg, net, methods, asm, table)
        results.extend(ev["results"])
        layers[key] = [{"layer": r["layer"].name, "op": op, "cycles": c["busy_cycles"],
                        "ideal_cycles": c["ideal_cycles"], "instructions": c["instructions"],
                        "utilization": round(c["macs"] / (c["busy_cycles"] * cfg.rows * cfg.cols), 4),
                        "dram_bytes": c["rd_bytes"] + c["wr_bytes"] + c["mask_bits"] / 8,
                        "fallback": r["fallback"]}
                       for r in ev["rows"] for op, c in r["ops"].items()]
    return results, layers


def summary(results) -> dict:
    """This model's figures beside the anchors."""
    def of(method, field):
        return [r[field] for r in results if r["method"] == method and r[field] is not None]
    out = {"anchors": ANCHORS, "measured": {}}
    sp, en = of("adagp", "speedup_vs_bp"), of("adagp", "energy_vs_bp")
    if sp:
        out["measured"]["adagp_speedup_avg"] = sum(sp) / len(sp)
        out["measured"]["adagp_energy_change"] = sum(en) / len(en) - 1
    # the paper's range is over ImageNet CNNs: compare with ours on the ImageNet networks
    sparse = [r for r in results if r["method"] == "sparse"]
    over = "ImageNet CNNs" if any(r["dataset"] == "imagenet" for r in sparse) else "all networks"
    bw = [r["backward_speedup_vs_bp"] for r in sparse if over == "all networks" or r["dataset"] == "imagenet"]
    if bw:
        out["measured"]["sparse_backward_speedup_range"] = [min(bw), max(bw)]
        out["measured"]["sparse_backward_range_over"] = over
        out["measured"]["sparse_speedup_range"] = [min(of("sparse", "speedup_vs_bp")),
                                                   max(of("sparse", "speedup_vs_bp"))]
    for m in ("autoassist", "all"):
        v = of(m, "speedup_vs_bp")
        if v:
            out["measured"][f"{m}_speedup_avg"] = sum(v) / len(v)
            out["measured"][f"{m}_energy_change"] = sum(of(m, "energy_vs_bp")) / len(v) - 1
    return out


def _fmt(v, col):
    if v is None:
        return "-"
    if col in ("speedup_vs_bp", "backward_speedup_vs_bp"):
        return f"{v:.2f}x"
    if col == "energy_vs_bp":
        return f"{(v - 1) * 100:+.1f}%"
    if col == "energy_j":
        return f"{v:.4g}"
    if col == "dram_bytes":
        return f"{v / 1e6:.1f}M"
    if col == "cycles":
        return f"{v / 1e6:.2f}M"
    if col == "utilization":
        return f"{v:.2f}"
    return str(v)


def table_text(results, summ, cfg, asm) -> str:
    heads = {"backward_speedup_vs_bp": "bwd_speedup", "energy_vs_bp": "energy_vs_bp",
             "fallback_layers": "fallback"}
    rows = [[heads.get(c, c) for c in COLUMNS]] + [[_fmt(r[c], c) for c in COLUMNS] for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [f"preset {cfg.name} ({cfg.rows}x{cfg.cols}), batch {asm.batch}, GP fraction {asm.gp_fraction}, "
             f"ReLU density {asm.density}, AutoAssist keep rate {asm.keep_rate}; cycles and energy per step"]
    lines += ["  ".join(x.rjust(w) for x, w in zip(r, widths)) for r in rows]
    m, a = summ["measured"], summ["anchors"]
    lines.append("")
    if "adagp_speedup_avg" in m:
        lines.append(f"ADA-GP: this model {m['adagp_speedup_avg']:.2f}x average, energy "
                     f"{m['adagp_energy_change'] * 100:+.0f}%   | paper: {a['adagp_speedup_avg']}x average, "
                     f"energy {a['adagp_energy_change'] * 100:+.0f}%")
    if "sparse_backward_speedup_range" in m:
        lo, hi = m["sparse_backward_speedup_range"]
        plo, phi = a["sparse_backward_speedup_range"]
        lines.append(f"sparse backward ({m['sparse_backward_range_over']}): this model {lo:.2f}x-{hi:.2f}x   | paper: {plo}x-{phi}x")
    for k in ("autoassist", "all"):
        if f"{k}_speedup_avg" in m:
            lines.append(f"{k}: this model {m[k + '_speedup_avg']:.2f}x average, energy "
                         f"{m[k + '_energy_change'] * 100:+.0f}%")
    return "\n".join(lines)


def plots(results, layers, out_dir) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    nets = list(dict.fromkeys(f"{r['network']}/{r['dataset']}" for r in results))
    meths = list(dict.fromkeys(r["method"] for r in results))
    get = {(f"{r['network']}/{r['dataset']}", r["method"]): r for r in results}
    written = []

    def save(fig, name):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        path = os.path.join(out_dir, name)
        write_atomic(path, buf.getvalue())
        written.append(path)

    for field, name, label, ref in (("speedup_vs_bp", "speedup.png", "speed-up over BP (x)", 1.47),
                                    ("energy_vs_bp", "energy.png", "energy relative to BP", 0.66)):
        fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(nets)), 4.5))
        x = np.arange(len(nets))
        w = 0.8 / max(1, len(meths))
        for i, m in enumerate(meths):
            ax.bar(x + i * w, [get[(n, m)][field] if (n, m) in get else 0 for n in nets], w, label=m)
        ax.axhline(ref, color="k", ls="--", lw=0.8, label=f"ADA-GP paper ({ref})")
        ax.set_xticks(x + 0.4 - w / 2, nets, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.legend(fontsize=7, ncol=3)
        save(fig, name)
    # per-layer cycles of BP, for the first network of the list
    key = nets[0]
    rows = layers[key]
    names = list(dict.fromkeys(r["layer"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(names)), 4))
    bottom = np.zeros(len(names))
    for op in ("fwd", "bwd_weight", "bwd_data"):
        v = np.array([sum(r["cycles"] for r in rows if r["layer"] == n and r["op"] == op) for n in names], float)
        ax.bar(names, v, bottom=bottom, label=op)
        bottom += v
    ax.set_title(f"{key}: BP cycles per layer")
    ax.tick_params(axis="x", rotation=90, labelsize=6)
    ax.legend(fontsize=7)
    save(fig, "layers_" + key.replace("/", "_") + ".png")
    return written


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m cosim report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", default="paper",
                    help=f"'paper' or a comma list of names / name/dataset ({', '.join(N.NETWORKS)})")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--methods", default=",".join(M.METHODS), help=f"comma list of {', '.join(M.METHODS)}")
    d = M.Assumptions()
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--gp-fraction", type=float, default=d.gp_fraction,
                    help="ADA-GP: fraction of GP steps (default: measured in docs/adagp.md)")
    ap.add_argument("--density", type=float, default=d.density, help="sparse BP: ReLU output density")
    ap.add_argument("--keep-rate", type=float, default=d.keep_rate,
                    help="AutoAssist: fraction of instances kept (default: measured in docs/autoassist.md)")
    ap.add_argument("--energy-table", default=None, help="energy table JSON (default cosim/energy_table.json)")
    ap.add_argument("--out", default="build/report")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-plots", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        keys = N.resolve(args.networks)
        cfg = preset(args.preset)
        methods = M.check_methods([m.strip() for m in args.methods.split(",") if m.strip()])
        if not methods:
            raise M.MethodError(f"no method given; choose from {', '.join(M.METHODS)}")
        asm = M.Assumptions(batch=args.batch, gp_fraction=args.gp_fraction, density=args.density,
                            keep_rate=args.keep_rate).check()
        table = energy_mod.load_table(args.energy_table)
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as e:
            raise ReportError(f"output folder {args.out!r} cannot be created ({e.strerror})") from None
        if not os.access(args.out, os.W_OK):
            raise ReportError(f"output folder {args.out!r} is not writable")
        results, layers = run(keys, cfg, methods, asm, table)
        summ = summary(results)
        doc = {"preset": cfg.name, "assumptions": M.asdict(asm), "energy_table": args.energy_table or
               energy_mod.DEFAULT_TABLE, "results": results, "summary": summ, "layers_bp": layers}
        write_atomic(os.path.join(args.out, "results.json"), json.dumps(doc, indent=1))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(results)
        write_atomic(os.path.join(args.out, "report.csv"), buf.getvalue())
        pngs = [] if args.no_plots else plots(results, layers, args.out)
    except (N.NetworkError, ConfigError, M.MethodError, energy_mod.EnergyTableError, PlanError,
            ReportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if args.json:
            for r in results:
                print(json.dumps(r))
            print(json.dumps(summ))
        else:
            print(table_text(results, summ, cfg, asm))
            print(f"wrote {os.path.join(args.out, 'results.json')}, report.csv"
                  + (f" and {len(pngs)} plots" if pngs else ""))
        sys.stdout.flush()
    except BrokenPipeError:                       # e.g. piped into `head`: the files are written
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
