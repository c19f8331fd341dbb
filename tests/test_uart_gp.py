"""End to end over the UART with the Accelerator core: BoardTop(core="accelerator")
(engine + reorganization unit + predictor array + weight update, on-chip memory, program
and stream buffers, bridge) on Verilator, an ADA-GP GP step loaded, run and checked by the
host driver bit-serially (tb/uart_gp_e2e.py)."""
import dataclasses
import json
from pathlib import Path

from cosim.simlink import run_cocotb_board
from rtl.board import BoardTop
from rtl.config import preset

ROOT = Path(__file__).resolve().parents[1]
CFG = preset("small").replace(mem_addr_bits=14)   # 16K slots, as on the ULX3S: a batch-2 GP step fits
DIV = 2                                            # clocks per UART bit (the fastest the UART takes)
PROG_WORDS = 256                                   # 5 accelerator instructions of 48 words
BATCH = 2


def test_gp_step_over_uart():
    env = {"BOARD_CFG": json.dumps(dataclasses.asdict(CFG)), "BOARD_DIV": str(DIV),
           "BOARD_PROG_WORDS": str(PROG_WORDS), "BOARD_GP_BATCH": str(BATCH)}
    run_cocotb_board(BoardTop(CFG, clk_hz=DIV * 1e6, baud=1e6, prog_words=PROG_WORDS, core="accelerator"),
                     ROOT / "sim_build" / "board_top_accel_small_m14", "tb.uart_gp_e2e", env,
                     {"gp_step_over_uart", "accel_bad_input"},
                     makeflags="CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines "
                               "OPT_FAST=-O2 OPT_SLOW=-O0", opt="-O2", ports_only=True)
