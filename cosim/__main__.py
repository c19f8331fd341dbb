"""Command line of the co-simulation harness.

    python -m cosim train --model cnn --dataset digits --method {bp,adagp,sparse,autoassist,all}
                          --backend {golden,verilator,icarus} --steps N [--preset NAME] [--batch B]
                          [--seed S] [--out DIR] [--json] [--resume] [--inject-fault STEP:LAYER:OP]
    python -m cosim run                 the main job (`make run`): a few training steps of the digits
                                        CNN on Verilator, preset default, every method available
    python -m cosim bench gemm [--presets small default large] [--sim verilator] [--json]
    python -m cosim bench sparsity [--presets default] [--sim verilator] [--json] [--model-only]
    python -m cosim bench predictor [--sim verilator] [--json]
    python -m cosim bench harness       a few BP steps: time inside the simulator vs harness overhead
    python -m cosim report ...          analytic cycle/energy report of the papers' networks
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from rtl.config import PRESETS, preset
from . import cyclemodel, driver
from .driver import DriverError, MemoryImage
from .execute import run_checked
from .rtlsim import SIMULATORS, RtlSim, SimError
from . import train


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


# ---- bench subcommands: name -> (add its arguments, run it) ---------------------------
def _gemm_args(p):
    p.add_argument("--presets", nargs="+", default=["small", "default", "large"], choices=list(PRESETS))
    p.add_argument("--sim", default="verilator", choices=SIMULATORS)
    p.add_argument("--repeat", type=int, default=20, help="runs of each GEMM per program (speed figure)")
    p.add_argument("--json", action="store_true")


def _gemm_main(args) -> int:
    emit = (lambda row: print(json.dumps(row), flush=True)) if args.json else table_printer()
    bench_gemm(args.presets, args.sim, args.repeat, emit)
    return 0


def _harness_args(p):
    p.add_argument("--preset", default="default", choices=list(PRESETS))
    p.add_argument("--sim", default="verilator", choices=SIMULATORS)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="BP steps to time")
    p.add_argument("--json", action="store_true")


def _harness_main(args) -> int:
    """Training steps of the digits CNN on the RTL; where the wall time goes."""
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as out:
        rc = train.RunConfig(method="bp", backend=args.sim, steps=args.steps, preset=args.preset,
                             batch=args.batch, out=out)
        code = _quiet_train(rc)
        if code:
            return code
        with open(os.path.join(out, "timing.json")) as f:
            timing = json.load(f)
    walls = timing["step_wall_s"]["bp"]
    if args.json:
        print(json.dumps(timing))
        return 0
    print(f"{args.steps} BP steps of the digits CNN (batch {args.batch}) on {args.sim}, preset {args.preset}")
    print(f"wall per step (fwd + bwd + update + checks): {', '.join(f'{w:.2f}' for w in walls)} s")
    for k, v in timing["breakdown_s"].items():
        print(f"  {k:<70} {v:8.3f} s")
    print(f"inside the simulator {timing['inside_simulator_s']} s, harness overhead "
          f"{timing['harness_overhead_s']} s (wall {timing['wall_s']} s)")
    return 0


def _quiet_train(rc) -> int:
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = train.run_train(rc, json_out=True)     # json_out: no progress bar, no tables
    if code:
        print(buf.getvalue())
    return code


def _sparsity_args(p):
    p.add_argument("--presets", nargs="+", default=["default"], choices=list(PRESETS),
                   help="the first one is used")
    p.add_argument("--sim", default="verilator", choices=SIMULATORS)
    p.add_argument("--model-only", action="store_true", help="cycle model only, no RTL")
    p.add_argument("--json", action="store_true")


def _sparsity_main(args) -> int:
    from . import bench_sparsity
    emit = (lambda row: print(json.dumps(row), flush=True)) if args.json else bench_sparsity.table_printer()
    bench_sparsity.run(args.presets[0], args.sim, emit, args.model_only)
    return 0


def _predictor_args(p):
    p.add_argument("--sim", default="verilator", choices=SIMULATORS)
    p.add_argument("--json", action="store_true")


def _predictor_main(args) -> int:
    """ADA-GP predictor side (cosim/bench_predictor.py)."""
    from .bench_predictor import bench as bench_predictor, table_printer as pred_table
    bench_predictor(args.sim, emit=(lambda row: print(json.dumps(row), flush=True)) if args.json
                    else pred_table())
    return 0


BENCHES = {"gemm": (_gemm_args, _gemm_main), "harness": (_harness_args, _harness_main),
           "sparsity": (_sparsity_args, _sparsity_main), "predictor": (_predictor_args, _predictor_main)}


def _report_main(argv) -> int:
    try:
        from . import report
    except ImportError as e:
        print(f"error: `cosim report` is not available in this tree ({e})", file=sys.stderr)
        return 2
    return report.main(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:          # its own parser (cosim/report.py)
        return _report_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m cosim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="benchmarks that print figures")
    bsub = b.add_subparsers(dest="what", required=True)
    for name, (add_args, _) in BENCHES.items():
        add_args(bsub.add_parser(name))
    t = sub.add_parser("train", help="train the digits CNN with every layer on the engine, checked")
    train.add_arguments(t)
    r = sub.add_parser("run", help="the main job: a few co-simulated training steps, every method")
    train.add_arguments(r)
    r.set_defaults(method="all", backend="verilator", steps=20, out="build/run")
    sub.add_parser("report", help="analytic cycle and energy report (cosim/report.py; own arguments)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "bench":
            return BENCHES[args.what][1](args)
        return train.run_train(train.config_from_args(args), resume=args.resume, json_out=args.json)
    except (SimError, DriverError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
