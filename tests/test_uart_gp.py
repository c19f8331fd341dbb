"""End to end over the UART with the Accelerator core: BoardTop(core="accelerator")
(engine + reorganization unit + predictor array + weight update, on-chip memory, program
and stream buffers, bridge) on Verilator, an ADA-GP GP step loaded, run and checked by the
host driver bit-serially (tb/uart_gp_e2e.py)."""
import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from amaranth.back import verilog

from cosim.rtlsim import sim_env_path
from rtl.board import BoardTop
from rtl.config import preset

ROOT = Path(__file__).resolve().parents[1]
CFG = preset("small").replace(mem_addr_bits=14)   # 16K slots, as on the ULX3S: a batch-2 GP step fits
DIV = 2                                            # clocks per UART bit (the fastest the UART takes)
PROG_WORDS = 256                                   # 5 accelerator instructions of 48 words
BATCH = 2
MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines OPT_FAST=-O2 OPT_SLOW=-O0"


def test_gp_step_over_uart():
    from cocotb_tools.runner import get_runner
    build = ROOT / "sim_build" / "board_top_accel_small_m14"
    build.mkdir(parents=True, exist_ok=True)
    src = build / "board_top.v"
    text = verilog.convert(BoardTop(CFG, clk_hz=DIV * 1e6, baud=1e6, prog_words=PROG_WORDS,
                                    core="accelerator"), name="board_top", emit_src=False)
    if not src.exists() or src.read_text() != text:
        src.write_text(text)
    os.environ["PATH"] = sim_env_path()
    old_mf = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = MAKEFLAGS
    try:
        runner = get_runner("verilator")
        runner.build(sources=[src], hdl_toplevel="board_top", build_dir=build,
                     build_args=["-Wno-fatal", "-Wno-WIDTH", "-O2"], always=False)
    finally:
        if old_mf is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old_mf
    env = {"BOARD_CFG": json.dumps(dataclasses.asdict(CFG)), "BOARD_DIV": str(DIV),
           "BOARD_PROG_WORDS": str(PROG_WORDS), "BOARD_GP_BATCH": str(BATCH), "PYTHONPATH": str(ROOT)}
    xml = runner.test(test_module="tb.uart_gp_e2e", hdl_toplevel="board_top", build_dir=build,
                      test_dir=build, extra_env=env)
    cases = ET.parse(xml).getroot().iter("testcase")
    results = {c.get("name"): [f.get("message") for f in c.iter("failure")] for c in cases}
    assert set(results) == {"gp_step_over_uart", "accel_bad_input"}, results
    failed = {k: v for k, v in results.items() if v}
    assert not failed, failed
