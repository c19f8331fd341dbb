"""cocotb test of the board top with the Accelerator core over its UART pins: the host
driver (cosim/host.py) loads an ADA-GP GP step of the digits CNN captured from model_sw
(cosim.accel_sim.gp_program) — memory, reorganization and update descriptors, predictor
weights, shifts, program — runs it, reads back every layer's output and updated weights
and the counters, and checks them against cosim.accel_sim.gp_golden (bit-exact) and
cosim.predictor_model.gp_timeline (the memory-timing-independent counters, exactly);
then bad input (SET/WRITE_BUF ranges, a predictor-side error status, the next run clean
with a plain GEMM, a host/board core mismatch).

Run by tests/test_uart_gp.py, which passes the configuration in the environment.
"""
import json
import os

import cocotb
import numpy as np

from cosim import accel_sim as AS
from cosim import host as hostmod
from cosim.simlink import cocotb_board_host, expect_host_error
from rtl import isa, uart
from rtl.board import REGS, reg_limits, stream_buffers
from rtl.config import AcceleratorConfig

CFG = AcceleratorConfig(**json.loads(os.environ["BOARD_CFG"]))
DIV = int(os.environ["BOARD_DIV"])
PROG_WORDS = int(os.environ["BOARD_PROG_WORDS"])
BATCH = int(os.environ["BOARD_GP_BATCH"])


async def setup(dut, core="accelerator"):
    return await cocotb_board_host(dut, CFG, DIV, PROG_WORDS, max_words=256, core=core)


expect_error = expect_host_error


@cocotb.test()
async def gp_step_over_uart(dut):
    from cosim.bench_predictor import capture_digits
    h = await setup(dut)
    info = await h.ping()
    assert info["rows"] == CFG.rows, info
    cap = capture_digits(steps=6, batch=BATCH)
    # g_shift = 0: the weight change is the predicted gradient itself (no rounding hides
    # a wrong prediction)
    run = AS.gp_program(CFG, cap, steps=1, g_shift_override=0)
    gold = AS.gp_golden(run, cap)["steps"][0]
    for Ld in run.layers:                 # the golden engine output is model_sw's
        assert np.array_equal(gold[Ld["name"]]["y"], Ld["cap"].y_post), Ld["name"]
        assert np.abs(gold[Ld["name"]]["pred"]).sum() > 0, f"{Ld['name']}: zero prediction tests nothing"
    res = await hostmod.gp_step(h, run)
    bad = hostmod.check_gp_step(run, gold, res)
    assert not bad, bad
    for Ld in run.layers:                 # and the weights did move
        assert not np.array_equal(res["w16_" + Ld["name"]],
                                  Ld["cap"].w_master.reshape(res["w16_" + Ld["name"]].shape))
    st = await h.status()
    assert st["done"] and not st["running"] and st["pc"] == len(run.prog), st
    c = res["counters"]
    dut._log.info(f"GP step batch {BATCH} over UART: bit-exact; counters {json.dumps(c)}")


@cocotb.test()
async def accel_bad_input(dut):
    from predictor_hw import reorg as RU
    h = await setup(dut)
    lim = dict(zip(REGS, reg_limits(CFG)))
    await expect_error(h.set_reg("n_rdesc", lim["n_rdesc"] + 1), uart.ST_BAD_RANGE)
    await expect_error(h.command(uart.OP_SET, len(REGS), 0), uart.ST_BAD_RANGE)
    b = stream_buffers(CFG)["udesc"]
    await expect_error(h.command(uart.OP_WRITE_BUF, (b.index << uart.BUF_SHIFT) | (b.depth - 1), 2,
                                 bytes(8)), uart.ST_BAD_RANGE)
    await expect_error(h.command(uart.OP_WRITE_BUF, 7 << uart.BUF_SHIFT, 1, bytes(4)), uart.ST_BAD_RANGE)
    # a layer wider than the reorganization unit: its error status (bits 4-7) stops the
    # run, and the host names the unit
    d = RU.reorg_descriptor(CFG, kind="conv", base=0, batch=2, c_out=8, h=8, w=8, y_frac=3, k=9, layer_id=1)
    d["c_out"] = CFG.pred_max_cout + 1
    ins = {"opcode": isa.OP_GEMM, "m": 1, "n": 1, "k": 1, "a": {}, "b": {}, "d_addr": 0, "d_si": 1, "d_sj": 1}
    from rtl import accelerator as acc
    await h.load_streams([RU.pack_desc(CFG, d)], [], [], 0, 0)
    await h.write_program([acc.encode(CFG, ins, wait_arm=1, arm_id=1)])
    await h.run(1)
    e = await expect_error(h.wait(), None, "reorg 1")
    assert acc.error_fields(e.status)["reorg"] == 1, e.status
    # the next RUN resets the core: a plain GEMM (no fences, no predictor streams) runs
    # clean on the Accelerator core, bit-exact against the golden model
    await h.load_streams([], [], [], 0, 0)
    img, prog, outs = hostmod.gemm_case(CFG, 6, 5, 20, seed=3)
    want = img.mem.copy()
    hostmod.golden_run(CFG, prog, want)
    res = await h.run_program(img, [acc.encode(CFG, ins) for ins in prog], outs)
    assert np.array_equal(res["D"], img.get("D", want)) and np.array_equal(res["MASK"], img.get("MASK", want))
    c = res["counters"]
    assert c["macs"] == 6 * 5 * 20 and c["errors"] == 0 and c["samples"] == 0 and c["upd_layers"] == 0, c
    # a host that thinks the board has the engine alone is refused by PING
    other = hostmod.Host(h.link, CFG, PROG_WORDS)
    await expect_error(other.ping(), None, "board configuration")
    await expect_error(other.write_buffer("rdesc", []), None, "Accelerator core")
    dut._log.info(f"bad input answered: {e}")
