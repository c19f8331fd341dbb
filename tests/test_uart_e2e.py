"""End to end over the UART: BoardTop (engine + on-chip memory + program buffer +
bridge) on Verilator, driven bit-serially by the host driver (tb/uart_e2e.py)."""
import dataclasses
import json
from pathlib import Path

from cosim.simlink import run_cocotb_board
from rtl.board import BoardTop
from rtl.config import preset

ROOT = Path(__file__).resolve().parents[1]
CFG = preset("small").replace(mem_addr_bits=10)   # 1024 on-chip slots: a quick build
DIV = 4                                            # clocks per UART bit
PROG_WORDS = 256


def test_uart_end_to_end():
    env = {"BOARD_CFG": json.dumps(dataclasses.asdict(CFG)), "BOARD_DIV": str(DIV),
           "BOARD_PROG_WORDS": str(PROG_WORDS)}
    run_cocotb_board(BoardTop(CFG, clk_hz=DIV * 1e6, baud=1e6, prog_words=PROG_WORDS),
                     ROOT / "sim_build" / "board_top_small_m10", "tb.uart_e2e", env,
                     {"gemm_over_uart", "sparse_gemm_over_uart", "bad_input"})
