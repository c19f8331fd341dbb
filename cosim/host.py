"""Host driver for the board top's UART protocol (``rtl/uart.py``, ``docs/fpga.md``).

The driver is transport-agnostic and asynchronous: a *link* has ``async write(bytes)``
and ``async read(n) -> bytes`` (raising :class:`LinkTimeout` when the bytes do not
come).  ``SerialLink`` talks to a real board through pyserial; the tests use links that
drive the RTL's ``rx`` pin bit by bit in Amaranth's simulator or in cocotb.

    python -m cosim.host --port /dev/ttyUSB0 --preset small --board ulx3s   # GEMM on a board
    python -m cosim.host --port /dev/ttyUSB0 --board ulx3s --gp            # an ADA-GP GP step

With the Accelerator core (``core="accelerator"``) the driver also fills the stream
buffers (reorganization / update descriptors, predictor weights: ``load_streams``), sets
shift1/shift2, reads the predictor side's counters with the engine's, and runs a checked
ADA-GP GP step (:func:`gp_step`, :func:`check_gp_step`).
"""
from __future__ import annotations

import argparse
import asyncio
import sys

import numpy as np

from rtl import isa, uart
from rtl import accelerator as acc
from rtl.board import REGS, board_info, check_core, counter_names, instr_words, stream_buffers
from rtl.config import AcceleratorConfig


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


def encode_program(cfg: AcceleratorConfig, prog: list, core: str = "engine") -> bytes:
    """Instructions as program-buffer bytes: each instruction is ``instr_words`` 32-bit
    words, least significant first.  An instruction is an engine instruction dict, or an
    already encoded word (``rtl.accelerator.encode`` for the Accelerator's fences)."""
    n = instr_words(cfg, core)
    return entry_bytes([ins if isinstance(ins, int) else isa.encode(cfg, ins) for ins in prog], n)


def entry_bytes(entries: list[int], words: int) -> bytes:
    """Stream-buffer entries as bytes: ``words`` 32-bit words each, least significant first."""
    out = []
    for e in entries:
        if not 0 <= int(e) < 1 << (32 * words):
            raise HostError(f"entry {e:#x} does not fit {words} words")
        out.append(int(e).to_bytes(4 * words, "little"))
    return b"".join(out)


class Host:
    """Commands of the bridge, each checked: a non-OK status raises :class:`HostError`."""

    def __init__(self, link, cfg: AcceleratorConfig, prog_words: int, max_words: int = 256,
                 core: str = "engine"):
        self.link, self.cfg, self.prog_words = link, cfg, prog_words
        self.max_words = max_words        # words per WRITE_MEM / READ_MEM / WRITE_BUF frame
        self.core = check_core(core)

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
        want = board_info(self.cfg, self.prog_words, self.core)
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

    async def write_program(self, prog: list) -> None:
        blob = encode_program(self.cfg, prog, self.core)
        words = len(blob) // 4
        if words > self.prog_words:
            raise HostError(f"program of {len(prog)} instructions needs {words} words; the "
                            f"program buffer holds {self.prog_words}")
        await self.command(uart.OP_WRITE_PROG, 0, words, blob)

    def _accel(self, what: str):
        if self.core != "accelerator":
            raise HostError(f"{what} needs the Accelerator core (this host talks to core={self.core!r})")

    async def write_buffer(self, name: str, entries: list[int]) -> None:
        """Entries of a stream buffer (``rtl.board.stream_buffers``: rdesc, udesc, pweights)."""
        self._accel(f"write_buffer({name!r})")
        bufs = stream_buffers(self.cfg)
        if name not in bufs:
            raise HostError(f"unknown stream buffer {name!r}; choose one of {', '.join(bufs)}")
        b = bufs[name]
        if len(entries) > b.entries:
            raise HostError(f"{len(entries)} {name} entries: the buffer holds {b.entries}")
        blob = entry_bytes(entries, b.words)
        step = 4 * self.max_words
        for i in range(0, len(blob), step):
            chunk = blob[i:i + step]
            await self.command(uart.OP_WRITE_BUF, (b.index << uart.BUF_SHIFT) | (i // 4),
                               len(chunk) // 4, chunk)

    async def set_reg(self, name: str, value: int) -> None:
        """A SET register (``rtl.board.REGS``: shift1, shift2, n_rdesc, n_udesc, n_pweights)."""
        self._accel(f"set_reg({name!r})")
        if name not in REGS:
            raise HostError(f"unknown register {name!r}; choose one of {', '.join(REGS)}")
        await self.command(uart.OP_SET, REGS.index(name), value)

    async def load_streams(self, rdescs: list[int], udescs: list[int], pweights: list[int],
                           shift1: int, shift2: int) -> None:
        """What ``cosim.accel_sim.AccelSim.load_streams`` gives the harness, over the UART."""
        for name, entries in (("rdesc", rdescs), ("udesc", udescs), ("pweights", pweights)):
            await self.write_buffer(name, entries)
            await self.set_reg("n_" + name, len(entries))
        await self.set_reg("shift1", shift1)
        await self.set_reg("shift2", shift2)

    async def run(self, n_instr: int) -> None:
        await self.command(uart.OP_RUN, 0, n_instr)

    async def status(self) -> dict:
        r = await self.command(uart.OP_STATUS, reply=uart.STATUS_BYTES)
        return {"running": bool(r[0] & 1), "engine_busy": bool(r[0] & 2), "done": bool(r[0] & 4),
                "error": int.from_bytes(r[1:3], "little") & 0xFFF,
                "pc": int.from_bytes(r[3:5], "little")}

    async def counters(self) -> dict:
        """The engine's counters (and the predictor side's with the Accelerator core)."""
        nb = self.cfg.counter_bits // 8        # bytes per counter (rtl/config.py)
        names = counter_names(self.core, self.cfg)
        r = await self.command(uart.OP_COUNTERS, reply=nb * len(names))
        return {name: int.from_bytes(r[i * nb:(i + 1) * nb], "little")
                for i, name in enumerate(names)}

    def error_text(self, err: int) -> str:
        if self.core == "accelerator":
            f = acc.error_fields(err)
            eng = f"engine {f['engine']} ({isa.ERROR_NAMES.get(f['engine'], '?')})" if f["engine"] else ""
            rest = [f"{k} {v}" for k, v in f.items() if k != "engine" and v]
            return f"accelerator error {err:#x}: " + ", ".join(([eng] if eng else []) + rest)
        return f"engine error {err}: {isa.ERROR_NAMES.get(err, '?')}"

    async def wait(self, polls: int = 1000) -> dict:
        """Poll STATUS until the program is done; raise on a timeout or an error status."""
        for _ in range(polls):
            st = await self.status()
            if not st["running"]:
                if st["error"]:
                    raise HostError(self.error_text(st["error"]), st["error"])
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


# ---- ADA-GP GP steps on the Accelerator top ------------------------------------------
GP_INPUTS = ("w8_", "w16_")           # per layer, besides the network input "x"
GP_OUTPUTS = ("y_", "w16_", "w8_")    # per layer: the engine's output, the updated weights


async def gp_step(h: Host, run, polls: int = 100_000) -> dict:
    """Run a ``cosim.accel_sim.GpRun`` on the board: write the inputs (``x`` and every
    layer's 8- and 16-bit weights; outputs and masks are written whole by the engine), the
    descriptor and weight streams and the program, RUN, wait, and read back every layer's
    output and updated weights ({tensor name: array}) and the counters."""
    h._accel("gp_step")
    img = run.img
    for name in ("x",) + tuple(p + Ld["name"] for Ld in run.layers for p in GP_INPUTS):
        t = img.tensors[name]
        await h.write_mem(t.base, img.mem[t.base:t.base + t.size])
    await h.load_streams(run.rdescs, run.udescs, run.pweights, run.shift1, run.shift2)
    await h.write_program(run.prog)
    await h.run(len(run.prog))
    await h.wait(polls)
    res = {}
    for Ld in run.layers:
        for p in GP_OUTPUTS:
            t = img.tensors[p + Ld["name"]]
            res[p + Ld["name"]] = (await h.read_mem(t.base, t.size)).reshape(t.shape)
    res["counters"] = await h.counters()
    return res


# counters that do not depend on the memory's timing: equal to cosim.predictor_model's
GP_EXACT_COUNTERS = ("samples", "pred_rows", "upd_elems", "upd_layers", "retired")
# counters the board's slower (lane-serial) memory can only make larger than the model's:
# the engine waits for its operands, and the update unit (5 cycles per gradient row in the
# harness, several times that with a lane-serial read and a 2 x pred_cols-lane write on the
# board) holds the array back when a layer's rows come faster than it writes them
GP_LOWER_BOUNDS = ("busy_cycles", "array_busy_cycles")


def check_gp_step(run, gold: dict, res: dict) -> list[str]:
    """Compare a board GP step (``gp_step``'s result, one step) with ``gp_golden``'s last
    step (bit-exact: every layer's output in the engine's CNHW / [N, B] order, the 16-bit
    master weights and their 8-bit copy) and its counters with the models: the
    timing-independent ones (``GP_EXACT_COUNTERS``) with ``cosim.predictor_model.gp_timeline``
    exactly, the engine's ``macs`` and ``compute_cycles`` with their definitions, and the
    engine's and the array's busy cycles (``GP_LOWER_BOUNDS``) at least the model's (the
    lane-serial board memory is slower than the harness's).  Returns the mismatches
    (empty: all good)."""
    from . import predictor_model as PM
    bad = []
    for Ld in run.layers:
        name, g = Ld["name"], gold[Ld["name"]]
        y = res["y_" + name]
        want = g["y"]
        want = want.transpose(1, 0, 2, 3) if want.ndim == 4 else want.T.reshape(y.shape)
        for what, got, exp in (("y", y, want), ("w16", res["w16_" + name], g["w16"]),
                               ("w8", res["w8_" + name], g["w8"])):
            exp = np.asarray(exp).reshape(got.shape)
            if not np.array_equal(got, exp):
                bad.append(f"{name}.{what}: {int((got != exp).sum())} of {got.size} elements differ")
    c = res["counters"]
    model = PM.gp_timeline(run.cfg, PM.specs_from_run(run), run.steps)
    for k in GP_EXACT_COUNTERS:
        if c[k] != model[k]:
            bad.append(f"counter {k}: board {c[k]} != model {model[k]}")
    cfg = run.cfg
    instrs = [ins for _ in range(run.steps) for layer in run.fwd_instr for ins in layer]
    macs = sum(i["m"] * i["n"] * i["k"] for i in instrs)
    comp = sum(-(-i["m"] // cfg.rows) * -(-i["n"] // cfg.cols) * i["k"] for i in instrs)
    for k, want in (("macs", macs), ("compute_cycles", comp), ("errors", 0)):
        if c[k] != want:
            bad.append(f"counter {k}: board {c[k]} != {want}")
    for k in GP_LOWER_BOUNDS:
        if c[k] < model[k]:
            bad.append(f"counter {k}: board {c[k]} < model {model[k]}")
    return bad


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
    ap = argparse.ArgumentParser(description="Run a checked GEMM, or an ADA-GP GP step (--gp, "
                                             "Accelerator core), on a board over its UART.")
    ap.add_argument("--port", required=True)
    ap.add_argument("--board", default="ulx3s", choices=list(board.BOARDS))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--core", default=None, choices=list(board.CORES),
                    help="the core the bitstream was built with (default: the board's)")
    ap.add_argument("--baud", type=int, default=board.DEFAULT_BAUD)
    ap.add_argument("--m", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--gp", action="store_true", help="an ADA-GP GP step of the digits CNN")
    ap.add_argument("--batch", type=int, default=4, help="--gp: batch (a power of two)")
    args = ap.parse_args(argv)
    cfg = board.board_config(args.preset, args.board)
    spec = board.BOARDS[args.board]
    core = args.core or spec.core
    if args.gp:
        return gp_main(args, cfg, spec.prog_words, core)
    img, prog, outs = gemm_case(cfg, args.m, args.n, args.k, seed=0)
    want = img.mem.copy()
    golden_run(cfg, prog, want)
    if core == "accelerator":          # the same GEMM, as accelerator words without fences
        prog = [acc.encode(cfg, ins) for ins in prog]

    async def go():
        h = Host(SerialLink(args.port, args.baud), cfg, spec.prog_words, core=core)
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


def gp_main(args, cfg: AcceleratorConfig, prog_words: int, core: str) -> int:
    """``--gp``: capture a digits-CNN model_sw step, run it on the board, check it."""
    from . import accel_sim as AS
    from .bench_predictor import capture_digits
    if core != "accelerator":
        print("cosim.host: error: --gp needs the Accelerator core", file=sys.stderr)
        return 2
    from .driver import DriverError
    cap = capture_digits(steps=6, batch=args.batch)
    try:
        run = AS.gp_program(cfg, cap, steps=1)
    except (DriverError, AS.AccelError) as e:        # e.g. the batch does not fit the memory
        print(f"cosim.host: error: batch {args.batch}: {e}", file=sys.stderr)
        return 2
    gold = AS.gp_golden(run, cap)["steps"][0]

    async def go():
        h = Host(SerialLink(args.port, args.baud), cfg, prog_words, core=core)
        print(await h.ping())
        return await gp_step(h, run)
    try:
        res = asyncio.run(go())
    except HostError as e:
        print(f"cosim.host: error: {e}", file=sys.stderr)
        return 2
    bad = check_gp_step(run, gold, res)
    print("counters:", res["counters"])
    print("\n".join(bad) if bad else "GP step matches the golden model and the counter models")
    return 1 if bad else 0


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
