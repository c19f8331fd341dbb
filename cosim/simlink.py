"""UART links for ``cosim.host.Host`` in tests: drive an ``rx`` pin and sample a ``tx``
pin bit by bit (8N1, ``divisor`` clocks per bit) in Amaranth's simulator
(``AmaranthUARTLink``) or in cocotb (``CocotbUARTLink``)."""
from __future__ import annotations

from .host import LinkTimeout


class AmaranthUARTLink:
    def __init__(self, ctx, rx, tx, divisor: int, timeout_cycles: int = 200_000,
                 stop_bit: int = 1):
        self.ctx, self.rx, self.tx, self.div = ctx, rx, tx, divisor
        self.timeout = timeout_cycles
        self.stop_bit = stop_bit          # 0 sends a framing error (a test of the receiver)

    async def write(self, data: bytes) -> None:
        for byte in data:
            bits = [0] + [(byte >> i) & 1 for i in range(8)] + [self.stop_bit]
            for b in bits:
                self.ctx.set(self.rx, b)
                await self.ctx.tick().repeat(self.div)
            if self.stop_bit == 0:       # return to idle so the next start bit is seen
                self.ctx.set(self.rx, 1)
                await self.ctx.tick().repeat(self.div)
        self.ctx.set(self.rx, 1)

    async def read_byte(self) -> int:
        waited = 0
        while self.ctx.get(self.tx):
            await self.ctx.tick()
            waited += 1
            if waited > self.timeout:
                raise LinkTimeout(f"no start bit on tx within {self.timeout} cycles")
        await self.ctx.tick().repeat(self.div // 2)
        if self.ctx.get(self.tx):
            raise LinkTimeout("tx start bit shorter than half a bit")
        byte = 0
        for i in range(8):
            await self.ctx.tick().repeat(self.div)
            byte |= self.ctx.get(self.tx) << i
        await self.ctx.tick().repeat(self.div)
        if not self.ctx.get(self.tx):
            raise LinkTimeout("tx stop bit low")
        return byte

    async def read(self, n: int) -> bytes:
        return bytes([await self.read_byte() for _ in range(n)])


class CocotbUARTLink:
    """The same link for cocotb: drives the DUT's ``rx`` and samples its ``tx``, one bit
    per ``divisor`` clocks of ``period_ns``.  Bit times are waited with one ``Timer`` each
    (not clock by clock), which keeps the Python side cheap on long transfers; the receiver
    samples mid-bit after its synchronizer, so a bit edge that falls on a clock edge is safe."""

    def __init__(self, dut, divisor: int, period_ns: int = 10, timeout_cycles: int = 400_000):
        self.dut, self.div, self.period = dut, divisor, period_ns
        self.timeout = timeout_cycles

    async def write(self, data: bytes) -> None:
        from cocotb.triggers import FallingEdge, Timer
        t = self.div * self.period
        await FallingEdge(self.dut.clk)      # rx changes between rising edges: no race
        for byte in data:
            for b in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = b
                await Timer(t, unit="ns")

    async def read(self, n: int) -> bytes:
        from cocotb.triggers import FallingEdge, Timer, with_timeout
        from .host import HostError
        t = self.div * self.period
        out = []
        for _ in range(n):
            if int(self.dut.tx.value):
                try:
                    await with_timeout(FallingEdge(self.dut.tx), self.timeout * self.period, "ns")
                except Exception:
                    raise LinkTimeout(f"no reply byte within {self.timeout} cycles") from None
            await Timer(t // 2, unit="ns")
            if int(self.dut.tx.value):
                raise LinkTimeout("tx start bit shorter than half a bit")
            byte = 0
            for i in range(8):
                await Timer(t, unit="ns")
                byte |= int(self.dut.tx.value) << i
            await Timer(t, unit="ns")
            if not int(self.dut.tx.value):
                raise HostError("tx stop bit low")
            out.append(byte)
        return bytes(out)


async def cocotb_board_host(dut, cfg, divisor: int, prog_words: int, period_ns: int = 10, **host_kw):
    """Start the DUT's clock, reset it, and return a ``cosim.host.Host`` on its UART pins."""
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles
    from .host import Host
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 5)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 5)
    return Host(CocotbUARTLink(dut, divisor, period_ns), cfg, prog_words, **host_kw)


async def expect_host_error(coro, status=None, text=None):
    """Await ``coro``; it must raise ``HostError`` (with ``status`` and ``text`` if given)."""
    from .host import HostError
    try:
        await coro
    except HostError as e:
        if status is not None:
            assert e.status == status, (e.status, str(e))
        if text is not None:
            assert text in str(e), str(e)
        return e
    raise AssertionError("no HostError raised")


def run_amaranth(dut, bench):
    """Run ``bench(ctx)`` as a testbench on ``dut`` in Amaranth's simulator (1 MHz clock)
    until it returns (every wait in the links has a cycle watchdog); returns its value."""
    from amaranth.sim import Simulator
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    result = {}

    async def tb(ctx):
        result["value"] = await bench(ctx)
    sim.add_testbench(tb)
    sim.run()
    return result["value"]


def public_ports(text: str, module: str = "board_top") -> str:
    """Mark the ports of ``module`` (Amaranth's ``  input name;`` declarations) public for
    Verilator's VPI, so the model can be built without ``--public-flat-rw``."""
    import re
    head = f"module {module}("
    a = text.index(head)
    b = text.index("endmodule", a)
    body = re.sub(r"^(  (?:input|output)(?: \[[^\]]+\])? \\?[\w$]+ ?);$",
                  r"\1 /*verilator public_flat_rw*/;", text[a:b], flags=re.M)
    return text[:a] + body + text[b:]


def _verilator_runner(ports_only: bool):
    """cocotb's Verilator runner; ``ports_only``: without ``--public-flat-rw`` (every signal
    public), which makes a large model several times slower — the test then reaches the
    top's ports only (see :func:`public_ports`)."""
    from cocotb_tools.runner import Verilator, get_runner
    if not ports_only:
        return get_runner("verilator")

    class PortsOnly(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [c for c in cmds[0] if c != "--public-flat-rw"]
            return cmds
    return PortsOnly()


def run_cocotb_board(top, build, test_module: str, env: dict, tests: set,
                     makeflags: str = "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines",
                     opt: str = "-O1", ports_only: bool = False) -> None:
    """Verilog of ``top`` (name ``board_top``) built with Verilator in ``build`` (rebuilt
    only when the Verilog changed), then the cocotb module ``test_module`` run on it;
    raises AssertionError unless exactly ``tests`` ran and all passed.  ``ports_only``:
    only the top's ports are visible to cocotb (a faster model)."""
    import os
    import xml.etree.ElementTree as ET
    from amaranth.back import verilog
    from .rtlsim import ROOT, sim_env_path
    build.mkdir(parents=True, exist_ok=True)
    src = build / "board_top.v"
    text = verilog.convert(top, name="board_top", emit_src=False)
    if ports_only:
        text = public_ports(text)
    if not src.exists() or src.read_text() != text:
        src.write_text(text)
    os.environ["PATH"] = sim_env_path()
    old_mf = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = makeflags
    try:
        runner = _verilator_runner(ports_only)
        runner.build(sources=[src], hdl_toplevel="board_top", build_dir=build,
                     build_args=["-Wno-fatal", "-Wno-WIDTH", opt], always=False)
    finally:
        if old_mf is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old_mf
    xml = runner.test(test_module=test_module, hdl_toplevel="board_top", build_dir=build,
                      test_dir=build, extra_env={**env, "PYTHONPATH": str(ROOT)})
    cases = ET.parse(xml).getroot().iter("testcase")
    results = {c.get("name"): [f.get("message") for f in c.iter("failure")] for c in cases}
    assert set(results) == set(tests), results
    failed = {k: v for k, v in results.items() if v}
    assert not failed, failed
