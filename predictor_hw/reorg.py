"""Tensor-reorganization unit: a passive tap on the engine's output write stream that
turns one layer's output activations into one predictor sample per output channel.

Golden: ``model_sw.adagp_reorg.reorg_samples_int`` (bit-exact; that function is in
turn bit-exact with model_sw's float path ``quantize_samples(layer_samples(...))``).

Storage: the exact sums S[c, s] (channel c, slot s of the P x P sample; a linear
layer's neuron n is c = n >> log2(P*P), s = n & (P*P-1)) live at address c*P*P + s
(= n for a linear layer), split over **one narrow memory per engine lane**: lane j
of every beat adds its value into its own memory ``M_j[addr_j]``, and
S = sum_j M_j (the finisher adds the C partial sums when it reads an address).  So
the accumulate side is C 32-bit read-modify-write adders whatever P is, and any
beat is taken in one cycle whatever slots (or channels) its lanes touch.  Two such
bank sets (``lib.memory``, ``pred_max_cout * P*P`` words of 32 bits each) let layer
L+1 accumulate while layer L is scanned and emitted.

Accumulate side (per lane; engine.wr observed with valid & ready, never back-pressured)::

  s1: the beat registered
  sa: off = addr - base                                   (registered)
  sb: in-range; address = (off >> lg_cs) * P*P + slot-y * P + slot-x (conv; bit
      fields of off selected by per-layer shift amounts), off >> lg_cs (linear);
      registered, the memory read is issued from these registers
  sc: read data registered (at the memory's output, the bank multiplexer after it);
      forwarding hits against the two writes not yet visible to that read (registered)
  sw: M_j[addr] = (forwarded or read sum) + value        (the write)

  The layer is handed over (bank FULL) the cycle after its last element's write.

Finish side (one sum per cycle: C read data -> registered adder tree -> S)::

  SCAN   read every address of the layer; max |S| (|S| registered, one comparator)
  SHIFT  g = numerics.choose_frac_bits_int(max|S|) - e, capped (descriptor ``g_cap``);
         five states (bit length and 8-ones flags, 7 - bit length - top-8-ones, g
         capped, the shift amounts, the rounding's guard mask)
  per sample: FILL (read its sums; every address read is zeroed behind, so the
         banks are all zero between layers), WAIT (the pipeline: S, S << g_left, shift
         and round bit, round and saturate: rtl.epilogue's rounding primitives), EMIT (the sample; the step to
         the next one is taken from registers only)
         Each quantized value is shifted into a P*P window register: a conv
         sample is its channel's P*P sums; a linear sample is the centred window
         of P*P neuron values (zero outside the layer), one new neuron per sample.

Restrictions (a clear ``ReorgHwError`` in Python, an error status in hardware): the
batch and the map sides H, W are powers of two (every divide is a shift); the map
fits the predictor input by integer pooling or zero padding (model_sw's rule);
1 <= C_out <= pred_max_cout.  (Beats whose lanes span several slots, slot rows or
channels are fine: every lane has its own memory.)
"""
from __future__ import annotations

from amaranth import Module, Signal, Mux, Cat, Const, Value, signed, unsigned, Assert, Format
from amaranth.lib import wiring, stream, data, memory
from amaranth.lib.wiring import In, Out

from model_sw import adagp_reorg
from rtl.config import AcceleratorConfig
from rtl.copies import COPY_KINDS, register_copies
from rtl.engine import mem_wr_layout
from rtl.epilogue import below_guard_mask, round_saturate, shift_onehot, shift_round_bit
from rtl.skid import offered_for
from .interfaces import sample_layout, PRED_OP_BITS

SUM_BITS = 32          # exact per-(channel, bin) sums (a lane's partial sums too)
MAX_FRAC = 24          # numerics.choose_frac_bits' cap
SHIFT_STATES = 5       # SHIFT .. SHIFT5: the sample scale g from max |S|
QZ_BITS = SUM_BITS + 8  # a sum shifted left by g <= 7 (the largest left shift that can change a value)
G_CAP_MIN = -40         # g_cap's floor (reorg_descriptor): below it every |S| < 2**31 rounds to 0
HANDOVER = 6           # last beat -> bank FULL: s1, sa, sb, sc, sw, hand-over register
DESC_SEEN = 2          # a descriptor is taken at the earliest this many cycles after it is offered (its checks
                       # registered in two stages)
PUSH_EXTRA = 4         # S -> window: S << g_left, shift and round bit, round and saturate (registered), the push

ERR_COUT = 1           # C_out > pred_max_cout
ERR_ZERO = 2           # zero-size layer
ERR_MAP = 3            # map geometry the pooling cannot fit
ERR_BEAT = 4           # (not raised any more: every lane has its own memory; code kept reserved)
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
    g_cap = max(G_CAP_MIN, min(MAX_FRAC - y_frac - count_lg, 127))
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


def _lg_lanes(cfg: AcceleratorConfig) -> int:
    """Levels of the finisher's adder tree over the C lanes' partial sums."""
    return (cfg.cols - 1).bit_length()


def scan_latency(cfg: AcceleratorConfig) -> int:
    """Cycles from a finisher read to its sum S in a register: read data registered,
    then one register per level of the adder tree over the C lanes."""
    return 2 + _lg_lanes(cfg)


def emit_cycles(cfg: AcceleratorConfig, kind: str, c_out: int) -> tuple[int, list[int]]:
    """Cycles of the finisher from its first SCAN cycle: (DONE -> bank free, the cycle
    each sample is offered).  SCAN reads every address, then waits for the last |S| to
    reach ``amax`` (scan_latency + 1); SHIFT x5; per sample FILL (one read per sum
    needed: P*P for a conv sample, P*P - P*P//2 for a linear layer's first and 1 for
    each further one), WAIT (scan_latency + PUSH_EXTRA - 1), EMIT (taken at once);
    the bank is free two cycles after the last sample (DONE)."""
    pp = cfg.pred_p ** 2
    lat = scan_latency(cfg)
    n_valid = c_out * pp if kind == "conv" else c_out
    t = n_valid + lat + 1 + SHIFT_STATES
    offs = []
    for i in range(c_out):
        fill = pp if kind == "conv" else (pp - pp // 2 if i == 0 else 1)
        t += fill + lat + PUSH_EXTRA - 1
        offs.append(t)
        t += 1
    return offs[-1] + 2, offs


def bit_length(v):
    """Python's ``int.bit_length`` of an unsigned value, as a tree (for Fmax: a priority
    chain over the 32 bits was ten LUT levels): the high half's length plus the low half's
    width if the high half has a bit set, else the low half's length."""
    v = Value.cast(v)
    n = len(v)
    if n == 1:
        return v
    lo, hi = v[:n // 2], v[n // 2:]
    return Mux(hi.any(), bit_length(hi) + n // 2, bit_length(lo))


def cout_fits(cfg: AcceleratorConfig, c_out, lg_cs):
    """(c_out << lg_cs) <= mem_words (the layer's slots fit the address space), without a
    shifter or a comparator (for Fmax: a table of limits by lg_cs and a compare were ten
    LUT levels behind the descriptor).  With e = aw - lg_cs: c_out <= 2**e iff c_out has
    no bit at or above e, or is exactly 2**e; each bit's test is a compare of lg_cs with a
    constant."""
    aw = cfg.mem_addr_bits
    n = len(c_out)
    above = Cat(*(c_out[i] & (lg_cs >= aw - i) if aw - i > 0 else c_out[i] for i in range(n)))
    is_pow = Cat(*((c_out[i] == (lg_cs == aw - i)) if aw - i >= 0 else ~c_out[i] for i in range(n))).all()
    return ~above.any() | is_pow


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

    def __init__(self, cfg: AcceleratorConfig, check: bool = False):
        if cfg.pred_p & (cfg.pred_p - 1):
            raise ReorgHwError(f"pred_p={cfg.pred_p}: the reorganization unit needs a power of two")
        if cfg.pred_max_cout < 1:
            raise ReorgHwError(f"pred_max_cout={cfg.pred_max_cout}: the reorganization unit needs >= 1")
        self.cfg = cfg
        # simulation (the Amaranth simulator): assert every cycle that no lane reads or
        # writes its accumulate bank while its copy of the ownership differs from the exact
        # `armed & acc_bank == b` (the copies rise late, see below)
        self.check = check
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
        LAT = scan_latency(cfg)
        NW = cfg.pred_max_cout
        DEPTH = NW * PP                  # sums per lane memory: address c * P*P + s
        aw = cfg.mem_addr_bits
        sum_s = signed(SUM_BITS)

        # ---------------- storage: two banks of C lane memories ----------------------
        # ports[b][j] = (write port, read port) of lane j's memory in bank b
        ports = []
        for b in range(2):
            row = []
            for j in range(C):
                mem = memory.Memory(shape=sum_s, depth=DEPTH, init=[])
                m.submodules[f"bank{b}_lane{j}"] = mem
                row.append((mem.write_port(), mem.read_port()))
            ports.append(row)

        # every memory's read data registered right at its output (bank muxes after it).
        # The memories read every cycle: every read whose data is used travels with its
        # own valid flag down the pipelines (accumulate: s1..sc; finish: rd_scan, rd_emit),
        # so nothing relies on a port holding its data (for Fmax: the finisher's state
        # decoded into the block RAMs' clock enables, across the die to both banks, was
        # 2bc8168's routed critical path on seed 1, 80.2 MHz)
        rdr = [[Signal(sum_s, name=f"rdr{b}_{j}") for j in range(C)] for b in range(2)]
        for b in range(2):
            m.d.sync += [rdr[b][j].eq(ports[b][j][1].data) for j in range(C)]
            m.d.comb += [ports[b][j][1].en.eq(1) for j in range(C)]

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
        ysh = Signal(6)                             # lg_w + lg_fh: slot-y field of the offset
        ad = Signal(desc_layout(cfg))               # descriptor being accumulated
        armed = Signal()
        total = Signal(aw + 1)
        left = Signal(aw + 1)                       # elements of the layer not yet counted
        m.d.comb += [self.armed.eq(armed), self.armed_id.eq(ad.layer_id)]

        st_acc = Mux(acc_bank, st[1], st[0])
        dsc = self.desc.payload
        # The descriptor's checks are registered from the payload every cycle, in two stages
        # (each check's flag, then ``dsc_code``), and a descriptor is taken only once they
        # are its own: ``dsc_seen``, valid in the previous DESC_SEEN cycles and not taken
        # then (a stream's payload is held while valid).  For Fmax: on the board the payload
        # is a register of the host-loaded stream buffer, and the checks in front of the
        # acceptance's ~150 enables were a long path; in one stage they were still the
        # estimate's second worst path (11.3 ns).  A descriptor waiting for a free bank, the
        # normal case, is taken as before; one that arrives at a free bank waits DESC_SEEN.
        dsc_seen = offered_for(m, self.desc.valid, self.desc.ready, DESC_SEEN, "dsc_seen")
        m.d.comb += self.desc.ready.eq(~armed & (st_acc == 0) & (err == 0) & dsc_seen)
        # conv: lg_cs >= lg_h + lg_w and the pool factor follows from the side (model_sw's fit)
        side_ok = []
        for lg_s, lg_f in ((dsc.lg_h, dsc.lg_fh), (dsc.lg_w, dsc.lg_fw)):
            side_ok.append(Mux(lg_s > lg_p, lg_f == lg_s - lg_p, lg_f == 0))
        checks = {"zero": dsc.c_out == 0, "cout": dsc.c_out > NW, "lin": dsc.kind,
                  "lin_ok": (dsc.lg_h == 0) & (dsc.lg_w == 0) & (dsc.lg_fh == 0) & (dsc.lg_fw == 0),
                  "cs_ok": dsc.lg_cs >= dsc.lg_h + dsc.lg_w, "side0": side_ok[0], "side1": side_ok[1],
                  "fits": cout_fits(cfg, dsc.c_out, dsc.lg_cs)}
        ck = {name: Signal(name=f"dsc_{name}") for name in checks}
        m.d.sync += [ck[name].eq(v) for name, v in checks.items()]
        gm_ok = Mux(ck["lin"], ck["lin_ok"], ck["cs_ok"] & ck["side0"] & ck["side1"]) & ck["fits"]
        # the layer's derived values, registered from the payload the same way (the shifts
        # are not between the payload and the registers they load)
        pre_total, pre_hmask, pre_wmask = Signal.like(total), Signal.like(hmask), Signal.like(wmask)
        pre_ysh = Signal.like(ysh)
        m.d.sync += [pre_total.eq(dsc.c_out << dsc.lg_cs),
                     pre_hmask.eq((Const(1, aw + 1) << dsc.lg_h) - 1),
                     pre_wmask.eq((Const(1, aw + 1) << dsc.lg_w) - 1),
                     pre_ysh.eq(dsc.lg_w + dsc.lg_fh)]
        dsc_code = Signal(4)
        m.d.sync += dsc_code.eq(Mux(ck["zero"], ERR_ZERO, Mux(ck["cout"], ERR_COUT, Mux(~gm_ok, ERR_MAP, 0))))
        with m.If(self.desc.valid & self.desc.ready):
            with m.If(dsc_code != 0):
                m.d.comb += set_err.eq(dsc_code)
            with m.Else():
                m.d.sync += [ad.eq(dsc), armed.eq(1), left.eq(pre_total), total.eq(pre_total),
                             hmask.eq(pre_hmask), wmask.eq(pre_wmask), ysh.eq(pre_ysh)]
                for b in range(2):
                    with m.If(acc_bank == b):
                        m.d.sync += st[b].eq(1)

        # s1: the observed beat, registered
        tap = self.tap
        s1_v = Signal()
        s1 = Signal(mem_wr_layout(cfg))
        m.d.sync += [s1_v.eq(tap.valid & tap.ready & armed & (err == 0)), s1.eq(tap.payload)]

        sa_v, sb_v, sc_v, sw_v = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [sa_v.eq(s1_v), sb_v.eq(sa_v)]
        lane_in = []
        abits = max(1, (DEPTH - 1).bit_length())
        lane_stage = []
        # The layer's shift amounts in one registered copy per lane, and the slot-y mask
        # (H - 1) >> lg_fh as a register (for Fmax and routing: the descriptor register
        # drove every lane's three shifters; the copies follow `ad` a cycle later, and a
        # layer's first beat reaches this stage four cycles after its descriptor is taken)
        sh_lay = data.StructLayout({"cs": unsigned(6), "y": unsigned(6), "fw": unsigned(5)})
        lane_sh = [data.View(sh_lay, q) for q in register_copies(
            m, Cat(ad.lg_cs, ysh, ad.lg_fw), [COPY_KINDS[j % len(COPY_KINDS)] for j in range(C)], "lane_sh")]
        ymask = Signal(aw + 1)
        m.d.sync += ymask.eq(hmask >> ad.lg_fh)
        for j in range(C):
            # sa: the offset into the layer's output
            off = Signal(signed(aw + 2), name=f"off{j}")
            en_a = Signal(name=f"en_a{j}")
            val_a = Signal(signed(cfg.slot_bits), name=f"val_a{j}")
            m.d.sync += [off.eq(s1.addr[j] - ad.base), en_a.eq(s1_v & s1.en[j]),
                         val_a.eq(s1.data[j].as_signed())]
            # sb: in range; the address c * P*P + slot (conv), the neuron (linear)
            offu = off.as_unsigned()[:aw + 1]
            ch = Signal(aw + 1, name=f"ch{j}")
            m.d.comb += ch.eq(offu >> lane_sh[j].cs)
            addr = Signal(abits, name=f"addr{j}")
            inr = Signal(name=f"in{j}")
            val = Signal(signed(cfg.slot_bits), name=f"val{j}")
            m.d.sync += [inr.eq(en_a & (off >= 0) & (off < total)), val.eq(val_a)]
            if lg_p:
                yy = ((offu >> lane_sh[j].y) & ymask)[:lg_p]
                xx = ((offu & wmask) >> lane_sh[j].fw)[:lg_p]
                conv_addr = Cat(xx, yy, ch)
            else:
                conv_addr = ch
            m.d.sync += addr.eq(Mux(ad.kind, ch, conv_addr))
            lane_in.append(inr)
            lane_stage.append((addr, val))
        # elements counted in sc (the beat's in-range lanes, registered): the layer is done
        # when they are all that is left (a compare of registers; the subtract runs beside)
        n_c = Signal(range(C + 1))
        go = sb_v & Cat(*lane_in).any()
        sw_done = Signal()
        m.d.sync += [sc_v.eq(go), n_c.eq(sum(lane_in[j] for j in range(C))), sw_v.eq(sc_v),
                     sw_done.eq(sc_v & (left == n_c))]
        with m.If(sc_v):
            m.d.sync += left.eq(left - n_c)

        # per lane: read issued from sb, data registered in sc, write in sw; forwarding
        # from the two writes the read cannot see (sw of the beat before, the one before that)
        acc_rp, acc_rd, lane_busy = [], [], []
        for j in range(C):
            addr, val = lane_stage[j]
            a_c = Signal(abits, name=f"a_c{j}")
            v_c = Signal(name=f"v_c{j}")
            x_c = Signal(signed(cfg.slot_bits), name=f"x_c{j}")
            m.d.sync += [a_c.eq(addr), v_c.eq(sb_v & lane_in[j]), x_c.eq(val)]
            rd_r = Signal(sum_s, name=f"rd_r{j}")       # the owned bank's read data
            acc_rd.append(rd_r)
            a_w = Signal(abits, name=f"a_w{j}")
            v_w = Signal(name=f"v_w{j}")
            x_w = Signal(signed(cfg.slot_bits), name=f"x_w{j}")
            hit1 = Signal(name=f"hit1_{j}")
            hit2 = Signal(name=f"hit2_{j}")
            wd = Signal(sum_s, name=f"wd{j}")            # sum written this cycle (sw)
            wd1 = Signal(sum_s, name=f"wd1_{j}")         # written one cycle ago
            wd2 = Signal(sum_s, name=f"wd2_{j}")         # written two cycles ago
            a_1 = Signal(abits, name=f"a_1{j}")
            v_1 = Signal(name=f"v_1{j}")
            m.d.sync += [a_w.eq(a_c), v_w.eq(v_c), x_w.eq(x_c),
                         hit1.eq(v_w & (a_w == a_c)), hit2.eq(v_1 & (a_1 == a_c)),
                         a_1.eq(a_w), v_1.eq(v_w), wd1.eq(wd), wd2.eq(wd1)]
            m.d.comb += wd.eq(Mux(hit1, wd1, Mux(hit2, wd2, rd_r)) + x_w)
            acc_rp.append((addr, a_w, v_w, wd))
            lane_busy.append((sb_v & lane_in[j]) | v_c | v_w)   # read issued, data in, write
        with m.If(sw_done):   # the layer's last element is written this cycle: hand the bank over
            m.d.sync += [armed.eq(0), acc_bank.eq(~acc_bank)]
            for b in range(2):
                with m.If(acc_bank == b):
                    m.d.sync += [st[b].eq(2), bdesc[b].eq(ad)]   # (not at the accept: fan-out)
        # Per lane, a registered copy of (armed & acc_bank == b for each bank, acc_bank) (for
        # Fmax: `armed & acc_bank == b` was one LUT of ~420 loads, every lane memory's
        # address, data and enable choice, on the estimate's worst path after aab768f,
        # 9.9 ns).  acc_bank's copies and the ownership's fall (at sw_done) are exact,
        # loaded from next values; the ownership's rise follows the accept a cycle late (so
        # that the accept's decision is not in front of them): harmless, as the layer's
        # first lane write comes cycles after its descriptor is taken, and a bank is FREE
        # (acceptable) only after its finisher's last zero write.  Copies of all eight
        # kinds, so Yosys keeps them apart; a kind whose value after configuration is 1
        # says "owned" for the first cycle only, when no lane write is valid (v_w is 0).
        owns_nx = armed & ~sw_done
        bank_nx = Mux(sw_done, ~acc_bank, acc_bank)
        own_lay = data.StructLayout({"owns": 2, "bank": 1})
        if cfg.fmax_logic:
            lane_own = [data.View(own_lay, q) for q in register_copies(
                m, Cat(owns_nx & ~acc_bank, owns_nx & acc_bank, bank_nx),
                [COPY_KINDS[j % len(COPY_KINDS)] for j in range(C)], "lane_own")]
        else:
            lane_own = [data.View(own_lay, Cat(armed & ~acc_bank, armed & acc_bank, acc_bank))] * C
        for j in range(C):
            m.d.comb += acc_rd[j].eq(Mux(lane_own[j].bank, rdr[1][j], rdr[0][j]))
        exact_own = Cat(armed & ~acc_bank, armed & acc_bank, acc_bank)
        if self.check:
            own_mismatch = Cat(*[lane_busy[j] & (lane_own[j].as_value() != exact_own) for j in range(C)])
            m.d.sync += Assert(~own_mismatch.any(),
                               Format("lanes {} used a bank their ownership copy does not give them",
                                      own_mismatch))

        # ---------------- finish side: scan, shift, emit ---------------------------------
        fin_bank = Signal()
        fdv = Signal(desc_layout(cfg))
        m.d.comb += fdv.eq(Mux(fin_bank, bdesc[1].as_value(), bdesc[0].as_value()))
        m.d.comb += [self.layer_k.eq(fdv.k), self.layer_id.eq(fdv.layer_id)]
        ridx = Signal(range(DEPTH + LAT + PP + 2))
        z_en = Signal()                    # zero the address read last cycle (emit reads)
        z_addr = Signal(abits)
        for b in range(2):
            for j in range(C):
                wp, rp = ports[b][j]
                addr, a_w, v_w, wd = acc_rp[j]
                with m.If(lane_own[j].owns[b]):
                    m.d.comb += [rp.addr.eq(addr), wp.addr.eq(a_w), wp.data.eq(wd), wp.en.eq(v_w)]
                with m.Else():
                    m.d.comb += [rp.addr.eq(ridx),
                                 wp.addr.eq(z_addr), wp.data.eq(0), wp.en.eq(z_en & (fin_bank == b))]

        n_valid = Signal(range(DEPTH + 1))          # addresses of the layer: C_out * P*P or C_out (registered)
        # S = sum of the lanes' partial sums: read data registered (rdr), then a registered adder tree
        level = []
        for j in range(C):
            d = Signal(sum_s, name=f"fd{j}")
            m.d.comb += d.eq(Mux(fin_bank, rdr[1][j], rdr[0][j]))
            level.append(d)
        lvl = 0
        while len(level) > 1:
            nxt_level = []
            for i in range(0, len(level) - 1, 2):
                t = Signal(sum_s, name=f"ft{lvl}_{i}")
                m.d.sync += t.eq(level[i] + level[i + 1])
                nxt_level.append(t)
            if len(level) % 2:
                t = Signal(sum_s, name=f"ft{lvl}_odd")
                m.d.sync += t.eq(level[-1])
                nxt_level.append(t)
            level = nxt_level
            lvl += 1
        S = level[0]
        # read-side flags, one per pipeline stage: scan read, emit read, zero (past the layer)
        rd_scan, rd_emit, rd_zero = Signal(), Signal(), Signal()
        sv = [Signal(name=f"sv{i}") for i in range(LAT + 1)]
        PUSH = LAT + PUSH_EXTRA - 2    # ev[i], zv[i]: an emit read's flags i + 1 cycles after it
        ev = [Signal(name=f"ev{i}") for i in range(PUSH + 1)]
        zv = [Signal(name=f"zv{i}") for i in range(PUSH + 1)]
        m.d.sync += [sv[0].eq(rd_scan), ev[0].eq(rd_emit), zv[0].eq(rd_zero)]
        m.d.sync += [sv[i + 1].eq(sv[i]) for i in range(LAT)]
        m.d.sync += [ev[i + 1].eq(ev[i]) for i in range(PUSH)]
        m.d.sync += [zv[i + 1].eq(zv[i]) for i in range(PUSH)]
        m.d.sync += [z_en.eq(rd_emit & ~rd_zero), z_addr.eq(ridx)]
        # scan: |S| registered, then the running max
        amax = Signal(SUM_BITS)
        absS = Signal(SUM_BITS)
        m.d.sync += absS.eq(Mux(S < 0, -S, S))
        with m.If(sv[LAT]):
            m.d.sync += amax.eq(Mux(absS > amax, absS, amax))
        # g from amax (two states): k = bit length; g0 = 7 - k, minus one when the top 8
        # bits are all ones (ones8[i]: bits i..i+7 all set), capped by g_cap
        g = Signal(signed(9))
        g_left = Signal(range(8))
        g_right = Signal(range(64))
        kbits = Signal(range(SUM_BITS + 1))
        m.d.comb += kbits.eq(bit_length(amax))
        kbits_r = Signal(range(SUM_BITS + 1))
        ones8_r = Signal(SUM_BITS - 7)
        zero_r = Signal()
        top8 = Signal()
        m.d.comb += top8.eq(Mux(kbits_r >= 8, ones8_r.bit_select((kbits_r - 8)[:5], 1), 0))
        g0 = Signal(signed(9))          # registered in SHIFT2
        # and the cap beside it (for Fmax: fdv.g_cap through fin_bank's select, ~316 loads,
        # a 3.05 ns hop, was in front of SHIFT3's compare and select, de22c18's routed
        # critical path out of context, seed 1, 93.06 MHz); fdv holds through the finish
        g_cap_r = Signal(signed(8))

        # emit: S << g_left registered, then the quantizer in two registered stages with the
        # shared primitives of rtl.epilogue (Requantize's rule: round half to even by bit
        # tests, saturate from the sign and high bits), the guard mask registered per layer
        xl = Signal(signed(QZ_BITS))
        m.d.sync += xl.eq(S << g_left)
        below = Signal(QZ_BITS)
        g_right_oh = Signal(1 - G_CAP_MIN)   # g_right's one-hot: g >= g_cap >= G_CAP_MIN
        q_x, up_x = shift_round_bit(xl, g_right, below, g_right_oh)
        q_r = Signal(signed(QZ_BITS))
        up_r = Signal()
        m.d.sync += [q_r.eq(q_x), up_r.eq(up_x)]
        # stage 2: saturate(q + up) by range flags on q and an 8-bit rounding add
        # (round_saturate, Requantize's stage 2; for Fmax: a 41-bit add in front of the
        # saturation was the ULX3S build's critical path on `4fbfc68`)
        qd = Signal(signed(PRED_OP_BITS))
        m.d.sync += qd.eq(round_saturate(q_r, up_r, PRED_OP_BITS)[0])
        # the P*P window: every quantized value is shifted in at the top (past the layer: 0)
        win = Signal(data.ArrayLayout(signed(PRED_OP_BITS), PP))
        with m.If(ev[PUSH]):
            for t in range(PP - 1):
                m.d.sync += win[t].eq(win[t + 1])
            m.d.sync += win[PP - 1].eq(Mux(zv[PUSH], 0, qd))

        ch = Signal(range(NW + 1))      # sample being emitted
        last = Signal()                 # ch is the layer's last (registered)
        out_v = Signal()
        pcnt = Signal(range(PP + 1))    # FILL: reads left for this sample
        wcnt = Signal(range(LAT + PUSH_EXTRA))
        m.d.comb += [self.samples.valid.eq(out_v), self.samples.payload.channel.eq(ch),
                     self.samples.payload.last.eq(last)]
        m.d.comb += [self.samples.payload.pix[t].eq(win[t]) for t in range(PP)]
        fire = self.samples.valid & self.samples.ready
        st_fin = Mux(fin_bank, st[1], st[0])

        with m.FSM(name="fin") as fin_fsm:
            with m.State("IDLE"):
                with m.If(st_fin == 2):
                    m.d.sync += [ridx.eq(0), amax.eq(0),
                                 n_valid.eq(Mux(fdv.kind, fdv.c_out, fdv.c_out << lg_pp))]
                    m.next = "SCAN"
            with m.State("SCAN"):      # read every address; the |S| pipeline drains after
                m.d.comb += rd_scan.eq(ridx < n_valid)
                m.d.sync += ridx.eq(ridx + 1)
                with m.If(ridx == n_valid + LAT):
                    m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.sync += [kbits_r.eq(kbits), zero_r.eq(amax == 0),
                             ones8_r.eq(Cat(*[amax[i:i + 8].all() for i in range(SUM_BITS - 7)]))]
                m.next = "SHIFT2"
            with m.State("SHIFT2"):
                m.d.sync += [g0.eq(7 - kbits_r.as_signed() - top8), g_cap_r.eq(fdv.g_cap),
                             ch.eq(0), last.eq(fdv.c_out == 1), ridx.eq(0),
                             pcnt.eq(Mux(fdv.kind, PP - PP // 2, PP))]
                m.d.sync += [win[t].eq(0) for t in range(PP)]
                m.next = "SHIFT3"
            with m.State("SHIFT3"):
                m.d.sync += g.eq(Mux(zero_r | (g0 > g_cap_r), g_cap_r, g0))
                m.next = "SHIFT4"
            with m.State("SHIFT4"):
                m.d.sync += [g_left.eq(Mux(g > 0, g, 0)), g_right.eq(Mux(g < 0, -g, 0))]
                m.next = "SHIFT5"
            with m.State("SHIFT5"):
                m.d.sync += [below.eq(below_guard_mask(g_right, QZ_BITS)),
                             g_right_oh.eq(shift_onehot(g_right, len(g_right_oh)))]
                m.next = "FILL"
            with m.State("FILL"):      # read the sums the next sample needs
                m.d.comb += [rd_emit.eq(1), rd_zero.eq(ridx >= n_valid)]
                m.d.sync += [ridx.eq(ridx + 1), pcnt.eq(pcnt - 1)]
                with m.If(pcnt == 1):
                    m.d.sync += wcnt.eq(LAT + PUSH_EXTRA - 2)
                    m.next = "WAIT"
            with m.State("WAIT"):      # the last value reaches the window
                m.d.sync += wcnt.eq(wcnt - 1)
                with m.If(wcnt == 0):
                    m.d.sync += out_v.eq(1)
                    m.next = "EMIT"
            with m.State("EMIT"):
                with m.If(fire):
                    m.d.sync += [ch.eq(ch + 1), out_v.eq(0), last.eq(ch + 2 == fdv.c_out),
                                 pcnt.eq(Mux(fdv.kind, 1, PP))]
                    with m.If(last):
                        m.next = "DONE"
                    with m.Else():
                        m.next = "FILL"
            with m.State("DONE"):
                m.d.sync += fin_bank.eq(~fin_bank)
                for b in range(2):
                    with m.If(fin_bank == b):
                        m.d.sync += st[b].eq(0)
                m.next = "IDLE"
        m.d.comb += self.busy.eq(armed | (st[0] != 0) | (st[1] != 0) | s1_v | sa_v | sb_v | sc_v | sw_v)
        m.d.comb += self.emitting.eq(~fin_fsm.ongoing("IDLE"))
        return m
