"""Host driver for the board top's UART protocol (``rtl/uart.py``, ``docs/fpga.md``).

The driver is transport-agnostic and asynchronous: a *link* has ``async write(bytes)``
and ``async read(n) -> bytes`` (raising :class:`LinkTimeout` when the bytes do not
come).  ``SerialLink`` talks to a real board through pyserial; the tests use links that
drive the RTL's ``rx`` pin bit by bit in Amaranth's simulator or in cocotb.

    python -m cosim.host --port /dev/ttyUSB0 --preset small --board ulx3s   # GEMM on a board
"""
from __future__ import annotations

import argparse
import asyncio
import sys

import numpy as np

from rtl import isa, uart
from rtl.board import board_info, instr_words
from rtl.config import AcceleratorConfig
from rtl.engine import COUNTERS, COUNTER_BITS


class HostError(RuntimeError):
    """The board answered with an error status, a bad checksum, or not at all."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class LinkTimeout(HostError):
    pass


# ---- framing (the protocol's definition on the host side) -------------------------
def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def request(opcode: int, addr: int = 0, count: int = 0, payload: bytes = b"") -> bytes:
    """One request frame: opcode, addr (4 B LE), count (2 B LE), payload, checksum."""
    if not 0 <= opcode <= 0xFF:
        raise HostError(f"opcode {opcode} does not fit a byte")
    if not 0 <= addr < 1 << 32:
        raise HostError(f"address {addr} does not fit 32 bits")
    if not 0 <= count < 1 << 16:
        raise HostError(f"count {count} does not fit 16 bits (split the transfer)")
    body = bytes([opcode]) + addr.to_bytes(4, "little") + count.to_bytes(2, "little") + payload
    return body + bytes([checksum(body)])


def slot_bytes(cfg: AcceleratorConfig) -> int:
    return cfg.slot_bits // 8


def encode_program(cfg: AcceleratorConfig, prog: list[dict]) -> bytes:
    """Instructions as program-buffer bytes: each instruction is ``instr_words`` 32-bit
    words, least significant first."""
    n = instr_words(cfg)
    return b"".join(isa.encode(cfg, ins).to_bytes(4 * n, "little") for ins in prog)


class Host:
    """Commands of the bridge, each checked: a non-OK status raises :class:`HostError`."""

    def __init__(self, link, cfg: AcceleratorConfig, prog_words: int, max_words: int = 256):
        self.link, self.cfg, self.prog_words = link, cfg, prog_words
        self.max_words = max_words        # words per WRITE_MEM / READ_MEM frame

    async def command(self, opcode: int, addr: int = 0, count: int = 0, payload: bytes = b"",
                      reply: int = 0) -> bytes:
        await self.link.write(request(opcode, addr, count, payload))
        head = await self.link.read(1)
        status = head[0]
        if status != uart.ST_OK:
            tail = await self.link.read(1)
            if tail[0] != checksum(head):
                raise HostError(f"response checksum mismatch after status {status}")
            name = uart.STATUS_NAMES.get(status, f"status {status}")
            raise HostError(f"board rejected opcode 0x{opcode:02x} (addr={addr}, count={count}): "
                            f"{name}", status)
        body = await self.link.read(reply + 1)
        if body[-1] != checksum(head + body[:-1]):
            raise HostError(f"response checksum mismatch for opcode 0x{opcode:02x}")
        return body[:-1]

    async def ping(self) -> dict:
        r = await self.command(uart.OP_PING, reply=uart.PING_BYTES)
        magic = int.from_bytes(r[0:2], "little")
        if magic != uart.MAGIC:
            raise HostError(f"not an accelerator board (magic 0x{magic:04x})")
        info = r[3:]
        want = board_info(self.cfg, self.prog_words)
        if info != want:
            raise HostError(f"board configuration {list(info)} != host configuration {list(want)} "
                            "(rows, cols, op_bits, slot bytes, mem_addr_bits, instr words, "
                            "program words, counters)")
        return {"version": r[2], "rows": info[0], "cols": info[1]}

    async def write_mem(self, addr: int, values) -> None:
        sb = slot_bytes(self.cfg)
        vals = [int(v) & ((1 << (8 * sb)) - 1) for v in np.asarray(values, dtype=np.int64).ravel()]
        for i in range(0, len(vals), self.max_words):
            chunk = vals[i:i + self.max_words]
            await self.command(uart.OP_WRITE_MEM, addr + i, len(chunk),
                               b"".join(v.to_bytes(sb, "little") for v in chunk))

    async def read_mem(self, addr: int, n: int) -> np.ndarray:
        """``n`` slots from ``addr`` as signed values (the driver's memory-image convention)."""
        sb = slot_bytes(self.cfg)
        out = []
        for i in range(0, n, self.max_words):
            c = min(self.max_words, n - i)
            r = await self.command(uart.OP_READ_MEM, addr + i, c, reply=c * sb)
            out += [int.from_bytes(r[j * sb:(j + 1) * sb], "little", signed=True) for j in range(c)]
        return np.array(out, dtype=np.int64)

    async def write_program(self, prog: list[dict]) -> None:
        blob = encode_program(self.cfg, prog)
        words = len(blob) // 4
        if words > self.prog_words:
            raise HostError(f"program of {len(prog)} instructions needs {words} words; the "
                            f"program buffer holds {self.prog_words}")
        await self.command(uart.OP_WRITE_PROG, 0, words, blob)

    async def run(self, n_instr: int) -> None:
        await self.command(uart.OP_RUN, 0, n_instr)

    async def status(self) -> dict:
        r = await self.command(uart.OP_STATUS, reply=uart.STATUS_BYTES)
        return {"running": bool(r[0] & 1), "engine_busy": bool(r[0] & 2), "done": bool(r[0] & 4),
                "error": r[1] & 0xF, "pc": int.from_bytes(r[2:4], "little")}

    async def counters(self) -> dict:
        nb = COUNTER_BITS // 8
        r = await self.command(uart.OP_COUNTERS, reply=nb * len(COUNTERS))
        return {name: int.from_bytes(r[i * nb:(i + 1) * nb], "little")
                for i, name in enumerate(COUNTERS)}

    async def wait(self, polls: int = 1000) -> dict:
        """Poll STATUS until the program is done; raise on a timeout or an engine error."""
        for _ in range(polls):
            st = await self.status()
            if not st["running"]:
                if st["error"]:
                    raise HostError(f"engine error {st['error']}: "
                                    f"{isa.ERROR_NAMES.get(st['error'], '?')}", st["error"])
                return st
        raise HostError(f"program still running after {polls} status polls")

    async def run_program(self, image, prog: list[dict], outputs: dict) -> dict:
        """Load a memory image (``cosim.driver.MemoryImage``) and a program, run it, and
        read back ``outputs`` ({name: Tensor}); returns {name: array} and the counters."""
        top = max(image.top, 1)
        await self.write_mem(0, image.mem[:top])
        await self.write_program(prog)
        await self.run(len(prog))
        await self.wait()
        res = {name: (await self.read_mem(t.base, t.size)).reshape(t.shape)
               for name, t in outputs.items()}
        res["counters"] = await self.counters()
        return res


class SerialLink:
    """A real serial port (pyserial)."""

    def __init__(self, port: str, baud: int, timeout: float = 2.0):
        try:
            import serial
        except ImportError:
            raise HostError("pyserial is not installed: `.venv/bin/pip install pyserial`") from None
        self.ser = serial.Serial(port, baud, timeout=timeout)

    async def write(self, data: bytes) -> None:
        self.ser.write(data)

    async def read(self, n: int) -> bytes:
        data = self.ser.read(n)
        if len(data) != n:
            raise LinkTimeout(f"serial timeout: wanted {n} bytes, got {len(data)}")
        return data


def main(argv=None):
    from rtl import board
    ap = argparse.ArgumentParser(description="Run a checked GEMM on a board over its UART.")
    ap.add_argument("--port", required=True)
    ap.add_argument("--board", default="ulx3s", choices=list(board.BOARDS))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--baud", type=int, default=board.DEFAULT_BAUD)
    ap.add_argument("--m", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--k", type=int, default=16)
    args = ap.parse_args(argv)
    cfg = board.board_config(args.preset, args.board)
    spec = board.BOARDS[args.board]
    img, prog, outs = gemm_case(cfg, args.m, args.n, args.k, seed=0)
    want = img.mem.copy()
    golden_run(cfg, prog, want)

    async def go():
        h = Host(SerialLink(args.port, args.baud), cfg, spec.prog_words)
        print(await h.ping())
        return await h.run_program(img, prog, outs)
    try:
        res = asyncio.run(go())
    except HostError as e:
        print(f"cosim.host: error: {e}", file=sys.stderr)
        return 2
    ok = np.array_equal(res["D"], img.get("D", want))
    print("counters:", res["counters"])
    print("D matches the golden model" if ok else "D MISMATCH")
    return 0 if ok else 1


def gemm_case(cfg: AcceleratorConfig, m: int, n: int, k: int, seed: int = 0, shift: int = 4,
              relu: bool = True):
    """A random int GEMM D = relu(requant(A.B)) with its mask: (image, program, outputs)."""
    from . import driver
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (cfg.op_bits - 1)), 1 << (cfg.op_bits - 1)
    img = driver.MemoryImage(cfg)
    a = img.put("A", rng.integers(lo, hi, (m, k)))
    b = img.put("B", rng.integers(lo, hi, (k, n)))
    d = img.alloc("D", (m, n))
    mk = img.alloc("MASK", (m, n))
    prog = driver.gemm_program(cfg, m, n, k, driver.matrix_desc(a.base, k, 1),
                               driver.matrix_desc(b.base, 1, n), d_addr=d.base, d_si=n,
                               shift=shift, relu=relu, mask_addr=mk.base, mask_si=n)
    return img, prog, {"D": d, "MASK": mk}


def golden_run(cfg: AcceleratorConfig, prog: list[dict], mem: np.ndarray) -> np.ndarray:
    """Apply a program to ``mem`` with the golden model (in place); returns the acc SRAM."""
    from . import golden
    acc = np.zeros((cfg.acc_words, cfg.cols), dtype=np.int64)
    for ins in prog:
        code = golden.execute(cfg, ins, mem, acc)
        if code:
            raise HostError(f"golden model: {isa.ERROR_NAMES[code]}")
    return acc


if __name__ == "__main__":
    sys.exit(main())
