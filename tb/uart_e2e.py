"""cocotb test of the board top over its UART pins: the host driver (cosim/host.py)
speaks the protocol bit-serially to ``BoardTop`` on Verilator, runs GEMM programs and
checks results bit-exact against the golden model (and the golden model against
numpy), the data-volume counters against their definitions, and bad input.

Run by tests/test_uart_e2e.py, which passes the configuration in the environment.
"""
import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, with_timeout

from cosim import host as hostmod
from model_sw import numerics
from rtl import isa, uart
from rtl.config import AcceleratorConfig

CFG = AcceleratorConfig(**json.loads(os.environ["BOARD_CFG"]))
DIV = int(os.environ["BOARD_DIV"])
PROG_WORDS = int(os.environ["BOARD_PROG_WORDS"])


class CocotbUARTLink:
    """Drives ``rx`` and samples ``tx`` of the DUT, one bit per DIV clocks."""

    def __init__(self, dut, div: int, timeout_cycles: int = 400_000):
        self.dut, self.div, self.timeout = dut, div, timeout_cycles

    async def write(self, data: bytes) -> None:
        for byte in data:
            for b in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = b
                await ClockCycles(self.dut.clk, self.div)

    async def read(self, n: int) -> bytes:
        out = []
        for _ in range(n):
            if int(self.dut.tx.value):
                try:
                    await with_timeout(FallingEdge(self.dut.tx), self.timeout * 10, "ns")
                except Exception:
                    raise hostmod.LinkTimeout(f"no reply byte within {self.timeout} cycles") from None
            await ClockCycles(self.dut.clk, self.div // 2)
            byte = 0
            for i in range(8):
                await ClockCycles(self.dut.clk, self.div)
                byte |= int(self.dut.tx.value) << i
            await ClockCycles(self.dut.clk, self.div)
            if not int(self.dut.tx.value):
                raise hostmod.HostError("tx stop bit low")
            out.append(byte)
        return bytes(out)


async def setup(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 5)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 5)
    return hostmod.Host(CocotbUARTLink(dut, DIV), CFG, PROG_WORDS, max_words=64)


def numpy_reference(a, b, shift, relu):
    """D and mask from numpy's integer matmul and the one requantization rule."""
    out, mask = numerics.requantize(a.astype(np.int64) @ b.astype(np.int64), shift, CFG.op_bits, relu)
    return np.asarray(out), np.asarray(mask).astype(np.int64)


@cocotb.test()
async def gemm_over_uart(dut):
    h = await setup(dut)
    info = await h.ping()
    assert info["rows"] == CFG.rows and info["cols"] == CFG.cols
    for seed, (m, n, k) in enumerate([(6, 5, 20), (4, 4, 1), (9, 3, 12)]):
        img, prog, outs = hostmod.gemm_case(CFG, m, n, k, seed=seed)
        want = img.mem.copy()
        hostmod.golden_run(CFG, prog, want)
        # golden vs numpy (independent of the engine's definition of gathers)
        d_np, mask_np = numpy_reference(img.get("A"), img.get("B"), 4, True)
        assert np.array_equal(img.get("D", want), d_np), "golden model != numpy"
        assert np.array_equal(img.get("MASK", want), mask_np), "golden mask != numpy"
        res = await h.run_program(img, prog, outs)
        assert np.array_equal(res["D"], img.get("D", want)), (m, n, k, res["D"], img.get("D", want))
        assert np.array_equal(res["MASK"], img.get("MASK", want)), (m, n, k)
        c = res["counters"]
        # counters by their definitions (one instruction, operands read once)
        assert c["macs"] == m * n * k, c
        assert c["rd_bytes"] == (m * k + k * n) * CFG.op_bytes, c
        assert c["wr_bytes"] == m * n * CFG.op_bytes, c
        assert c["mask_bits"] == m * n, c
        assert c["retired"] == len(prog) and c["errors"] == 0, c
        assert c["compute_cycles"] == -(-m // CFG.rows) * -(-n // CFG.cols) * k, c
        assert 0 < c["busy_cycles"] <= c["cycles"], c
        dut._log.info(f"GEMM {m}x{n}x{k}: bit-exact; busy_cycles={c['busy_cycles']}")
        st = await h.status()
        assert st["done"] and not st["running"] and st["pc"] == len(prog), st


@cocotb.test()
async def sparse_gemm_over_uart(dut):
    """The board memory serves the engine's mask reads and zero writes: a GEMM with
    output compaction (ocompact) and hardware masking equals dense-then-mask."""
    from cosim import driver
    h = await setup(dut)
    m, n, k = min(CFG.rows, CFG.cols), 3 * CFG.cols, 2 * CFG.rows + 8
    rng = np.random.default_rng(7)
    img = driver.MemoryImage(CFG)
    lo, hi = -(1 << (CFG.op_bits - 1)), 1 << (CFG.op_bits - 1)
    a = img.put("A", rng.integers(lo, hi, (m, k)))
    b = img.put("B", rng.integers(lo, hi, (k, n)))
    keep = (rng.random((m, n)) < 0.4).astype(np.int64)
    keep[:, :CFG.cols] = 0                        # a whole tile column of outputs masked away
    om = img.put("OMASK", keep)
    d = img.put("D", np.full((m, n), 77))         # stale values the zero writes must clear
    prog = driver.gemm_program(CFG, m, n, k, driver.matrix_desc(a.base, k, 1),
                               driver.matrix_desc(b.base, 1, n), d_addr=d.base, d_si=n, shift=4,
                               om_addr=om.base, om_si=n, om_sj=1, ocompact=True)
    want = img.mem.copy()
    hostmod.golden_run(CFG, prog, want)
    dense, _ = numpy_reference(img.get("A"), img.get("B"), 4, False)
    assert np.array_equal(img.get("D", want), dense * keep), "golden model != numpy dense x mask"
    res = await h.run_program(img, prog, {"D": d})
    assert np.array_equal(res["D"], dense * keep), (res["D"], dense * keep)
    assert res["counters"]["errors"] == 0
    dut._log.info(f"sparse GEMM {m}x{n}x{k} (ocompact): bit-exact; busy_cycles={res['counters']['busy_cycles']}")


async def expect_error(coro, status=None, text=None):
    try:
        await coro
    except hostmod.HostError as e:
        if status is not None:
            assert e.status == status, (e.status, str(e))
        if text is not None:
            assert text in str(e), str(e)
        return e
    raise AssertionError("no HostError raised")


@cocotb.test()
async def bad_input(dut):
    h = await setup(dut)
    await expect_error(h.command(0x99), uart.ST_BAD_OPCODE, "unknown opcode")
    frame = hostmod.request(uart.OP_READ_MEM, 0, 1)
    await h.link.write(frame[:-1] + bytes([(frame[-1] + 1) & 0xFF]))
    status, csum = await h.link.read(2)
    assert status == uart.ST_BAD_CHECKSUM and csum == status
    await expect_error(h.read_mem(CFG.mem_words - 1, 2), uart.ST_BAD_RANGE, "out of range")
    await expect_error(h.write_mem(CFG.mem_words, [1]), uart.ST_BAD_RANGE)
    await expect_error(h.run(0), uart.ST_BAD_RANGE)
    capacity = PROG_WORDS // -(-isa.instr_width(CFG) // 32)
    await expect_error(h.run(capacity + 1), uart.ST_BAD_RANGE)
    # an instruction the engine rejects (A panels larger than scratchpad A): engine error
    bad = {"opcode": isa.OP_GEMM, "m": CFG.rows * 2, "n": 1, "k": CFG.spad_a_words,
           "a": {}, "b": {}, "d_addr": 0, "d_si": 1, "d_sj": 1}
    await h.write_program([bad])
    await h.run(1)
    e = await expect_error(h.wait(), isa.ERR_SPAD_A, "scratchpad A")
    c = await h.counters()
    assert c["errors"] == 1 and c["retired"] == 1, c
    # the next RUN resets the core: a good program runs clean afterwards
    img, prog, outs = hostmod.gemm_case(CFG, 3, 3, 3, seed=9)
    want = img.mem.copy()
    hostmod.golden_run(CFG, prog, want)
    res = await h.run_program(img, prog, outs)
    assert np.array_equal(res["D"], img.get("D", want))
    # a host-side configuration mismatch is caught by PING
    other = hostmod.Host(h.link, CFG.replace(rows=CFG.rows * 2), PROG_WORDS)
    await expect_error(other.ping(), None, "board configuration")
    dut._log.info(f"bad input answered: {e}")
