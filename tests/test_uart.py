"""UART RX/TX framing and the command bridge in Amaranth's simulator, driven by the
host driver (cosim/host.py) through a bit-level link; a Python dict is the reference
memory."""

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring, memory

from cosim import host as hostmod
from cosim.simlink import AmaranthUARTLink, run_amaranth
from rtl import uart

DIV = 4


run_sim = run_amaranth


# ---- RX / TX framing ---------------------------------------------------------------
def test_rx_bytes_and_framing_error():
    # send bytes while sampling the stream every cycle
    rx2 = uart.UARTRx(DIV)

    async def bench2(ctx):
        link = AmaranthUARTLink(ctx, rx2.rx, None, DIV)
        ctx.set(rx2.stream.ready, 1)
        got = []
        seq = [(b"\x55\x00\xff\xa3", 1), (b"\x3c", 0), (b"\x81", 1)]
        for data, stop in seq:
            for byte in data:
                link.stop_bit = stop
                # send one byte while sampling the stream every cycle
                bits = [0] + [(byte >> i) & 1 for i in range(8)] + [stop]
                for b in bits + ([1] if stop == 0 else []):
                    ctx.set(rx2.rx, b)
                    for _ in range(DIV):
                        await ctx.tick()
                        if ctx.get(rx2.stream.valid):
                            got.append((ctx.get(rx2.stream.payload.data),
                                        ctx.get(rx2.stream.payload.framing_error)))
        ctx.set(rx2.rx, 1)
        for _ in range(4 * DIV):
            await ctx.tick()
            if ctx.get(rx2.stream.valid):
                got.append((ctx.get(rx2.stream.payload.data), ctx.get(rx2.stream.payload.framing_error)))
        return got
    got = run_sim(rx2, bench2)
    assert got == [(0x55, 0), (0x00, 0), (0xFF, 0), (0xA3, 0), (0x3C, 1), (0x81, 0)]


def test_rx_ignores_glitch():
    rx = uart.UARTRx(8)

    async def bench(ctx):
        ctx.set(rx.stream.ready, 1)
        ctx.set(rx.rx, 0)
        await ctx.tick().repeat(2)          # a low pulse shorter than half a bit
        ctx.set(rx.rx, 1)
        seen = 0
        for _ in range(200):
            await ctx.tick()
            seen += ctx.get(rx.stream.valid)
        return seen
    assert run_sim(rx, bench) == 0


def test_tx_frames():
    tx = uart.UARTTx(DIV)
    data = bytes([0x00, 0xFF, 0x5A, 0x81])

    async def bench(ctx):
        link = AmaranthUARTLink(ctx, None, tx.tx, DIV, timeout_cycles=100)
        out = []
        for byte in data:
            ctx.set(tx.stream.payload, byte)
            ctx.set(tx.stream.valid, 1)
            while not ctx.get(tx.stream.ready):
                await ctx.tick()
            await ctx.tick()
            ctx.set(tx.stream.valid, 0)
            out.append(await link.read_byte())
        return bytes(out)
    assert run_sim(tx, bench) == data


def test_divisor_checks():
    assert uart.divisor_for(100e6, 115200) == 868
    assert uart.divisor_for(12e6, 115200) == 104
    with pytest.raises(ValueError, match="too fast"):
        uart.divisor_for(1e6, 1e6)
    with pytest.raises(ValueError, match="off"):
        uart.divisor_for(10e6, 2.6e6)
    with pytest.raises(ValueError, match="divisor=1"):
        uart.UARTRx(1)


# ---- the bridge, end to end over the pins -------------------------------------------
AW, SLOT, PROG = 8, 32, 64
COUNTER_BITS = 3 * 48


class BridgeBench(wiring.Component):
    """RX -> Bridge -> TX with a block-RAM memory and a program memory behind it."""

    def __init__(self, buffers=(), regs=(), chunked=False):
        self.buffers, self.regs, self.chunked = buffers, regs, chunked
        extra = {"regs_out": wiring.Out(16 * len(regs))} if regs else {}
        super().__init__({"rx": wiring.In(1, init=1), "tx": wiring.Out(1, init=1),
                          "running": wiring.In(1), "runs": wiring.Out(8), "run_len": wiring.Out(16),
                          "counters": wiring.In(COUNTER_BITS), **extra})
        self.info = bytes(range(1, 10))

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = uart.UARTRx(DIV)
        m.submodules.utx = utx = uart.UARTTx(DIV)
        m.submodules.br = br = uart.Bridge(addr_bits=AW, slot_bits=SLOT, prog_words=PROG,
                                           counter_bits=COUNTER_BITS, info=self.info, timeout=400,
                                           buffers=self.buffers, regs=self.regs, chunked=self.chunked)
        m.submodules.mem = mem = memory.Memory(shape=SLOT, depth=1 << AW, init=[])
        m.submodules.prog = prog = memory.Memory(shape=32, depth=PROG, init=[])
        self.mem, self.prog = mem, prog
        wp, rp = mem.write_port(), mem.read_port()
        pw = prog.write_port()
        wiring.connect(m, urx.stream, br.rx)
        wiring.connect(m, br.tx, utx.stream)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        req = br.mem.req
        m.d.comb += [req.ready.eq(1), wp.addr.eq(req.payload.addr), wp.data.eq(req.payload.data),
                     wp.en.eq(req.valid & req.payload.we), rp.addr.eq(req.payload.addr),
                     br.mem.rdata.eq(rp.data)]
        m.d.sync += br.mem.rvalid.eq(req.valid & ~req.payload.we)
        sel0 = (br.buf_sel == 0) if self.buffers else 1
        m.d.comb += [pw.addr.eq(br.prog_addr), pw.data.eq(br.prog_data), pw.en.eq(br.prog_we & sel0)]
        self.bufs = []
        for i, depth in enumerate(self.buffers):       # stream buffers 1..n
            m.submodules[f"buf{i + 1}"] = bm = memory.Memory(shape=32, depth=depth, init=[])
            bw = bm.write_port()
            m.d.comb += [bw.addr.eq(br.prog_addr), bw.data.eq(br.prog_data),
                         bw.en.eq(br.prog_we & (br.buf_sel == i + 1))]
            self.bufs.append(bm)
        if self.regs:
            m.d.comb += self.regs_out.eq(br.regs.as_value())
        m.d.comb += [br.status.running.eq(self.running), br.status.error.eq(5),
                     br.status.pc.eq(0x1234), br.counters.eq(self.counters),
                     self.run_len.eq(br.run_len)]
        m.d.sync += self.runs.eq(self.runs + br.run)      # run pulses seen
        return m


class FakeCfg:
    """Enough of a configuration for the Host's memory commands."""
    slot_bits = SLOT


def make_host(ctx, dut, **kw):
    link = AmaranthUARTLink(ctx, dut.rx, dut.tx, DIV, timeout_cycles=5000, **kw)
    return hostmod.Host(link, FakeCfg(), PROG, max_words=16), link


@pytest.mark.parametrize("chunked", [False, True])
def test_bridge_memory_roundtrip_and_status(chunked):
    """(chunked: the 18 counter bytes go out as a 12-byte and a 6-byte chunk; the host sees
    the same bytes and checksum)"""
    dut = BridgeBench(chunked=chunked)
    rng = np.random.default_rng(1)
    vals = rng.integers(-(1 << 31), 1 << 31, 40)
    counters = [rng.integers(0, 1 << 48) for _ in range(3)]

    async def bench(ctx):
        ctx.set(dut.counters, sum(int(c) << (48 * i) for i, c in enumerate(counters)))
        h, _ = make_host(ctx, dut)
        await h.write_mem(100, vals)                       # 3 frames of <= 16 words
        back = await h.read_mem(100, 40)
        mem_direct = [ctx.get(dut.mem.data[100 + i]) for i in range(40)]
        st = await h.status()
        raw = await h.command(uart.OP_COUNTERS, reply=COUNTER_BITS // 8)
        ping = await h.command(uart.OP_PING, reply=uart.PING_BYTES)
        # program words and RUN
        blob = bytes(range(8))
        await h.command(uart.OP_WRITE_PROG, 3, 2, blob)
        prog = [ctx.get(dut.prog.data[i]) for i in (3, 4)]
        await h.run(7)
        runs = [ctx.get(dut.runs), ctx.get(dut.run_len)]
        return back, mem_direct, st, raw, ping, prog, runs

    back, direct, st, raw, ping, prog, runs = run_sim(dut, bench)
    assert np.array_equal(back, vals)
    assert [v - (1 << 32) if v >= 1 << 31 else v for v in direct] == list(vals)
    assert st == {"running": False, "engine_busy": False, "done": False, "error": 5, "pc": 0x1234}
    assert [int.from_bytes(raw[6 * i:6 * i + 6], "little") for i in range(3)] == counters
    assert int.from_bytes(ping[:2], "little") == uart.MAGIC and ping[2] == uart.VERSION
    assert ping[3:] == dut.info
    assert prog == [0x03020100, 0x07060504]
    assert runs == [1, 7]


@pytest.mark.parametrize("case", ["opcode", "checksum", "range", "range_prog", "busy", "framing",
                                  "run_zero", "range_high", "range_wrap", "range_prog_high"])
def test_bridge_bad_requests(case):
    dut = BridgeBench()

    async def bench(ctx):
        h, link = make_host(ctx, dut)
        await h.write_mem(0, [11, 22])
        if case == "opcode":
            frame = hostmod.request(0x7E)
        elif case == "checksum":
            frame = hostmod.request(uart.OP_WRITE_MEM, 0, 2, bytes(8))
            frame = frame[:-1] + bytes([(frame[-1] + 1) & 0xFF])
        elif case == "range":
            frame = hostmod.request(uart.OP_WRITE_MEM, (1 << AW) - 1, 2, bytes(8))
        elif case == "range_prog":
            frame = hostmod.request(uart.OP_WRITE_PROG, PROG - 1, 2, bytes(8))
        elif case == "range_high":          # an address bit above the memory's (low bits 0)
            frame = hostmod.request(uart.OP_WRITE_MEM, 1 << 20, 2, bytes(8))
        elif case == "range_wrap":          # addr + count past 2**32 (a 32-bit sum would wrap to 1)
            frame = hostmod.request(uart.OP_WRITE_MEM, (1 << 32) - 1, 2, bytes(8))
        elif case == "range_prog_high":     # the program buffer, an address bit above its depth
            frame = hostmod.request(uart.OP_WRITE_PROG, 1 << 16, 2, bytes(8))
        elif case == "busy":
            ctx.set(dut.running, 1)
            frame = hostmod.request(uart.OP_WRITE_MEM, 0, 2, bytes(8))
        elif case == "run_zero":
            frame = hostmod.request(uart.OP_RUN, 0, 0)
        else:
            frame = hostmod.request(uart.OP_WRITE_MEM, 0, 2, bytes(8))
        if case == "framing":
            await link.write(frame[:3])
            link.stop_bit = 0
            await link.write(frame[3:4])
            link.stop_bit = 1
            await link.write(frame[4:])
        else:
            await link.write(frame)
        status, csum = await link.read(2)
        ctx.set(dut.running, 0)
        # the bridge still works afterwards, and a rejected write wrote nothing
        after = await h.read_mem(0, 2)
        return status, csum, after

    status, csum, after = run_sim(dut, bench)
    want = {"opcode": uart.ST_BAD_OPCODE, "checksum": uart.ST_BAD_CHECKSUM, "range": uart.ST_BAD_RANGE,
            "range_prog": uart.ST_BAD_RANGE, "busy": uart.ST_BUSY, "framing": uart.ST_FRAMING,
            "run_zero": uart.ST_BAD_RANGE, "range_high": uart.ST_BAD_RANGE,
            "range_wrap": uart.ST_BAD_RANGE, "range_prog_high": uart.ST_BAD_RANGE}[case]
    assert (status, csum) == (want, want)
    if case in ("range", "busy", "framing", "range_high", "range_wrap"):
        assert list(after) == [11, 22]
    if case == "checksum":                # payload applied as it came (documented)
        assert list(after) == [0, 0]


def test_bridge_stream_buffers_and_registers():
    """WRITE_BUF lands in the buffer it names (buffer 0 = the program buffer), SET in its
    register; out-of-range buffers, words, registers and values get BAD_RANGE and write
    nothing; a bridge without buffers/registers does not know the opcodes."""
    dut = BridgeBench(buffers=(8, 16), regs=(63, 5))

    async def bench(ctx):
        h, _ = make_host(ctx, dut)
        await h.command(uart.OP_WRITE_BUF, (2 << uart.BUF_SHIFT) | 3, 2, bytes(range(8)))
        await h.command(uart.OP_WRITE_BUF, (1 << uart.BUF_SHIFT) | 7, 1, bytes([9, 0, 0, 0]))
        await h.command(uart.OP_WRITE_BUF, 0 << uart.BUF_SHIFT, 1, bytes([5, 0, 0, 0]))
        await h.command(uart.OP_SET, 0, 42)
        await h.command(uart.OP_SET, 1, 5)
        bad = []
        for op, addr, count, payload in (
                (uart.OP_WRITE_BUF, (1 << uart.BUF_SHIFT) | 7, 2, bytes(8)),     # past buffer 1
                (uart.OP_WRITE_BUF, 3 << uart.BUF_SHIFT, 1, bytes(4)),            # no buffer 3
                (uart.OP_SET, 1, 6, b""),                                         # above the limit
                (uart.OP_SET, 2, 0, b"")):                                        # no register 2
            try:
                await h.command(op, addr, count, payload)
                bad.append(None)
            except hostmod.HostError as e:
                bad.append(e.status)
        b1 = [ctx.get(dut.bufs[0].data[i]) for i in range(8)]
        b2 = [ctx.get(dut.bufs[1].data[i]) for i in range(16)]
        p0 = ctx.get(dut.prog.data[0])
        regs = ctx.get(dut.regs_out)
        return b1, b2, p0, regs, bad

    b1, b2, p0, regs, bad = run_sim(dut, bench)
    assert b2 == [0, 0, 0, 0x03020100, 0x07060504] + [0] * 11
    assert b1 == [0] * 7 + [9] and p0 == 5
    assert regs == 42 | 5 << 16
    assert bad == [uart.ST_BAD_RANGE] * 4

    plain = BridgeBench()

    async def bench2(ctx):
        h, _ = make_host(ctx, plain)
        out = []
        for op in (uart.OP_WRITE_BUF, uart.OP_SET):
            try:
                await h.command(op, 0, 0)
            except hostmod.HostError as e:
                out.append(e.status)
        return out
    assert run_sim(plain, bench2) == [uart.ST_BAD_OPCODE] * 2


def test_host_raises_on_error_status():
    dut = BridgeBench()

    async def bench(ctx):
        h, _ = make_host(ctx, dut)
        try:
            await h.command(0x42)
        except hostmod.HostError as e:
            return e
        return None
    e = run_sim(dut, bench)
    assert isinstance(e, hostmod.HostError) and e.status == uart.ST_BAD_OPCODE
    assert "unknown opcode" in str(e) and "0x42" in str(e)


def test_bridge_timeout_resynchronizes():
    dut = BridgeBench()

    async def bench(ctx):
        h, link = make_host(ctx, dut)
        await link.write(bytes([uart.OP_WRITE_MEM, 0, 0]))  # a truncated header
        await ctx.tick().repeat(1000)                       # > timeout (400 clocks)
        await h.write_mem(5, [77])
        return await h.read_mem(5, 1)
    assert list(run_sim(dut, bench)) == [77]


def test_request_framing_errors():
    with pytest.raises(hostmod.HostError, match="count 70000"):
        hostmod.request(uart.OP_READ_MEM, 0, 70000)
    with pytest.raises(hostmod.HostError, match="address"):
        hostmod.request(uart.OP_READ_MEM, -1, 1)
    assert hostmod.request(1, 2, 3) == bytes([1, 2, 0, 0, 0, 3, 0, 6])
