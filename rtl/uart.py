"""UART (8N1) receiver and transmitter, and the host command bridge of the board top.

``UARTRx`` / ``UARTTx`` move bytes between a pin and a ``lib.stream``; one bit lasts
``divisor`` clocks (``divisor_for(clk_hz, baud)``).  The receiver samples each bit in
its middle, and flags a byte whose stop bit is low (a framing error) in its payload.

``Bridge`` parses the host protocol (``docs/fpga.md``; the Python side is
``cosim/host.py``, which shares the constants below):

request  := opcode(1) addr(4, LE) count(2, LE) payload checksum(1)
response := status(1) payload checksum(1)

``checksum`` is the sum of all preceding bytes of the frame modulo 256.  The request
payload is ``count`` memory words (WRITE_MEM, ``slot_bytes`` each, LE) or ``count``
32-bit words (WRITE_PROG into the program buffer, WRITE_BUF into the stream buffer
``addr >> 24`` at word ``addr & 0xFFFFFF``, 4 bytes each); other commands carry none
(SET puts the 16-bit ``count`` into register ``addr``).  The response
payload is present only when the status is OK.  Write payloads are applied as they
arrive: a bad checksum is reported (status BAD_CHECKSUM) after the words were written,
and the host resends.  Range and busy checks happen on the header, before anything is
written (the payload is then consumed and dropped).  A gap of ``timeout`` clocks inside
a frame abandons it (the parser resynchronizes on the next byte).
"""
from __future__ import annotations

from amaranth import Module, Signal, Mux, Cat, Const
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

# ---- protocol constants (shared with cosim/host.py) --------------------------------
OP_PING = 0x01
OP_WRITE_MEM = 0x02
OP_READ_MEM = 0x03
OP_WRITE_PROG = 0x04
OP_RUN = 0x05
OP_STATUS = 0x06
OP_COUNTERS = 0x07
OP_WRITE_BUF = 0x08       # addr = buffer << 24 | word: 32-bit words into a stream buffer
OP_SET = 0x09             # addr = register, count = its 16-bit value
OPCODES = {"ping": OP_PING, "write_mem": OP_WRITE_MEM, "read_mem": OP_READ_MEM,
           "write_prog": OP_WRITE_PROG, "run": OP_RUN, "status": OP_STATUS,
           "counters": OP_COUNTERS, "write_buf": OP_WRITE_BUF, "set": OP_SET}
BUF_SHIFT = 24            # WRITE_BUF: the buffer index sits above a 24-bit word address

ST_OK = 0
ST_BAD_OPCODE = 1
ST_BAD_CHECKSUM = 2
ST_BAD_RANGE = 3          # address + count outside memory / a buffer, count 0 for RUN, SET value too big
ST_BUSY = 4               # write or run while a program runs
ST_FRAMING = 5            # a byte of this request had a low stop bit
STATUS_NAMES = {ST_OK: "ok", ST_BAD_OPCODE: "unknown opcode", ST_BAD_CHECKSUM: "bad checksum",
                ST_BAD_RANGE: "address/count out of range", ST_BUSY: "busy (a program is running)",
                ST_FRAMING: "UART framing error"}

HEADER_BYTES = 7
PROG_WORD_BYTES = 4
MAGIC = 0x5444            # "DT" little-endian in the PING reply
VERSION = 2               # 2: STATUS carries a 12-bit error; WRITE_BUF, SET
PING_BYTES = 12
STATUS_BYTES = 5


def divisor_for(clk_hz: float, baud: float) -> int:
    """Clocks per bit; raises ValueError when the baud rate is off by more than 2%."""
    div = round(clk_hz / baud)
    if div < 2:
        raise ValueError(f"baud {baud} is too fast for a {clk_hz / 1e6:g} MHz clock "
                         f"(needs >= 2 clocks per bit)")
    err = abs(clk_hz / div - baud) / baud
    if err > 0.02:
        raise ValueError(f"baud {baud} from {clk_hz / 1e6:g} MHz: divisor {div} is {err:.1%} off")
    return div


def rx_layout():
    return data.StructLayout({"data": 8, "framing_error": 1})


def _checked_divisor(unit, divisor: int) -> int:
    """Clocks per bit of a UART unit under construction; refuses fewer than 2."""
    if divisor < 2:
        unit._MustUse__silence = True          # never elaborated: no "unused" warning
        raise ValueError(f"divisor={divisor}: needs >= 2 clocks per bit")
    return divisor


class UARTRx(wiring.Component):
    """8N1 receiver: ``rx`` pin -> stream of bytes (with a framing-error flag).

    The stream has no back-pressure worth the name: a byte not taken before the next
    one completes is overwritten and ``overrun`` pulses."""

    def __init__(self, divisor: int):
        self.divisor = _checked_divisor(self, divisor)
        super().__init__({
            "rx": In(1, init=1),
            "stream": Out(stream.Signature(rx_layout())),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        sync = Signal(2, init=0b11)
        m.d.sync += sync.eq(Cat(self.rx, sync[0]))
        line = sync[1]
        timer = Signal(range(div + div // 2 + 1))
        bit = Signal(range(9))
        shreg = Signal(8)
        out = self.stream
        with m.If(out.valid & out.ready):
            m.d.sync += out.valid.eq(0)
        m.d.sync += self.overrun.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):                  # start bit edge
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):                 # glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), timer.eq(div - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [out.payload.data.eq(shreg), out.payload.framing_error.eq(~line),
                                 out.valid.eq(1), self.overrun.eq(out.valid & ~out.ready)]
                    # after a low stop bit (a break or a baud mismatch) wait for the idle line
                    m.next = "IDLE"
                    with m.If(~line):
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: stream of bytes -> ``tx`` pin (idle high)."""

    def __init__(self, divisor: int):
        self.divisor = _checked_divisor(self, divisor)
        super().__init__({
            "stream": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        timer = Signal(range(div))
        shreg = Signal(10, init=0x3FF)
        left = Signal(range(11))
        m.d.comb += [self.tx.eq(shreg[0]), self.stream.ready.eq(left == 0)]
        with m.If(left == 0):
            with m.If(self.stream.valid):
                m.d.sync += [shreg.eq(Cat(Const(0, 1), self.stream.payload, Const(1, 1))),
                             left.eq(10), timer.eq(div - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), left.eq(left - 1), timer.eq(div - 1)]
        return m


def host_req_layout(addr_bits: int, slot_bits: int):
    return data.StructLayout({"addr": addr_bits, "data": slot_bits, "we": 1})


def host_port_signature(addr_bits: int, slot_bits: int) -> wiring.Signature:
    """The bridge's port into the board memory: requests (read or write) as a stream,
    read data back with a one-cycle ``rvalid`` strobe, in order."""
    return wiring.Signature({
        "req": Out(stream.Signature(host_req_layout(addr_bits, slot_bits))),
        "rdata": In(slot_bits),
        "rvalid": In(1),
    })


def status_layout():
    return data.StructLayout({"running": 1, "engine_busy": 1, "done": 1, "error": 12, "pc": 16})


class Bridge(wiring.Component):
    """Byte protocol -> memory / program-buffer writes, memory reads, run, status, counters.

    Parameters: ``addr_bits`` / ``slot_bits`` of the board memory, ``prog_words`` (32-bit
    program-buffer words), ``counter_bits`` (the engine's counters, as one flat value),
    ``info`` (the PING reply bytes after magic and version), ``timeout`` (clocks),
    ``max_instr`` (the most instructions RUN may ask for: the program buffer's capacity),
    ``buffers`` (word depths of the stream buffers 1..n that WRITE_BUF fills through the
    program-buffer write port, told apart by ``buf_sel``; buffer 0 is the program buffer),
    ``regs`` (the largest value of each SET register; values on ``regs``),
    ``chunked`` (the counters go out in chunks of the response buffer's other sizes, each
    loaded from the counters when the one before is sent, instead of all at once: the
    buffer is then ~100 flip-flops, not ~1000; the bytes on the line are the same).
    """

    def __init__(self, *, addr_bits: int, slot_bits: int, prog_words: int, counter_bits: int,
                 info: bytes, timeout: int, max_instr: int | None = None,
                 buffers: tuple = (), regs: tuple = (), chunked: bool = False):
        if len(info) != PING_BYTES - 3:
            raise ValueError(f"info must be {PING_BYTES - 3} bytes, not {len(info)}")
        if slot_bits % 8 or counter_bits % 8:
            raise ValueError("slot_bits and counter_bits must be whole bytes")
        self.addr_bits, self.slot_bits = addr_bits, slot_bits
        self.prog_words, self.counter_bits = prog_words, counter_bits
        self.info, self.timeout = bytes(info), timeout
        self.max_instr = prog_words if max_instr is None else max_instr   # RUN count limit
        self.buffers, self.reg_limits = tuple(buffers), tuple(regs)
        self.chunked = chunked
        if any(not 1 <= d <= 1 << BUF_SHIFT for d in self.buffers) or any(
                not 0 <= r < 1 << 16 for r in self.reg_limits):
            raise ValueError(f"buffers {self.buffers} must hold 1..2**{BUF_SHIFT} words and "
                             f"register limits {self.reg_limits} fit 16 bits")
        extra = {}
        if self.buffers:
            extra["buf_sel"] = Out(range(len(self.buffers) + 1))
        if self.reg_limits:
            extra["regs"] = Out(data.ArrayLayout(16, len(self.reg_limits)))
        super().__init__({
            "rx": In(stream.Signature(rx_layout())),
            "tx": Out(stream.Signature(8)),
            "mem": Out(host_port_signature(addr_bits, slot_bits)),
            "prog_addr": Out(range(max((prog_words,) + self.buffers))),
            "prog_data": Out(32),
            "prog_we": Out(1),
            "run": Out(1),                    # pulse: run program words [0, run_len)
            "run_len": Out(16),               # program length in instructions
            "status": In(status_layout()),
            "counters": In(counter_bits),
            "frame_errors": Out(16),          # requests answered with a non-OK status
            "buf_ready": In(1, init=1),       # the buffer write side can take a word
            **extra,
        })

    def elaborate(self, platform):
        m = Module()
        sb = self.slot_bits // 8
        cb = self.counter_bits // 8
        # The response buffer holds one chunk.  Unchunked, the counters are one chunk; chunked
        # (for Fmax: the ~1000-bit buffer's enables spread across the die towards the
        # counters, and the bridge's state reached them in two long hops, 5.1 and 4.9 ns, on
        # 68b26ee's ULX3S critical path, 72.7 MHz), they are sent ``ck`` bytes at a time.
        ck = max(PING_BYTES, STATUS_BYTES, sb, 1) if self.chunked else max(cb, 1)
        buf_bytes = max(ck, PING_BYTES, STATUS_BYTES, sb, 1)
        n_chunks = -(-cb // ck)
        mem_words = 1 << self.addr_bits

        hdr = Signal(8 * HEADER_BYTES)
        opcode, addr, count = hdr[0:8], hdr[8:40], hdr[40:56]
        nrecv = Signal(range(HEADER_BYTES + 1))
        csum = Signal(8)                      # running sum of the request / response
        status = Signal(8)
        framing = Signal()
        word = Signal(max(8 * sb, 32))        # payload word being assembled
        wbyte = Signal(range(max(sb, PROG_WORD_BYTES) + 1))
        left = Signal(17)                     # payload words still to come / to send
        ptr = Signal(32)                      # memory / program address
        drop = Signal()                       # consume the payload without writing it
        obuf = Signal(8 * buf_bytes)
        onum = Signal(range(buf_bytes + 1))
        after = Signal(2)                     # what follows the buffer: 0 checksum, 1 next word
        idle = Signal(range(self.timeout + 1))

        rx, tx = self.rx, self.tx
        byte = rx.payload.data
        got = rx.valid & rx.ready

        in_frame = Signal()
        with m.If(got | ~in_frame):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != self.timeout):
            m.d.sync += idle.eq(idle + 1)
        timed_out = in_frame & (idle == self.timeout)

        is_buf = (opcode == OP_WRITE_PROG) | (opcode == OP_WRITE_BUF)
        is_write = (opcode == OP_WRITE_MEM) | is_buf
        wlen = Mux(opcode == OP_WRITE_MEM, sb, PROG_WORD_BYTES)
        # The header's checks run in three registered stages while the header is held
        # (states CHECK, CHECK2, CHECK3, after its last byte), so that no adder or compare
        # sits in front of the decisions and no stage is more than an adder or a compare
        # (for Fmax: the one-stage form was the default board build's critical path; three
        # cycles per request, nothing next to a UART byte).
        # stage 1: the sums, of the address's low bits only: every limit fits ``lim_bits``
        # bits, so an address with a bit above them is out of range whatever the count
        # (for area: a 17- to 25-bit sum, not 33 bits, on the iCE40 board's 10-bit memory)
        bsel, boff = addr[BUF_SHIFT:], addr[:BUF_SHIFT]    # WRITE_BUF: buffer, word offset
        lim_bits = max(mem_words, self.prog_words, *self.buffers).bit_length()
        lb = min(lim_bits, BUF_SHIFT)
        end, bend = Signal(max(lim_bits, 16) + 1), Signal(max(lb, 16) + 1)
        addr_high, boff_high = Signal(), Signal()
        m.d.sync += [end.eq(addr[:lim_bits] + count), bend.eq(boff[:lb] + count),
                     addr_high.eq(addr[lim_bits:] != 0), boff_high.eq(boff[lb:] != 0)]
        # stage 2: the compares (buffer 0 is the program buffer)
        prog_bad, mem_bad, buf_bad, set_bad, run_bad = (Signal(name=n) for n in (
            "prog_bad", "mem_bad", "buf_bad", "set_bad", "run_bad"))
        m.d.sync += [prog_bad.eq(addr_high | (end > self.prog_words)), mem_bad.eq(addr_high | (end > mem_words)),
                     run_bad.eq((count == 0) | (addr != 0) | (count > self.max_instr))]
        m.d.sync += buf_bad.eq(1)
        for b, depth in enumerate((self.prog_words,) + self.buffers):
            with m.If(bsel == b):
                m.d.sync += buf_bad.eq(boff_high | (bend > depth))
        m.d.sync += set_bad.eq(1)
        for r, limit in enumerate(self.reg_limits):
            with m.If(addr == r):
                m.d.sync += set_bad.eq(count > limit)
        # stage 3: the opcode's check, and the opcode's classes
        range_bad = Signal()
        with m.Switch(opcode):
            with m.Case(OP_WRITE_PROG):
                m.d.sync += range_bad.eq(prog_bad)
            with m.Case(OP_WRITE_BUF):
                m.d.sync += range_bad.eq(buf_bad)
            with m.Case(OP_SET):
                m.d.sync += range_bad.eq(set_bad)
            with m.Case(OP_RUN):
                m.d.sync += range_bad.eq(run_bad)
            with m.Default():
                m.d.sync += range_bad.eq(mem_bad)
        known, needs_idle = Signal(), Signal()
        m.d.sync += [known.eq((opcode >= OP_PING) & (opcode <= OP_COUNTERS) |
                              (opcode == OP_WRITE_BUF) & int(bool(self.buffers)) |
                              (opcode == OP_SET) & int(bool(self.reg_limits))),
                     needs_idle.eq(is_write | (opcode == OP_RUN) | (opcode == OP_SET))]

        req = self.mem.req
        m.d.sync += [self.prog_we.eq(0), self.run.eq(0)]
        with m.If(req.ready):
            m.d.sync += req.valid.eq(0)

        # What a response chunk is made of.  The decision (in CHECKSUM and NEXT) registers
        # its source, and LOAD copies that into obuf a cycle later (for Fmax: obuf's
        # enables, hundreds of flip-flops with the counters, are not behind the decision's
        # compares; a cycle per chunk, nothing next to a UART byte).  A memory word is
        # loaded directly on rvalid (a register).
        SRC_STATUS, SRC_CSUM, SRC_PING, SRC_STATE, SRC_COUNTERS = range(5)
        src = Signal(range(5))
        # (with more than one counter chunk only)
        c_idx = Signal(range(max(n_chunks, 2)))       # the counter chunk LOAD takes
        c_left = Signal(range(cb + 1))                # counter bytes after the chunks loaded

        def load(source, nbytes, then):
            m.d.sync += [src.eq(source), onum.eq(nbytes), after.eq(then)]
            m.next = "LOAD"

        def send_status(st):
            load(SRC_STATUS, 1, 0)
            m.d.sync += [csum.eq(st), status.eq(st)]

        # A frame that passes its checks starts its run or sets its register a cycle later,
        # from registered decisions (for Fmax: on the board the checksum compare and the
        # frame checks were in front of the SET registers' enables, across the die by the
        # core); the header (opcode, addr, count) holds while the status is sent.
        n_regs = len(self.reg_limits)
        do_run, do_set = Signal(), Signal(max(1, n_regs))
        m.d.sync += [do_run.eq(0), do_set.eq(0)]
        with m.If(do_run):
            m.d.sync += [self.run.eq(1), self.run_len.eq(count)]
        for r in range(n_regs):
            with m.If(do_set[r]):
                m.d.sync += self.regs[r].eq(count)

        with m.FSM():
            with m.State("HEADER"):
                m.d.comb += rx.ready.eq(1)
                with m.If(got):
                    m.d.sync += [hdr.eq(Cat(hdr[8:], byte)), nrecv.eq(nrecv + 1),
                                 csum.eq(Mux(nrecv == 0, byte, csum + byte)),
                                 framing.eq(Mux(nrecv == 0, 0, framing) | rx.payload.framing_error),
                                 in_frame.eq(1)]
                    with m.If(nrecv == HEADER_BYTES - 1):
                        m.d.sync += nrecv.eq(0)
                        m.next = "CHECK"
                with m.If(timed_out):
                    m.d.sync += [nrecv.eq(0), in_frame.eq(0)]
            with m.State("CHECK"):              # the header's checks, stage 1 (see above)
                m.next = "CHECK2"
            with m.State("CHECK2"):
                m.next = "CHECK3"
            with m.State("CHECK3"):
                m.next = "DECIDE"
            with m.State("DECIDE"):
                m.d.sync += [ptr.eq(addr), left.eq(count), wbyte.eq(0), word.eq(0),
                             drop.eq(~known | range_bad | (needs_idle & self.status.running))]
                with m.If(is_write & (count != 0)):
                    m.next = "PAYLOAD"
                with m.Else():
                    m.next = "CHECKSUM"
            with m.State("PAYLOAD"):
                m.d.comb += rx.ready.eq(~req.valid & self.buf_ready)
                full = Mux(opcode == OP_WRITE_MEM, Cat(word[8:8 * sb], byte), Cat(word[8:32], byte))
                with m.If(got):
                    m.d.sync += [csum.eq(csum + byte), framing.eq(framing | rx.payload.framing_error),
                                 word.eq(full), wbyte.eq(wbyte + 1)]
                    with m.If(wbyte + 1 == wlen):
                        m.d.sync += [wbyte.eq(0), left.eq(left - 1), ptr.eq(ptr + 1)]
                        with m.If(~drop & ~framing & ~rx.payload.framing_error):
                            with m.If(opcode == OP_WRITE_MEM):
                                m.d.sync += [req.valid.eq(1), req.payload.we.eq(1),
                                             req.payload.addr.eq(ptr), req.payload.data.eq(full)]
                            with m.Else():
                                m.d.sync += [self.prog_we.eq(1), self.prog_addr.eq(ptr),
                                             self.prog_data.eq(full)]
                                if self.buffers:
                                    m.d.sync += self.buf_sel.eq(Mux(opcode == OP_WRITE_BUF, bsel, 0))
                        with m.If(left == 1):
                            m.next = "CHECKSUM"
                with m.If(timed_out):
                    m.d.sync += in_frame.eq(0)
                    m.next = "HEADER"
            with m.State("CHECKSUM"):
                m.d.comb += rx.ready.eq(~req.valid)
                with m.If(got):
                    m.d.sync += in_frame.eq(0)
                    with m.If(framing | rx.payload.framing_error):
                        send_status(ST_FRAMING)
                    with m.Elif(byte != csum):
                        send_status(ST_BAD_CHECKSUM)
                    with m.Elif(~known):
                        send_status(ST_BAD_OPCODE)
                    with m.Elif(range_bad):
                        send_status(ST_BAD_RANGE)
                    with m.Elif(needs_idle & (drop | self.status.running)):
                        send_status(ST_BUSY)
                    with m.Else():
                        send_status(ST_OK)
                        m.d.sync += [do_run.eq(opcode == OP_RUN),
                                     do_set.eq(Cat(*[(opcode == OP_SET) & (addr == r)
                                                     for r in range(len(self.reg_limits))]))]
                with m.If(timed_out):
                    m.d.sync += in_frame.eq(0)
                    m.next = "HEADER"
            with m.State("SEND"):
                # shift out obuf (onum bytes); payload bytes join the response checksum
                m.d.comb += [tx.valid.eq(onum != 0), tx.payload.eq(obuf[:8])]
                with m.If(tx.valid & tx.ready):
                    m.d.sync += [obuf.eq(obuf >> 8), onum.eq(onum - 1)]
                    with m.If(after == 1):
                        m.d.sync += csum.eq(csum + obuf[:8])
                with m.If(onum == 0):
                    m.next = "NEXT"
            with m.State("NEXT"):
                # status sent (csum holds it) or a payload chunk sent: what comes next?
                with m.If(after == 2):                           # checksum sent: done
                    m.d.sync += self.frame_errors.eq(self.frame_errors + (status != ST_OK))
                    m.next = "HEADER"
                if n_chunks > 1:
                    with m.Elif((status == ST_OK) & (after == 1) & (c_left != 0)):   # next counter chunk
                        load(SRC_COUNTERS, Mux(c_left > ck, ck, c_left), 1)
                        m.d.sync += [c_idx.eq(c_idx + 1), c_left.eq(Mux(c_left > ck, c_left - ck, 0))]
                with m.Elif((status != ST_OK) | (after == 1) & (left == 0)):
                    load(SRC_CSUM, 1, 2)
                with m.Elif(after == 1):                         # next memory word
                    m.next = "READ"
                with m.Elif(opcode == OP_PING):
                    load(SRC_PING, PING_BYTES, 1)
                    m.d.sync += left.eq(0)
                with m.Elif(opcode == OP_STATUS):
                    load(SRC_STATE, STATUS_BYTES, 1)
                    m.d.sync += left.eq(0)
                with m.Elif(opcode == OP_COUNTERS):
                    load(SRC_COUNTERS, min(cb, ck), 1)
                    m.d.sync += left.eq(0)
                    if n_chunks > 1:
                        m.d.sync += [c_idx.eq(0), c_left.eq(cb - ck)]
                with m.Elif((opcode == OP_READ_MEM) & (left != 0)):
                    m.next = "READ"
                with m.Else():
                    load(SRC_CSUM, 1, 2)
            with m.State("LOAD"):
                st = self.status
                sources = {
                    SRC_STATUS: status,
                    SRC_CSUM: csum,
                    SRC_PING: Cat(Const(MAGIC, 16), Const(VERSION, 8),
                                  Const(int.from_bytes(self.info, "little"), 8 * len(self.info))),
                    SRC_STATE: Cat(st.running, st.engine_busy, st.done, Const(0, 5),
                                   st.error, Const(0, 4), st.pc),
                    SRC_COUNTERS: (Cat(self.counters, Const(0, n_chunks * 8 * ck - len(self.counters)))
                                   .word_select(c_idx, 8 * ck) if n_chunks > 1 else self.counters),
                }
                with m.Switch(src):
                    for code, value in sources.items():
                        with m.Case(code):
                            m.d.sync += obuf.eq(value)
                m.next = "SEND"
            with m.State("READ"):
                m.d.sync += [req.valid.eq(1), req.payload.we.eq(0), req.payload.addr.eq(ptr)]
                m.next = "READ_WAIT"
            with m.State("READ_WAIT"):
                with m.If(self.mem.rvalid):
                    m.d.sync += [obuf.eq(self.mem.rdata), onum.eq(sb), after.eq(1),
                                 ptr.eq(ptr + 1), left.eq(left - 1)]
                    m.next = "SEND"

        return m
