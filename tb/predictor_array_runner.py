"""Build the PredictorArray's Verilog once per (configuration, simulator) and run the
cocotb bench (tb/predictor_array_tb.py) on it through cocotb_tools.runner.

Builds are cached under sim_build/ by a hash of the Verilog (a later run only
re-runs the simulation), with the same Verilator flags as cosim.rtlsim.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from amaranth.back import verilog

from cosim.rtlsim import ROOT, SimError, check_simulator, icarus_kick, sim_env_path
from predictor_hw.predictor_array import PredictorArray
from rtl.config import AcceleratorConfig

TOP = "predictor_array"
MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines OPT_FAST=-O2 OPT_SLOW=-O0"


@functools.lru_cache(maxsize=8)
def predictor_array_verilog(cfg: AcceleratorConfig) -> str:
    return verilog.convert(PredictorArray(cfg), name=TOP, emit_src=False)


def _runner(sim: str):
    from cocotb_tools.runner import get_runner
    os.environ["PATH"] = sim_env_path()
    return get_runner(sim)


def build(cfg: AcceleratorConfig, sim: str = "verilator", build_root=ROOT / "sim_build"):
    """Return (runner, build_dir, seconds spent building: 0.0 when cached)."""
    check_simulator(sim)
    v = predictor_array_verilog(cfg)
    if sim == "icarus":
        v = icarus_kick(v)
    key = hashlib.sha256((v + sim).encode()).hexdigest()[:16]
    bdir = Path(build_root) / f"{TOP}-{sim}-{cfg.name}-{key}"
    bdir.mkdir(parents=True, exist_ok=True)
    stamp = bdir / "built.ok"
    cached = stamp.exists()
    src = bdir / f"{TOP}.v"
    if not cached:
        src.write_text(v)
    runner = _runner(sim)
    args = ["-Wno-fatal", "-Wno-WIDTH", "-O2"] if sim == "verilator" else []
    old_mf = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = MAKEFLAGS
    if cached:   # the runner still needs its settings, but nothing is executed
        runner._execute = lambda cmds, cwd: None
    t0 = time.perf_counter()
    try:
        runner.build(sources=[src], hdl_toplevel=TOP, build_args=args, build_dir=bdir, always=True,
                     timescale=("1ns", "1ps"), log_file=None if cached else bdir / "build.log")
    except (SystemExit, Exception) as e:
        log = bdir / "build.log"
        raise SimError(f"{sim} build of {TOP} failed ({e}); log {log}:\n"
                       f"{log.read_text()[-3000:] if log.exists() else ''}") from None
    finally:
        if old_mf is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old_mf
        if cached:
            del runner._execute
    if cached:
        return runner, bdir, 0.0
    stamp.write_text("ok")
    return runner, bdir, time.perf_counter() - t0


def run_case(case: dict, sim: str = "verilator") -> dict:
    """Run the bench on one case (see tb/predictor_array_tb.py); returns
    dict(results=[per job], build_s, sim_s)."""
    cfg = AcceleratorConfig(**case["cfg"])
    runner, bdir, build_s = build(cfg, sim)
    work = Path(tempfile.mkdtemp(prefix="pa-run-", dir=bdir))
    case_path, res_path = work / "case.json", work / "result.json"
    case_path.write_text(json.dumps(case))
    env = {"PA_CASE": str(case_path), "PA_RESULT": str(res_path),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    try:
        runner.test(test_module="tb.predictor_array_tb", hdl_toplevel=TOP, build_dir=bdir, test_dir=work,
                    extra_env=env, log_file=work / "sim.log", results_xml=str(work / "results.xml"))
    except (SystemExit, Exception) as e:
        log = work / "sim.log"
        raise SimError(f"{sim} bench failed ({e!r}); log {log}:\n"
                       f"{log.read_text()[-4000:] if log.exists() else ''}") from None
    if not res_path.exists():
        raise SimError(f"the bench wrote no result; log {work / 'sim.log'}")
    return dict(results=json.loads(res_path.read_text()), build_s=build_s, sim_s=time.perf_counter() - t0,
                work=str(work))


def cfg_dict(cfg: AcceleratorConfig) -> dict:
    return dataclasses.asdict(cfg)
