"""Tensor-reorganization unit: a passive tap on the engine's output write stream that
turns one layer's output activations into one predictor sample per output channel.

Golden: ``model_sw.adagp_reorg.reorg_samples_int`` (bit-exact; that function is in
turn bit-exact with model_sw's float path ``quantize_samples(layer_samples(...))``).

Datapath (per layer, configured by one descriptor, :func:`reorg_descriptor`)::

  engine.wr (valid & ready only; never back-pressured)
    -> s1: register the beat (C lanes of addr/data/en)
    -> s2: per lane: off = addr - base; channel = off >> lg_cs; y = (off >> lg_w) & (H-1);
           x = off & (W-1); slot = (y >> lg_fh) * P + (x >> lg_fw)   (shifts and masks only)
           conv: word = channel, linear: word = channel >> log2(P*P), slot = channel & (P*P-1)
           contribution of the beat to each of the P*P slots (masked adds); SRAM read of word
    -> s3: word += contribution (read-modify-write; the read port is transparent for the
           write port, so back-to-back beats to one word need no forwarding)
  after the layer's last element (the element counter reaches C_out << lg_cs):
    SCAN  max |S| over the layer's words (one word per cycle)
    SHIFT g = numerics.choose_frac_bits_int(max|S|) - e, capped (descriptor ``g_cap``)
    EMIT  one sample per channel: sat8(round_half_even(S * 2**g)) for the P*P sums;
          linear layers emit the centred P*P window of neuron means (zero outside);
          every word read is zeroed behind (the SRAM is all zero between layers).

Storage: two banks (``lib.memory``), each ``pred_max_cout`` words of P*P exact sums,
so layer L+1 accumulates while layer L is scanned and emitted (the predictor array
may back-pressure ``samples`` for as long as it likes).

Restrictions (a clear ``ReorgHwError`` in Python, an error status in hardware): the
batch and the map sides H, W are powers of two (every divide is a shift); the map
fits the predictor input by integer pooling or zero padding (model_sw's rule);
1 <= C_out <= pred_max_cout; each beat's lanes belong to one SRAM word (true for the
engine's layouts: a conv row is one channel, a linear row is one neuron).
"""
from __future__ import annotations

from amaranth import Module, Signal, Mux, Cat, Const, signed, unsigned
from amaranth.lib import wiring, stream, data, memory
from amaranth.lib.wiring import In, Out

from model_sw import adagp_reorg
from rtl.config import AcceleratorConfig
from rtl.engine import mem_wr_layout
from rtl.epilogue import Requantize
from .interfaces import sample_layout, PRED_OP_BITS

SUM_BITS = 32          # exact per-(channel, bin) sums
MAX_FRAC = 24          # numerics.choose_frac_bits' cap
ACC_STAGES = 2         # decode registers between the observed beat and the slot sums
SHIFT_STATES = 3       # SHIFT, SHIFT2, SHIFT3: the sample scale g from max |S|
QZ_STATES = 2          # Q1, Q2 after LOAD: the quantizers' two stages
QZ_BITS = SUM_BITS + 8  # a sum shifted left by g <= 7 (the largest left shift that can change a value)

ERR_COUT = 1           # C_out > pred_max_cout
ERR_ZERO = 2           # zero-size layer
ERR_MAP = 3            # map geometry the pooling cannot fit
ERR_BEAT = 4           # a write beat spans two SRAM words (layout not supported)
ERROR_NAMES = {ERR_COUT: "layer wider than the predictor supports (C_out > pred_max_cout)",
               ERR_ZERO: "zero-size layer", ERR_MAP: "map the pooling cannot fit",
               ERR_BEAT: "write beat spans two channels"}


class ReorgHwError(adagp_reorg.ReorgError):
    """A layer the hardware reorganization cannot take; the message names the value."""


def _lg(cfg: AcceleratorConfig) -> int:
    return cfg.pred_p.bit_length() - 1


def desc_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({
        "kind": unsigned(1),                   # 0 conv, 1 linear
        "base": unsigned(cfg.mem_addr_bits),   # first slot of the layer's output
        "c_out": unsigned(cfg.dim_bits),       # output channels (conv) / neurons (linear)
        "lg_cs": unsigned(6),                  # log2 channel stride in slots: B*H*W (conv), B (linear)
        "lg_h": unsigned(5), "lg_w": unsigned(5),
        "lg_fh": unsigned(5), "lg_fw": unsigned(5),   # pool factors (0: no pooling / pad)
        "g_cap": signed(8),                    # MAX_FRAC - y_frac - log2(count): the largest shift g
        "k": unsigned(cfg.dim_bits),           # fan-in, passed to the predictor array
        "layer_id": unsigned(8),
    })


def tap_signature(cfg: AcceleratorConfig) -> wiring.Signature:
    """A stream seen from the side: valid, ready and payload are all inputs of the tap."""
    return wiring.Signature({"valid": Out(1), "ready": Out(1), "payload": Out(mem_wr_layout(cfg))})


def _log2_pow2(v: int, what: str) -> int:
    if v < 1 or v & (v - 1):
        raise ReorgHwError(f"{what}={v} must be a power of two (the hardware divides by shifts)")
    return v.bit_length() - 1


def reorg_descriptor(cfg: AcceleratorConfig, *, kind: str, base: int, batch: int, c_out: int,
                     h: int = 1, w: int = 1, y_frac: int, k: int, layer_id: int = 0,
                     y_bits: int = 8, name: str = "layer") -> dict:
    """The descriptor of one layer whose output ``[C_out, B, H, W]`` (conv; linear:
    ``[N, B]``) starts at slot ``base``.  Raises :class:`ReorgHwError` for anything the
    unit does not support (the hardware would set the matching error status)."""
    p = cfg.pred_p
    if p & (p - 1):
        raise ReorgHwError(f"pred_p={p}: the reorganization unit needs a power of two")
    if kind not in ("conv", "linear"):
        raise ReorgHwError(f"{name}: kind={kind!r} must be conv or linear")
    if c_out < 1 or batch < 1 or h < 1 or w < 1:
        raise ReorgHwError(f"{name}: zero-size layer (C_out={c_out}, batch={batch}, H={h}, W={w})")
    if c_out > cfg.pred_max_cout:
        raise ReorgHwError(f"{name}: C_out={c_out} is wider than the predictor supports "
                           f"(pred_max_cout={cfg.pred_max_cout})")
    if kind == "linear" and (h, w) != (1, 1):
        raise ReorgHwError(f"{name}: a linear layer has H = W = 1, got {h}x{w}")
    lg_b = _log2_pow2(batch, f"{name}: batch")
    lg_h, lg_w = _log2_pow2(h, f"{name}: H"), _log2_pow2(w, f"{name}: W")
    try:
        fh, fw = adagp_reorg.pool_factors(h, w, p, name)
    except adagp_reorg.ReorgError as e:
        raise ReorgHwError(str(e)) from None
    lg_fh, lg_fw = fh.bit_length() - 1, fw.bit_length() - 1
    lg_cs = lg_b + lg_h + lg_w
    count_lg = lg_b + lg_fh + lg_fw
    if (1 << (y_bits - 1)) << count_lg >= 1 << (SUM_BITS - 1):
        raise ReorgHwError(f"{name}: a sum of {1 << count_lg} values of {y_bits} bits can overflow "
                           f"the {SUM_BITS}-bit accumulators")
    if base < 0 or base + (c_out << lg_cs) > cfg.mem_words:
        raise ReorgHwError(f"{name}: output [{base}, {base + (c_out << lg_cs)}) leaves memory "
                           f"of {cfg.mem_words} slots")
    if not 0 <= k < 1 << cfg.dim_bits or not 0 <= layer_id < 256:
        raise ReorgHwError(f"{name}: k={k} or layer_id={layer_id} out of range")
    # the shift cap of choose_frac_bits' max_frac; below -40 every |S| < 2**31 rounds to 0
    # either way, so clamping keeps the field and the shifters narrow without changing a value
    g_cap = max(-40, min(MAX_FRAC - y_frac - count_lg, 127))
    return {"kind": int(kind == "linear"), "base": base, "c_out": c_out, "lg_cs": lg_cs,
            "lg_h": lg_h, "lg_w": lg_w, "lg_fh": lg_fh, "lg_fw": lg_fw, "g_cap": g_cap,
            "k": k, "layer_id": layer_id}


def pack_desc(cfg: AcceleratorConfig, d: dict) -> int:
    """The descriptor as an integer (for harness ROMs and simulators)."""
    lay = desc_layout(cfg)
    word = 0
    for name, fld in lay:
        v = int(d[name]) & ((1 << fld.width) - 1)
        word |= v << fld.offset
    return word


def _qz_cfg(cfg: AcceleratorConfig) -> AcceleratorConfig:
    """A configuration view for rtl.epilogue.Requantize: QZ_BITS sums -> int8 over P*P slots."""
    return cfg.replace(name=f"{cfg.name}-reorg-qz", cols=cfg.pred_p * cfg.pred_p, op_bits=PRED_OP_BITS,
                       acc_bits=QZ_BITS)


def scan_latency(cfg: AcceleratorConfig) -> int:
    """Pipeline registers of the max |S| scan: read data, |S|, one per comparator-tree level."""
    return 2 + (cfg.pred_p * cfg.pred_p - 1).bit_length()


class ReorgUnit(wiring.Component):
    """See the module docstring.  Ports:

    * ``tap``      the engine's ``wr`` stream, observed (all inputs)
    * ``desc``     next layer's descriptor (accepted when a bank is free)
    * ``samples``  one predictor sample per output channel (honours back-pressure)
    * ``layer_k``, ``layer_id``  of the layer being emitted
    * ``armed``, ``armed_id``    a layer is being accumulated, and which
    * ``error``    first error status since reset (sticky; the unit stops)
    * ``busy``     anything in flight (a layer armed, a bank in use); ``emitting``: scan/shift/emit
    """

    def __init__(self, cfg: AcceleratorConfig):
        if cfg.pred_p & (cfg.pred_p - 1):
            raise ReorgHwError(f"pred_p={cfg.pred_p}: the reorganization unit needs a power of two")
        if cfg.pred_max_cout < 2:
            raise ReorgHwError(f"pred_max_cout={cfg.pred_max_cout}: the reorganization unit needs >= 2 "
                               "(a linear layer's window reads the word after its last)")
        self.cfg = cfg
        super().__init__({
            "tap": In(tap_signature(cfg)),
            "desc": In(stream.Signature(desc_layout(cfg))),
            "samples": Out(stream.Signature(sample_layout(cfg))),
            "layer_k": Out(cfg.dim_bits),
            "layer_id": Out(8),
            "armed": Out(1),
            "armed_id": Out(8),
            "error": Out(4),
            "busy": Out(1),
            "emitting": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        C = cfg.cols
        P = cfg.pred_p
        PP = P * P
        lg_p = _lg(cfg)
        lg_pp = 2 * lg_p
        SCAN_LAT = scan_latency(cfg)
        NW = cfg.pred_max_cout
        aw = cfg.mem_addr_bits
        sum_row = data.ArrayLayout(signed(SUM_BITS), PP)
        q_row = data.ArrayLayout(signed(PRED_OP_BITS), PP)

        # ---------------- storage: two banks ---------------------------------------
        banks = []
        for b in range(2):
            mem = memory.Memory(shape=sum_row, depth=NW, init=[])
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(transparent_for=(wp,))
            banks.append((wp, rp))

        err = Signal(4)
        m.d.comb += self.error.eq(err)
        set_err = Signal(4)
        with m.If((set_err != 0) & (err == 0)):
            m.d.sync += err.eq(set_err)

        # bank states: FREE(0) -> ACC(1) -> FULL(2) -> FREE
        st = [Signal(2, name=f"bank{b}_state") for b in range(2)]
        bdesc = [Signal(desc_layout(cfg), name=f"bank{b}_desc") for b in range(2)]

        # ---------------- accumulate side --------------------------------------------
        acc_bank = Signal()
        hmask = Signal(aw + 1)                      # H - 1, W - 1 of the armed layer
        wmask = Signal(aw + 1)
        ad = Signal(desc_layout(cfg))               # descriptor being accumulated
        armed = Signal()
        total = Signal(aw + 1)
        count = Signal(aw + 1)
        m.d.comb += [self.armed.eq(armed), self.armed_id.eq(ad.layer_id)]

        st_acc = Mux(acc_bank, st[1], st[0])
        m.d.comb += self.desc.ready.eq(~armed & (st_acc == 0) & (err == 0))
        dsc = self.desc.payload
        with m.If(self.desc.valid & self.desc.ready):
            lin = dsc.kind
            gm_ok = Signal()
            # conv: lg_cs >= lg_h + lg_w and the pool factor follows from the side (model_sw's fit)
            side_ok = []
            for lg_s, lg_f in ((dsc.lg_h, dsc.lg_fh), (dsc.lg_w, dsc.lg_fw)):
                side_ok.append(Mux(lg_s > lg_p, lg_f == lg_s - lg_p, lg_f == 0))
            m.d.comb += gm_ok.eq(Mux(lin, (dsc.lg_h == 0) & (dsc.lg_w == 0) & (dsc.lg_fh == 0) & (dsc.lg_fw == 0),
                                     (dsc.lg_cs >= dsc.lg_h + dsc.lg_w) & side_ok[0] & side_ok[1])
                                 & ((dsc.c_out << dsc.lg_cs) <= cfg.mem_words))
            with m.If(dsc.c_out == 0):
                m.d.comb += set_err.eq(ERR_ZERO)
            with m.Elif(dsc.c_out > NW):
                m.d.comb += set_err.eq(ERR_COUT)
            with m.Elif(~gm_ok):
                m.d.comb += set_err.eq(ERR_MAP)
            with m.Else():
                m.d.sync += [ad.eq(dsc), armed.eq(1), count.eq(0), total.eq(dsc.c_out << dsc.lg_cs),
                             hmask.eq((Const(1, aw + 1) << dsc.lg_h) - 1),
                             wmask.eq((Const(1, aw + 1) << dsc.lg_w) - 1)]
                for b in range(2):
                    with m.If(acc_bank == b):
                        m.d.sync += [st[b].eq(1), bdesc[b].eq(dsc)]

        # s1: the observed beat, registered
        tap = self.tap
        s1_v = Signal()
        s1 = Signal(mem_wr_layout(cfg))
        m.d.sync += [s1_v.eq(tap.valid & tap.ready & armed & (err == 0)), s1.eq(tap.payload)]

        # s2a: per lane, the offset into the layer's output (registered); s2b: channel, word,
        # slot and the in-range test (registered); s2: contribution per slot, SRAM read.
        # (ACC_STAGES = 2 registers more than a one-cycle decode: the hand-over is 2 later.)
        # s2a registers the offset and its two shifts (channel: >> lg_cs, row: >> lg_w) in
        # parallel; s2b masks and pools them (H-1, W-1 masks are per-layer registers)
        lane_in, lane_word, lane_slot, lane_val = [], [], [], []
        sa_v = Signal()
        sb_v = Signal()
        m.d.sync += [sa_v.eq(s1_v), sb_v.eq(sa_v)]
        for j in range(C):
            off_c = Signal(signed(aw + 2), name=f"off_c{j}")
            m.d.comb += off_c.eq(s1.addr[j] - ad.base)
            off = Signal(signed(aw + 2), name=f"off{j}")
            ch = Signal(aw + 1, name=f"ch{j}")
            orow = Signal(aw + 1, name=f"orow{j}")
            m.d.sync += [off.eq(off_c), ch.eq(off_c.as_unsigned()[:aw + 1] >> ad.lg_cs),
                         orow.eq(off_c.as_unsigned()[:aw + 1] >> ad.lg_w)]
            en_a = Signal(name=f"en_a{j}")
            val_a = Signal(signed(cfg.slot_bits), name=f"val_a{j}")
            m.d.sync += [en_a.eq(s1_v & s1.en[j]), val_a.eq(s1.data[j].as_signed())]
            inr = Signal(name=f"in{j}")
            m.d.sync += inr.eq(en_a & (off >= 0) & (off < total))
            yy = (orow & hmask) >> ad.lg_fh
            xx = (off.as_unsigned()[:aw + 1] & wmask) >> ad.lg_fw
            word = Signal(aw + 1, name=f"word{j}")
            slot = Signal(lg_pp if lg_pp else 1, name=f"slot{j}")
            with m.If(ad.kind):
                m.d.sync += [word.eq(ch >> lg_pp), slot.eq(ch[:lg_pp] if lg_pp else 0)]
            with m.Else():
                m.d.sync += [word.eq(ch), slot.eq((yy << lg_p) | xx)]
            val = Signal(signed(cfg.slot_bits), name=f"val{j}")
            m.d.sync += val.eq(val_a)
            lane_in.append(inr)
            lane_word.append(word)
            lane_slot.append(slot)
            lane_val.append(val)
        any_in = Signal()
        m.d.comb += any_in.eq(Cat(*lane_in).any())
        bad_beat = Signal()
        m.d.comb += bad_beat.eq(any_in & (~lane_in[0] | Cat(*[lane_in[j] & (lane_word[j] != lane_word[0])
                                                              for j in range(1, C)] + [Const(0)]).any()))
        with m.If(bad_beat):
            m.d.comb += set_err.eq(ERR_BEAT)
        contrib = Signal(sum_row)
        for s in range(PP):
            m.d.comb += contrib[s].eq(sum(Mux(lane_in[j] & (lane_slot[j] == s), lane_val[j], 0)
                                          for j in range(C)))
        n_in = Signal(range(C + 1))
        m.d.comb += n_in.eq(sum(lane_in[j] for j in range(C)))
        s3_v, s3_word, s3_done = Signal(), Signal(range(NW)), Signal()
        s3_contrib = Signal(sum_row)
        new_count = count + n_in
        go = any_in & ~bad_beat
        m.d.sync += [s3_v.eq(go), s3_word.eq(lane_word[0]), s3_contrib.eq(contrib),
                     s3_done.eq(go & (new_count == total))]
        with m.If(go):
            m.d.sync += count.eq(new_count)

        # s3: read-modify-write
        acc_rd_addr = lane_word[0]
        acc_wr_data = Signal(sum_row)
        acc_rd = Signal(sum_row)
        m.d.comb += acc_rd.eq(Mux(acc_bank, banks[1][1].data.as_value(), banks[0][1].data.as_value()))
        for s in range(PP):
            m.d.comb += acc_wr_data[s].eq(acc_rd[s] + s3_contrib[s])
        with m.If(s3_done):   # the layer's last element is written this cycle: hand the bank over
            m.d.sync += [armed.eq(0), acc_bank.eq(~acc_bank)]
            for b in range(2):
                with m.If(acc_bank == b):
                    m.d.sync += st[b].eq(2)

        # ---------------- finish side: scan, shift, emit ---------------------------------
        fin_bank = Signal()
        fdv = Signal(desc_layout(cfg))
        m.d.comb += fdv.eq(Mux(fin_bank, bdesc[1].as_value(), bdesc[0].as_value()))
        m.d.comb += [self.layer_k.eq(fdv.k), self.layer_id.eq(fdv.layer_id)]
        fin_rd_addr = Signal(range(NW + 1))
        fin_rd_en = Signal()
        fin_wr_en = Signal()
        fin_wr_addr = Signal(range(NW))
        frow = Signal(sum_row)
        m.d.comb += frow.eq(Mux(fin_bank, banks[1][1].data.as_value(), banks[0][1].data.as_value()))
        for b, (wp, rp) in enumerate(banks):
            acc_owns = armed & (acc_bank == b)
            with m.If(acc_owns):
                m.d.comb += [rp.addr.eq(acc_rd_addr), rp.en.eq(1),
                             wp.addr.eq(s3_word), wp.data.eq(acc_wr_data), wp.en.eq(s3_v)]
            with m.Else():
                m.d.comb += [rp.addr.eq(fin_rd_addr), rp.en.eq(fin_rd_en),
                             wp.addr.eq(fin_wr_addr), wp.data.eq(0), wp.en.eq(fin_wr_en & (fin_bank == b))]

        nwords = Signal(range(NW + 1))
        m.d.comb += nwords.eq(Mux(fdv.kind, (fdv.c_out + PP - 1) >> lg_pp, fdv.c_out))
        idx = Signal(range(NW + SCAN_LAT + 2))
        amax = Signal(SUM_BITS)
        g = Signal(signed(9))
        g_left = Signal(range(8))
        g_right = Signal(range(64))
        # quantizers (rtl.epilogue.Requantize: round half to even, saturate; its shift and
        # round-bit stage registered) on the read data shifted left by g_left (registered)
        m.submodules.qz = qz = Requantize(_qz_cfg(cfg), latency=1)
        xl = Signal(data.ArrayLayout(signed(QZ_BITS), PP))
        m.d.comb += [qz.en.eq(1), qz.shift.eq(g_right), qz.relu.eq(0)]
        m.d.comb += [qz.row[s].eq(xl[s]) for s in range(PP)]
        qd = qz.out
        cur, prev, nxt = (Signal(q_row, name=n) for n in ("cur", "prev", "nxt"))
        ch = Signal(range(NW + 1))      # channel / neuron being emitted
        r = Signal(range(PP))           # linear: neuron's slot in its word
        out_v = Signal()
        last = ch + 1 == fdv.c_out
        m.d.comb += [self.samples.valid.eq(out_v), self.samples.payload.channel.eq(ch),
                     self.samples.payload.last.eq(last)]
        # payload: conv -> cur; linear -> window of neuron (word w, slot r) from prev/cur/nxt
        cat = Cat(prev.as_value(), cur.as_value(), nxt.as_value())
        half = PP // 2
        for t in range(PP):
            win = Signal(signed(PRED_OP_BITS), name=f"win{t}")
            with m.Switch(r):
                for rr in range(PP):
                    with m.Case(rr):
                        i = PP + rr - half + t
                        m.d.comb += win.eq(cat[i * PRED_OP_BITS:(i + 1) * PRED_OP_BITS].as_signed())
            m.d.comb += self.samples.payload.pix[t].eq(Mux(fdv.kind, win, cur[t]))
        fire = self.samples.valid & self.samples.ready
        st_fin = Mux(fin_bank, st[1], st[0])
        # max |S| over the scanned words, pipelined: the read data registered, |S| registered,
        # then one register per level of the comparator tree; a word read at cycle c updates
        # amax at c + 1 + SCAN_LAT
        scan_rd = Signal()
        sv = [Signal(name=f"scan_v{i}") for i in range(SCAN_LAT + 1)]
        m.d.sync += sv[0].eq(scan_rd)
        m.d.sync += [sv[i + 1].eq(sv[i]) for i in range(SCAN_LAT)]
        frow_r = Signal(sum_row)
        m.d.sync += frow_r.eq(frow)
        absv = []
        for s in range(PP):
            a = Signal(SUM_BITS, name=f"abs{s}")
            m.d.sync += a.eq(Mux(frow_r[s] < 0, -frow_r[s], frow_r[s]))
            absv.append(a)
        lvl = 0
        while len(absv) > 1:          # comparator tree, one register per level
            nxt_level = []
            for i in range(0, len(absv) - 1, 2):
                mxs = Signal(SUM_BITS, name=f"mx{lvl}_{i}")
                m.d.sync += mxs.eq(Mux(absv[i] > absv[i + 1], absv[i], absv[i + 1]))
                nxt_level.append(mxs)
            if len(absv) % 2:
                odd = Signal(SUM_BITS, name=f"mx{lvl}_odd")
                m.d.sync += odd.eq(absv[-1])
                nxt_level.append(odd)
            absv = nxt_level
            lvl += 1
        row_max = absv[0]
        with m.If(sv[SCAN_LAT]):
            m.d.sync += amax.eq(Mux(row_max > amax, row_max, amax))
        # g from amax (two states): k = bit length; g0 = 7 - k, minus one when the top 8
        # bits are all ones (ones8[i]: bits i..i+7 all set), capped by g_cap
        kbits = Signal(range(SUM_BITS + 1))
        for i in range(SUM_BITS):
            with m.If(amax[i]):
                m.d.comb += kbits.eq(i + 1)
        kbits_r = Signal(range(SUM_BITS + 1))
        ones8_r = Signal(SUM_BITS - 7)
        zero_r = Signal()
        top8 = Signal()
        m.d.comb += top8.eq(Mux(kbits_r >= 8, ones8_r.bit_select((kbits_r - 8)[:5], 1), 0))
        g0 = Signal(signed(9))
        m.d.comb += g0.eq(7 - kbits_r.as_signed() - top8)

        with m.FSM(name="fin") as fin_fsm:
            with m.State("IDLE"):
                with m.If(st_fin == 2):
                    m.d.sync += [idx.eq(0), amax.eq(0)]
                    m.next = "SCAN"
            with m.State("SCAN"):      # read word idx < nwords; the pipeline drains after
                m.d.comb += [fin_rd_addr.eq(idx), fin_rd_en.eq(1), scan_rd.eq(idx < nwords)]
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == nwords + SCAN_LAT):
                    m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.sync += [kbits_r.eq(kbits), zero_r.eq(amax == 0),
                             ones8_r.eq(Cat(*[amax[i:i + 8].all() for i in range(SUM_BITS - 7)]))]
                m.next = "SHIFT2"
            with m.State("SHIFT2"):
                m.d.sync += [g.eq(Mux(zero_r | (g0 > fdv.g_cap), fdv.g_cap, g0)),
                             ch.eq(0), r.eq(0), idx.eq(0), prev.eq(0)]
                m.next = "SHIFT3"
            with m.State("SHIFT3"):
                m.d.sync += [g_left.eq(Mux(g > 0, g, 0)), g_right.eq(Mux(g < 0, -g, 0))]
                m.next = "READ"
            with m.State("READ"):      # conv: word ch; linear: word 0 into cur
                m.d.comb += [fin_rd_addr.eq(idx), fin_rd_en.eq(1)]
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [fin_wr_addr.eq(idx), fin_wr_en.eq(1)]   # zero behind the read
                m.d.sync += [xl[s].eq(frow[s] << g_left) for s in range(PP)]
                m.next = "Q1"
            with m.State("Q1"):        # the quantizers' first stage
                m.next = "Q2"
            with m.State("Q2"):
                with m.If(fdv.kind):
                    with m.If(idx == 0):
                        m.d.sync += [cur.eq(qd), idx.eq(1)]
                        m.next = "READ"
                    with m.Else():
                        m.d.sync += [nxt.eq(qd), out_v.eq(1)]
                        m.next = "EMIT"
                with m.Else():
                    m.d.sync += [cur.eq(qd), out_v.eq(1)]
                    m.next = "EMIT"
            with m.State("EMIT"):
                with m.If(fire):
                    m.d.sync += [ch.eq(ch + 1), out_v.eq(0)]
                    with m.If(last):
                        m.next = "DONE"
                    with m.Elif(fdv.kind):
                        m.d.sync += r.eq(r + 1)
                        with m.If(r == PP - 1):   # next word: shift the window, load the next-next
                            m.d.sync += [prev.eq(cur), cur.eq(nxt), idx.eq(idx + 1)]
                            m.next = "READ"
                        with m.Else():
                            m.d.sync += out_v.eq(1)
                    with m.Else():
                        m.d.sync += idx.eq(idx + 1)
                        m.next = "READ"
            with m.State("DONE"):
                # linear: the word after the last loaded one may hold nothing but zeros; all
                # words of the layer were zeroed when loaded (conv: when emitted)
                m.d.sync += fin_bank.eq(~fin_bank)
                for b in range(2):
                    with m.If(fin_bank == b):
                        m.d.sync += st[b].eq(0)
                m.next = "IDLE"
        m.d.comb += self.busy.eq(armed | (st[0] != 0) | (st[1] != 0) | s1_v | sa_v | sb_v | s3_v)
        m.d.comb += self.emitting.eq(~fin_fsm.ongoing("IDLE"))
        return m
