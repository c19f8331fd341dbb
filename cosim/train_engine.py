"""The engine side of co-simulated training (cosim.train): the golden model or
the RTL running a step's operations, every one checked (bit-exact vs the golden
model, busy cycles vs the cycle model, a waveform of a failing operation), and the
step's pass over the digits CNN (cosim.cnn_pass) with its tolerance check against
PyTorch fp32."""
from __future__ import annotations

import os
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model_sw import numerics as nx
from . import cyclemodel, golden
from . import predictor_model as PM
from . import train_hw as HW
from .accel_sim import AccelSim
from .cnn_pass import CnnPass
from .driver import DriverError
from .execute import MismatchError, golden_run, locate, run_checked
from .reports import op_row
from .rtlsim import RtlSim, SimError

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
        except Exception:  # noqa: BLE001 - the trace is a best effort; the report is what matters
            pass
        src = self.work / "dump.vcd" if self.sim == "verilator" else self.build_dir / f"{self.toplevel}.fst"
        if src.exists():
            self.dest = self.dest_stem + src.suffix
            shutil.copyfile(src, self.dest)
        super().close()


class TimedAccelSim(TimedSim, AccelSim):
    """The Accelerator (engine + reorganization unit + predictor array + update unit,
    rtl/accelerator.py) with TimedSim's data movement and timing: the simulator every
    RTL-backend training run uses.  Engine-only operations see empty descriptor ROMs."""


class AccelWaveSim(WaveSim, AccelSim):
    """The Accelerator with waveforms on (the rerun of a failing operation)."""


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
            self.sim = TimedAccelSim(cfg, backend, timing=self.timing)
            self.sim.load_streams([], [], [], 0, 0)
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

    def run(self, img, op, step: int) -> list[dict]:
        """Run one operation (and the weight updates that follow it, ``op.updates``):
        one row per operation and per update, every one checked."""
        cfg = self.cfg
        what = f"step {step}, layer {op.layer}, {op.kind}"
        uds = op.updates
        post = (lambda mem: [HW.apply_update_golden(mem, ud) for ud in uds]) if uds else None
        upd_model = [PM.update_from_mem_cycles(cfg, ud["c_out"], ud["k"]) for ud in uds]
        t0 = time.perf_counter()
        if self.sim is None:
            # sparse programs' cycles depend on the masks and data: model them on the image before the op
            model = cyclemodel.program_cycles(cfg, op.prog, img.mem)
            mem, err = golden_run(cfg, img, op.prog)
            if err:
                raise CheckFailed(f"{what}: the golden model reports error status {err}",
                                  dict(step=step, layer=op.layer, op=op.kind, check="error_status", error=err))
            if post:
                post(mem)
            img.mem[:img.top] = mem[:img.top]
            counters = golden_counters(cfg, op.prog)
            cycles = model
            stall = None
            upd_cycles = upd_model
            self.timing["golden_s"] += time.perf_counter() - t0
        else:
            fault_addr = self._fault_addr(img, op, step)
            if uds:
                self.sim.load_streams([], HW.pack_updates(cfg, uds), [], 0, 0)
            try:
                res = run_checked(self.sim, cfg, img, op.prog, what=what, fault_addr=fault_addr, golden_post=post)
                if uds:
                    self._check_updates(res.counters, uds, upd_model, what)
            except MismatchError as e:
                self.timing["checked_run_s"] += time.perf_counter() - t0
                raise self._failure(img, op, step, fault_addr, e, post) from None
            finally:
                if uds:
                    self.sim.load_streams([], [], [], 0, 0)
            counters = res.counters
            cycles, model, stall = counters["busy_cycles"], res.model_cycles, counters["stall_cycles"]
            # one update per operation in training: its measured span; several: the model's split
            upd_cycles = [counters["pred_busy_cycles"]] if len(uds) == 1 else upd_model
            self.timing["checked_run_s"] += time.perf_counter() - t0
        rows = [op_row(op.layer, op.kind, cycles, model, counters=counters, instructions=len(op.prog),
                       stall_cycles=stall, energy_pj=self._energy_pj(counters))]
        for ud, c, mc in zip(uds, upd_cycles, upd_model):
            rows.append(HW.update_row(cfg, ud, op.layer, c, mc,
                                      HW.update_energy_pj(cfg, ud) if self.sim is not None else None))
        return rows

    @staticmethod
    def _check_updates(counters: dict, uds: list, model: list, what: str):
        """The update unit's counters against the model: weights updated, layers
        finished, and its working cycles (``pred_busy_cycles``: nothing else of the
        predictor side runs in a BP update)."""
        want = {"upd_elems": sum(ud["c_out"] * ud["k"] for ud in uds), "upd_layers": len(uds),
                "pred_busy_cycles": sum(model)}
        bad = {k: (v, counters[k]) for k, v in want.items() if counters[k] != v}
        if bad:
            raise MismatchError(f"{what}: weight-update counters differ from the model "
                                f"(name: (model, RTL)): {bad}")

    def run_gp(self, cap, step: int) -> tuple[list[dict], dict]:
        """One ADA-GP GP step on the Accelerator: the forward on the engine, the
        reorganization unit, the predictor array and the update unit in one run.
        Returns the rows (forward per layer, then the predictor side's extra cycles)
        and the values the step left in memory (``y_*``, ``w16_*``, ``w8_*``) plus the
        golden predicted gradients (``pred``)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        try:
            run = HW.gp_program(cfg, cap, steps=1)
        except (HW.AccelError, ValueError) as e:
            raise TrainError(f"step {step}: the GP step does not fit preset {cfg.name!r}: {e}") from None
        want, gold = HW.gp_expected(run, cap)
        model = HW.gp_model_counters(run)
        if self.sim is None:
            got, counters = want, dict(model)
            self.timing["golden_s"] += time.perf_counter() - t0
        else:
            try:
                rep = HW.run_gp_on(self.sim, run)
            except HW.AccelError as e:
                raise CheckFailed(f"CHECK FAILED at step {step}, GP step: {e}",
                                  dict(step=step, layer="all", op="gp", check="error_status", message=str(e)))
            mem = self.sim.dump(0, run.img.top)      # also keeps the simulator's memory shadow exact
            got = {n: mem[run.img.tensors[n].base:run.img.tensors[n].base + run.img.tensors[n].size]
                   .reshape(run.img.tensors[n].shape) for n in want}
            counters = dict(rep["counters"], run_cycles=rep["run_cycles"])
            self.timing["checked_run_s"] += time.perf_counter() - t0
            self._check_gp(run, step, want, got, model, counters)
        fwd_rows = []
        for Ld, prog in zip(run.layers, run.fwd_instr):
            c = golden_counters(cfg, prog)
            mc = cyclemodel.program_cycles(cfg, prog)
            fwd_rows.append(op_row(Ld["name"], "fwd", mc, mc, counters=c, instructions=len(prog),
                                   energy_pj=0.0 if self.sim is not None else None))
        # the RTL's engine busy cycles are checked == the sum of the per-layer models above
        extra = counters["run_cycles"] - sum(r["cycles"] for r in fwd_rows)
        upd = counters["upd_elems"]
        energy_pj = None
        if self.sim is not None:
            from .energy import energy
            pmacs = sum(HW.predictor_macs(cfg, Ld["geom"].cout, Ld["cap"].fan_in) for Ld in run.layers)
            e = energy({**counters, "predictor_macs": pmacs,
                        "predictor_dram_bytes": 5 * upd}, cfg)   # w16 read + write, w8 copy write
            energy_pj = round(e["total_pj"], 1)
        gp_row = op_row("predictor", "gp_predict_update", extra,
                        model["run_cycles"] - sum(r["cycles"] for r in fwd_rows), dram_bytes=5 * upd,
                        energy_pj=energy_pj, gate_cycles=counters["gate_cycles"])
        return fwd_rows + [gp_row], dict(got, pred=gold)

    def _check_gp(self, run, step: int, want: dict, got: dict, model: dict, counters: dict):
        diff = HW.first_difference(want, got)
        bad = {k: (v, counters[k]) for k, v in model.items() if counters[k] != v}
        if diff is None and not bad:
            return
        report = dict(step=step, layer="all", op="gp")
        if diff is not None:
            name, idx, exp, gv, n = diff
            report.update(check="bit_exact", tensor=name, first_index=f"{name}{idx}", expected=exp, got=gv,
                          slots_differ=n, layer=name.split("_", 1)[1])   # y_/w16_/w8_<layer>
            msg = (f"CHECK FAILED at step {step}, GP step, layer {report['layer']}: {n} value(s) of {name} "
                   f"differ; first at {name}{idx}: expected {exp}, got {gv}")
        else:
            report.update(check="counters", differ=bad)
            msg = f"CHECK FAILED at step {step}, GP step: counters differ from the model (model, RTL): {bad}"
        stem = os.path.join(self.out_dir, f"fail_step{step}_gp")
        waves = None
        try:
            with AccelWaveSim(self.cfg, self.backend, stem) as ws:
                try:
                    HW.run_gp_on(ws, run)
                except HW.AccelError:
                    pass
            waves = ws.dest
        except SimError as e:
            report["waves_error"] = str(e)
        report["waves"] = waves
        raise CheckFailed(msg + (f"\nwaveform of the failing operation: {waves}" if waves else "\nno waveform written"),
                          report, waves)

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

    def _failure(self, img, op, step, fault_addr, err: MismatchError, post=None) -> CheckFailed:
        """Structured report of a mismatch (the RTL memory still holds its result)
        and a waveform of the failing operation rerun alone."""
        cfg = self.cfg
        report = dict(step=step, layer=op.layer, op=op.kind, message=str(err))
        want, _ = golden_run(cfg, img, op.prog)
        if post:
            post(want)
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
            with AccelWaveSim(cfg, self.backend, stem) as ws:
                ws.load_streams([], HW.pack_updates(cfg, op.updates), [], 0, 0)
                try:
                    run_checked(ws, cfg, img, op.prog, what="waveform rerun", fault_addr=fault_addr,
                                golden_post=post)
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
    PyTorch's layout, its weight gradients, the tolerance check, and (with
    ``masters``) the weight-update unit's BP updates: each layer's 16-bit master
    weights in the image, updated from its int8 weight gradient right after the
    backward-weight operation that wrote it."""

    masters: dict | None = None      # layer -> (w16 [C_out, k], frac); set by the trainer
    lr_log2: int = 0

    def backward_stages(self):
        stages = super().backward_stages()
        if self.masters is not None:
            for ops, _ in stages:
                for op in ops:
                    if op.kind == "bwd_weight":
                        op.updates = [self._update(op.layer, len(op.prog))]
        return stages

    def _update(self, name: str, after: int) -> dict:
        w16, fm = self.masters[name]
        t = self.img.put("w16_" + name, w16)
        dw = self.img.tensors["dw_" + name]
        return HW.bp_update_descriptor(self.cfg, name, t.base, dw.base, w16.shape[0], w16.shape[1], fm,
                                       self.frac["dw_" + name], self.lr_log2, after)

    def updated_masters(self) -> dict:
        return {n: (self.img.get("w16_" + n).astype(np.int64), self.masters[n][1]) for n in self.masters}

    def activations(self) -> dict:
        f, img = self.frac, self.img
        d = lambda n: nx.dequantize(torch.from_numpy(img.get(n)), f[n]).permute(1, 0, 2, 3)
        return {"conv1": d("h1"), "conv2": d("h2"), "fc": self.logits()}

    def weight_grads(self) -> dict:
        """dL/dW of the mean loss over the batch, from the engine (dequantized)."""
        m = self.model
        eng = self.engine_values()
        shapes = {"conv1": m.conv1.weight.shape, "conv2": m.conv2.weight.shape, "fc": m.fc.weight.shape}
        return {n: eng["dw_" + n].reshape(shapes[n]) / (1 if self.mean_loss else self.batch) for n in LAYERS}

    def check_tolerance(self, step: int, backward: bool) -> dict:
        if backward:
            errs = self.errors_vs_torch()
        else:
            act = self.activations()
            eng = {"h1": act["conv1"], "h2": act["conv2"], "logits": act["fc"]}
            errs = {k: rel_err(v, self.ref[k]) for k, v in eng.items()}
        return check_errors(step, errs)


def check_errors(step: int, errs: dict) -> dict:
    """Each tensor's max |engine - fp32| / max |fp32| within its stated tolerance
    (activations and logits FWD_TOL; weight gradients and predicted gradients GRAD_TOL)."""
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
                "w_fc": "fc", "logits": "fc", "g_logits": "fc", "dw_fc": "fc", "g_h2": "fc",
                "w16_conv1": "conv1", "w16_conv2": "conv2", "w16_fc": "fc"}


def _programs(p: StepPass, phase: str, backward: bool):
    """Build a pass's programs; a DriverError is re-raised naming the layer and the limit."""
    try:
        if not backward:
            return p.forward_ops()
        return p.backward_stages()
    except (DriverError, HW.UpdateError) as e:
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
    p = new_step_pass(cfg, model, data.x_train[idx], data.y_train[idx], HW.masters_of(model), 0)
    fwd = sum(cyclemodel.program_cycles(cfg, op.prog) for op in _programs(p, "forward", False))
    p.put_logit_grad()    # allocates the gradient tensors the backward programs address
    ops = [op for ops, _ in _programs(p, "backward", True) for op in ops]
    bwd = sum(cyclemodel.program_cycles(cfg, op.prog) for op in ops)
    upd = sum(PM.update_from_mem_cycles(cfg, ud["c_out"], ud["k"]) for op in ops for ud in op.updates)
    return {"fwd": fwd, "bwd": bwd, "update": upd}


def new_step_pass(cfg, model, x, y, masters: dict | None, lr_l2: int, sparse: bool = False) -> StepPass:
    """A training step's pass: mean-loss gradients, int8 weight gradients (what the
    update unit reads) and, with ``masters``, the BP weight updates on the update unit."""
    p = StepPass(cfg, model, x, y, sparse=sparse, mean_loss=True, dw_int8=True)
    p.masters, p.lr_log2 = masters, lr_l2
    return p
