"""End to end over the UART: BoardTop (engine + on-chip memory + program buffer +
bridge) on Verilator, driven bit-serially by the host driver (tb/uart_e2e.py)."""
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
CFG = preset("small").replace(mem_addr_bits=10)   # 1024 on-chip slots: a quick build
DIV = 4                                            # clocks per UART bit
PROG_WORDS = 256


def test_uart_end_to_end():
    from cocotb_tools.runner import get_runner
    build = ROOT / "sim_build" / "board_top_small_m10"
    build.mkdir(parents=True, exist_ok=True)
    src = build / "board_top.v"
    text = verilog.convert(BoardTop(CFG, clk_hz=DIV * 1e6, baud=1e6, prog_words=PROG_WORDS),
                           name="board_top", emit_src=False)
    if not src.exists() or src.read_text() != text:
        src.write_text(text)
    os.environ["PATH"] = sim_env_path()
    old_mf = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines"
    try:
        runner = get_runner("verilator")
        runner.build(sources=[src], hdl_toplevel="board_top", build_dir=build,
                     build_args=["-Wno-fatal", "-Wno-WIDTH", "-O1"], always=False)
    finally:
        if old_mf is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old_mf
    env = {"BOARD_CFG": json.dumps(dataclasses.asdict(CFG)), "BOARD_DIV": str(DIV),
           "BOARD_PROG_WORDS": str(PROG_WORDS), "PYTHONPATH": str(ROOT)}
    xml = runner.test(test_module="tb.uart_e2e", hdl_toplevel="board_top", build_dir=build,
                      test_dir=build, extra_env=env)
    cases = ET.parse(xml).getroot().iter("testcase")
    results = {c.get("name"): [f.get("message") for f in c.iter("failure")] for c in cases}
    assert set(results) == {"gemm_over_uart", "sparse_gemm_over_uart", "bad_input"}, results
    failed = {k: v for k, v in results.items() if v}
    assert not failed, failed
