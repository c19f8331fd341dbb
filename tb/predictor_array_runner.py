"""Run the cocotb bench of the PredictorArray (tb/predictor_array_tb.py) on its Verilog,
built once per (configuration, simulator) through tb/unit_runner.py (cached under
sim_build/ by a hash of the Verilog).  Verilator's slow-path code is built at -O0: the
8x8 array's model builds minutes faster and runs as fast.
"""
from __future__ import annotations

import dataclasses
import functools

from amaranth.back import verilog

from predictor_hw.predictor_array import PredictorArray
from rtl.config import AcceleratorConfig
from .unit_runner import run_bench_raw

TOP = "predictor_array"


@functools.lru_cache(maxsize=8)
def predictor_array_verilog(cfg: AcceleratorConfig) -> str:
    return verilog.convert(PredictorArray(cfg), name=TOP, emit_src=False)


def run_case(case: dict, sim: str = "verilator") -> dict:
    """Run the bench on one case (see tb/predictor_array_tb.py); returns
    dict(results=[per job], build_s, sim_s, work)."""
    cfg = AcceleratorConfig(**case["cfg"])
    results, build_s, sim_s, work = run_bench_raw(predictor_array_verilog(cfg), TOP, "tb.predictor_array_tb",
                                                  case, cfg.name, sim, opt_slow="-O0")
    return dict(results=results, build_s=build_s, sim_s=sim_s, work=str(work))


def cfg_dict(cfg: AcceleratorConfig) -> dict:
    return dataclasses.asdict(cfg)
