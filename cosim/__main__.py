"""Command line of the co-simulation harness.

    python -m cosim bench gemm [--presets small default large] [--sim verilator] [--json]
    python -m cosim bench predictor [--sim verilator] [--json]
    python -m cosim run [--preset default] [--sim verilator] [--out build/run]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from model_sw.fileio import write_atomic
from rtl.config import PRESETS, preset
from . import cyclemodel, driver
from .driver import DriverError, MemoryImage
from .execute import run_checked
from .rtlsim import SIMULATORS, RtlSim, SimError


def gemm_shapes(cfg):
    R, C = cfg.rows, cfg.cols
    shapes = [(4 * R, 4 * C, 64), (4 * R, 4 * C, 256), (8 * R, 8 * C, 64), (8 * R, 4 * C, 128),
              (R + 1, 3 * C + 3, 17), (2 * R - 1, C, 1), (16 * R, 8 * C, 32)]
    fits = []
    for m, n, k in shapes:
        if -(-m // R) * k <= cfg.spad_a_words and -(-n // C) * k <= cfg.spad_b_words:
            fits.append((m, n, k))
    return fits


def bench_gemm(presets, sim_name, repeat, emit):
    rng = np.random.default_rng(0)
    for name in presets:
        cfg = preset(name)
        with RtlSim(cfg, sim_name) as sim:
            for m, n, k in gemm_shapes(cfg):
                img = MemoryImage(cfg)
                a = img.put("a", rng.integers(-128, 128, (m, k)))
                b = img.put("b", rng.integers(-128, 128, (k, n)))
                d = img.alloc("d", (m, n))
                prog = driver.gemm_program(cfg, m, n, k, driver.matrix_desc(a.base, k, 1),
                                           driver.matrix_desc(b.base, 1, n), d_addr=d.base, d_si=n,
                                           shift=10, relu=True)
                res = run_checked(sim, cfg, img, prog * repeat, what=f"{name} {m}x{n}x{k}")
                cycles = res.counters["busy_cycles"] // repeat
                ideal = cyclemodel.ideal_cycles(cfg, m, n, k)
                emit({"preset": name, "M": m, "N": n, "K": k, "cycles": cycles,
                      "model_cycles": res.model_cycles // repeat, "ideal_cycles": ideal,
                      "scalesim_os_cycles": cyclemodel.scalesim_os_cycles(cfg, m, n, k),
                      "utilization": round(ideal / cycles, 4), "bit_exact": True,
                      "sim_cycles_per_s": round(res.counters["cycles"] / res.sim_wall_s),
                      "end_to_end_cycles_per_s": round(res.counters["cycles"] / res.wall_s),
                      "simulator": sim_name})


def table_printer():
    rows = []
    cols = ["preset", "M", "N", "K", "cycles", "ideal_cycles", "utilization", "scalesim_os_cycles",
            "bit_exact", "sim_cycles_per_s"]

    def emit(row):
        if not rows:
            print("  ".join(f"{c:>12}" for c in cols))
        rows.append(row)
        print("  ".join(f"{str(row[c]):>12}" for c in cols), flush=True)
    return emit


def run_main(args):
    """The main job on the built-in default: the digits CNN's forward and backward
    pass on the RTL, every op checked bit-exactly and against the cycle model."""
    import torch
    from model_sw.data import load_digits_split
    from model_sw.models import CNN
    from .cnn_pass import CnnPass
    torch.manual_seed(0)
    cfg = preset(args.preset)
    data = load_digits_split()
    p = CnnPass(cfg, CNN(), data.x_train[:args.batch], data.y_train[:args.batch])
    rows = []
    t0 = time.perf_counter()
    with RtlSim(cfg, args.sim) as sim:
        def do(op):
            res = run_checked(sim, cfg, p.img, op.prog, what=f"{op.layer} {op.kind}")
            c = res.counters
            rows.append({"layer": op.layer, "op": op.kind, "instructions": len(op.prog),
                         "cycles": c["busy_cycles"], "model_cycles": res.model_cycles,
                         "macs": c["macs"], "utilization": round(c["macs"] / (c["busy_cycles"] * cfg.rows * cfg.cols), 3),
                         "dram_bytes": c["rd_bytes"] + c["wr_bytes"] + c["mask_bits"] // 8,
                         "bit_exact": True})
        for op in p.forward_ops():
            do(op)
        p.put_logit_grad()
        for ops, host in p.backward_stages():
            for op in ops:
                do(op)
            host()
    errs = p.errors_vs_torch()
    out = {"preset": cfg.name, "simulator": args.sim, "batch": args.batch, "ops": rows,
           "max_rel_error_vs_torch": errs, "wall_s": round(time.perf_counter() - t0, 2)}
    path = os.path.join(args.out, "results.json")
    write_atomic(path, json.dumps(out, indent=1))
    if args.json:
        print(json.dumps(out))
        return
    cols = ["layer", "op", "instructions", "cycles", "model_cycles", "macs", "utilization", "dram_bytes", "bit_exact"]
    print("  ".join(f"{c:>12}" for c in cols))
    for r in rows:
        print("  ".join(f"{str(r[c]):>12}" for c in cols))
    print("max |engine - PyTorch fp32| / max |PyTorch|: " +
          ", ".join(f"{k} {v:.3f}" for k, v in errs.items()))
    print(f"wrote {path} ({out['wall_s']} s)")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m cosim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="benchmarks that print figures")
    b.add_argument("what", choices=["gemm", "predictor"])
    b.add_argument("--presets", nargs="+", default=["small", "default", "large"], choices=list(PRESETS))
    b.add_argument("--sim", default="verilator", choices=SIMULATORS)
    b.add_argument("--repeat", type=int, default=20, help="runs of each GEMM per program (speed figure)")
    b.add_argument("--json", action="store_true")
    r = sub.add_parser("run", help="the main job: the digits CNN's forward+backward pass on the RTL")
    r.add_argument("--preset", default="default", choices=list(PRESETS))
    r.add_argument("--sim", default="verilator", choices=SIMULATORS)
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--out", default="build/run")
    r.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "bench":
            if args.what == "predictor":   # ADA-GP predictor side (cosim/bench_predictor.py)
                from .bench_predictor import bench as bench_predictor, table_printer as pred_table
                bench_predictor(args.sim, emit=(lambda row: print(json.dumps(row), flush=True))
                                if args.json else pred_table())
                return 0
            emit = (lambda row: print(json.dumps(row), flush=True)) if args.json else table_printer()
            bench_gemm(args.presets, args.sim, args.repeat, emit)
        else:
            run_main(args)
    except (SimError, DriverError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
