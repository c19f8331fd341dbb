"""Board tops: board/preset validation, the on-chip memory (lane-serial gather ports and
write port, Amaranth simulator, a numpy array as the reference), and the parsers of
nextpnr's report (resources, Fmax, 'does not fit')."""
import numpy as np
import pytest
from cosim.simlink import run_amaranth

from rtl import board, synth
from rtl.boardmem import BoardMemory
from rtl.config import ConfigError, preset


# ---- validation -------------------------------------------------------------------
def test_unknown_board_lists_choices():
    with pytest.raises(board.BoardError, match="unknown board 'de0'.*ulx3s, orangecrab, icebreaker"):
        board.board_config("small", "de0")


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*small"):
        board.board_config("huge", "ulx3s")


def test_cli_board_errors(capsys):
    assert synth.main(["--board", "nexys", "--preset", "small"]) == 2
    assert "unknown board 'nexys'" in capsys.readouterr().err
    assert synth.main(["--board", "ulx3s", "--preset", "gigantic"]) == 2
    assert "unknown preset 'gigantic'" in capsys.readouterr().err


def test_board_config_matches_memory():
    for name, spec in board.BOARDS.items():
        cfg = board.board_config("small", name)
        assert cfg.mem_words == 1 << spec.mem_addr_bits
        assert spec.prog_words >= board.instr_words(cfg, spec.core)


def test_prog_words_check():
    with pytest.raises(board.BoardError, match="prog_words=100"):
        board.BoardTop(preset("tiny"), 12e6, prog_words=100)


def test_platforms_exist():
    for name in board.BOARDS:
        plat = board.platform_for(name, noabc9=True)
        assert plat.device == board.BOARDS[name].device
        if plat.family == "ecp5":                     # the classic-ABC flow is in the script
            ys = plat.file_templates["{{name}}.ys"]
            assert "abc -lut 4" in ys and "synth_ecp5 -top {{name}} -run map_cells:" in ys
            abc9 = board.platform_for(name).file_templates["{{name}}.ys"]
            assert "abc -lut 4" not in abc9
            # our ABC9 script (the purge before abc9 keeps Yosys 0.70 from asserting)
            assert "opt_clean -purge; abc9 -W 300" in abc9


# ---- nextpnr report parsing ---------------------------------------------------------
LOG_OK = """Info: Device utilisation:
Info: 	          TRELLIS_IO:     5/  365     1%
Info: 	        TRELLIS_COMB: 12011/83640    14%
Info: 	          TRELLIS_FF:  9000/83640    10%
Info: 	          MULT18X18D:    79/  156    50%
Info: 	              DP16KD:    52/  208    25%
Info:
Info: Max frequency for clock '$glbnet$pll_clkop': 71.20 MHz (FAIL at 100.00 MHz)
Info: Device utilisation:
Info: 	        TRELLIS_COMB: 12050/83640    14%
Info: 	          MULT18X18D:    79/  156    50%
Info: 	              DP16KD:    52/  208    25%
Info:
Info: Critical path report for clock '$glbnet$pll_clkop' (posedge -> posedge):
Info: curr total
Info:  1.0  1.0 Source top.core.cur_m
Info:  9.0 10.0 Sink top.core.d_lo
Info: Max frequency for clock '$glbnet$pll_clkop': 83.50 MHz (FAIL at 100.00 MHz)
"""
LOG_FULL = """Info: Device utilisation:
Info: 	        ICESTORM_LC:  6100/ 5280   115%
Info: 	       ICESTORM_RAM:    20/   30    66%
Info: 	       ICESTORM_DSP:    10/    8   125%
ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'SB_MAC16'
"""


def test_parse_utilisation_and_fmax():
    util = synth.parse_nextpnr_util(LOG_OK)
    assert util["TRELLIS_COMB"] == (12050, 83640) and util["DP16KD"] == (52, 208)
    fmax = synth.parse_nextpnr_fmax(LOG_OK)
    assert fmax == {"$glbnet$pll_clkop": (83.5, 100.0)}       # the last (post-route) figure
    cp = synth.parse_critical_path(LOG_OK)
    assert cp[0].startswith("Info: Critical path report") and "d_lo" in cp[-1]
    assert synth.not_fitting(util, LOG_OK) is None


def test_not_fitting_names_the_resource():
    msg = synth.not_fitting(synth.parse_nextpnr_util(LOG_FULL), LOG_FULL)
    assert "does not fit" in msg and "ICESTORM_LC: 6100 used of 5280" in msg
    assert "ICESTORM_DSP: 10 used of 8" in msg
    msg = synth.not_fitting({}, "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'MULT18X18D'")
    assert "MULT18X18D" in msg


# ---- the on-chip memory -------------------------------------------------------------
def test_board_memory_lane_serial_ports():
    cfg = preset("small").replace(mem_addr_bits=10)
    R, C = cfg.rows, cfg.cols
    dut = BoardMemory(cfg, check=True)     # asserts wr_free against its definition every cycle
    rng = np.random.default_rng(5)
    ref = np.zeros(cfg.mem_words, dtype=np.int64)
    host_vals = rng.integers(0, 1 << 32, 64)

    async def bench(ctx):
        async def host_write(addr, val):
            ctx.set(dut.host.req.payload.addr, addr)
            ctx.set(dut.host.req.payload.data, int(val))
            ctx.set(dut.host.req.payload.we, 1)
            ctx.set(dut.host.req.valid, 1)
            await ctx.tick().until(dut.host.req.ready)
            ctx.set(dut.host.req.valid, 0)
        for i, v in enumerate(host_vals):
            await host_write(i, v)
            ref[i] = v
        # engine write beat: C data lanes (lane 1 disabled) and C mask lanes
        ctx.set(dut.wr.payload.addr, [100 + 3 * j for j in range(C)])
        ctx.set(dut.wr.payload.data, [1000 + j for j in range(C)])
        ctx.set(dut.wr.payload.en, 0b1101)
        ctx.set(dut.wr.payload.mask_addr, [200 + j for j in range(C)])
        ctx.set(dut.wr.payload.mask, 0b1010)
        ctx.set(dut.wr.payload.mask_en, 0b1111)
        ctx.set(dut.wr.valid, 1)
        await ctx.tick().until(dut.wr.ready)
        ctx.set(dut.wr.valid, 0)
        for j in range(C):
            if (0b1101 >> j) & 1:
                ref[100 + 3 * j] = 1000 + j
            ref[200 + j] = (0b1010 >> j) & 1
        await ctx.tick().repeat(2 * C + 2)
        # gather reads on both ports at once, random lanes disabled
        results = []
        reqs = []
        for t in range(6):
            a_addr = [int(x) for x in rng.integers(0, 64, R)] if t % 2 else [100, 103, 200, 201]
            b_addr = [int(x) for x in rng.integers(0, 210, C)]
            reqs.append((a_addr, int(rng.integers(0, 1 << R)), b_addr, int(rng.integers(0, 1 << C))))
        for a_addr, a_en, b_addr, b_en in reqs:
            ctx.set(dut.rd_a.req.payload.addr, a_addr)
            ctx.set(dut.rd_a.req.payload.en, a_en)
            ctx.set(dut.rd_b.req.payload.addr, b_addr)
            ctx.set(dut.rd_b.req.payload.en, b_en)
            ctx.set(dut.rd_a.req.valid, 1)
            ctx.set(dut.rd_b.req.valid, 1)
            ctx.set(dut.rd_a.resp.ready, 1)
            ctx.set(dut.rd_b.resp.ready, 1)
            got = {}
            for _ in range(100):
                accepted = [ctx.get(p.req.valid) and ctx.get(p.req.ready) for p in (dut.rd_a, dut.rd_b)]
                await ctx.tick()
                for port, acc in zip((dut.rd_a, dut.rd_b), accepted):
                    if acc:
                        ctx.set(port.req.valid, 0)
                for port, key in ((dut.rd_a, "a"), (dut.rd_b, "b")):
                    if ctx.get(port.resp.valid):
                        got[key] = list(ctx.get(port.resp.payload))
                if len(got) == 2:
                    break
            results.append(got)
            ctx.set(dut.rd_a.req.valid, 0)
            ctx.set(dut.rd_b.req.valid, 0)
        return reqs, results

    reqs, results = run_amaranth(dut, bench)
    for (a_addr, a_en, b_addr, b_en), got in zip(reqs, results):
        want_a = [int(ref[x]) if (a_en >> l) & 1 else 0 for l, x in enumerate(a_addr)]
        want_b = [int(ref[x]) if (b_en >> l) & 1 else 0 for l, x in enumerate(b_addr)]
        assert got.get("a") == want_a and got.get("b") == want_b, (got, want_a, want_b)


# ---- clocks ---------------------------------------------------------------------
def test_pll_settings_match_ecppll():
    # the boards' built-in PLL settings are what YoWASP's ecppll computes for them
    for name, spec in board.BOARDS.items():
        if spec.pll is not None:
            assert board.ecp5_pll(spec.clk_in_hz, spec.target_hz) == (spec.pll, spec.target_hz)


def test_target_clock_choices():
    s = board.with_clock("ulx3s", 30)
    assert s.target_hz == 30e6 and s.pll != board.BOARDS["ulx3s"].pll
    assert board.with_clock("ulx3s", None) is board.BOARDS["ulx3s"]
    with pytest.raises(board.BoardError, match="icebreaker runs at its 12 MHz oscillator"):
        board.with_clock("icebreaker", 24)
    with pytest.raises(board.BoardError, match="outside"):
        board.with_clock("ulx3s", 1000)


# ---- the Accelerator core's additions -------------------------------------------------
def test_unknown_core_and_core_sizes():
    with pytest.raises(board.BoardError, match="unknown core 'gpu'.*engine, accelerator"):
        board.BoardTop(preset("small"), 4e6, 1e6, prog_words=256, core="gpu")
    from rtl import accelerator as acc, isa
    cfg = preset("small")
    assert board.instr_words(cfg, "accelerator") * 32 >= acc.accel_instr_width(cfg) > isa.instr_width(cfg)
    from rtl.engine import COUNTERS, CORE_COUNTERS
    assert board.counter_names("accelerator", cfg) == tuple(COUNTERS) + tuple(acc.PRED_COUNTERS)
    assert board.counter_names("engine", cfg) == tuple(COUNTERS)
    lite = preset("ice40")
    assert board.counter_names("engine", lite) == tuple(n for n in COUNTERS if n in CORE_COUNTERS)
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        board.counter_names("engine", None)
    bufs = board.stream_buffers(cfg)
    from predictor_hw.predictor_array import pack_predictor_weights
    g_w1 = np.zeros((cfg.pred_channels, 1, 3, 3), dtype=np.int64)
    g_w2 = np.zeros((cfg.pred_kmax, cfg.pred_features), dtype=np.int64)
    assert len(pack_predictor_weights(cfg, g_w1, g_w2)) <= bufs["pweights"].entries   # the largest set fits
    assert [b.index for b in bufs.values()] == [1, 2, 3]
    lim = dict(zip(board.REGS, board.reg_limits(cfg)))
    assert lim["n_pweights"] == bufs["pweights"].entries and lim["shift1"] == 63


_run = run_amaranth


def test_buffer_stream_entries_in_order_under_back_pressure():
    width, depth = 70, 64                         # 3 words per entry
    dut = board.BufferStream(width, depth)
    rng = np.random.default_rng(3)
    entries = [int(rng.integers(0, 1 << 62)) << 8 | int(rng.integers(0, 256)) for _ in range(7)]
    words = [(e >> (32 * i)) & 0xFFFFFFFF for e in entries for i in range(3)]

    async def bench(ctx):
        for a, w in enumerate(words):
            ctx.set(dut.wr_addr, a)
            ctx.set(dut.wr_data, w)
            ctx.set(dut.wr_en, 1)
            await ctx.tick()
        ctx.set(dut.wr_en, 0)
        assert ctx.get(dut.done)                  # nothing started yet
        got = []
        for count in (5, 0):                      # a second start: count 0 is done at once
            ctx.set(dut.count, count)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for cyc in range(400):
                ready = int(rng.random() < 0.5)
                ctx.set(dut.stream.ready, ready)
                if ready and ctx.get(dut.stream.valid):
                    got.append(ctx.get(dut.stream.payload))
                await ctx.tick()
                if ctx.get(dut.done):
                    break
            got.append(("sent", ctx.get(dut.sent), ctx.get(dut.done)))
        return got

    got = _run(dut, bench)
    assert got == [e & ((1 << width) - 1) for e in entries[:5]] + [("sent", 5, 1), ("sent", 0, 1)], got


@pytest.mark.parametrize("pred_cols", [4, 2])
def test_board_memory_update_ports_and_write_before_read(pred_cols):
    """The update unit's read port and 2 x pred_cols-lane write beats; a read accepted after
    a write beat sees it although the beat is still being written lane by lane (pred_cols 2:
    fewer lanes than the gather ports, whose widest request sets the address queue's depth)."""
    cfg = preset("small").replace(mem_addr_bits=10, pred_cols=pred_cols)
    L = cfg.pred_cols
    dut = BoardMemory(cfg, update=True, check=True)
    rng = np.random.default_rng(6)
    ref = np.zeros(cfg.mem_words, dtype=np.int64)

    async def bench(ctx):
        got = []
        for t in range(4):
            addr = [int(x) for x in rng.choice(300, 2 * L, replace=False)]
            vals = [int(x) for x in rng.integers(0, 1 << 32, 2 * L)]
            en = int(rng.integers(1, 1 << (2 * L)))
            ctx.set(dut.upd_wr.payload.addr, addr)
            ctx.set(dut.upd_wr.payload.data, vals)
            ctx.set(dut.upd_wr.payload.en, en)
            ctx.set(dut.upd_wr.valid, 1)
            await ctx.tick().until(dut.upd_wr.ready)
            ctx.set(dut.upd_wr.valid, 0)
            for j in range(2 * L):
                if (en >> j) & 1:
                    ref[addr[j]] = vals[j]
            # at once: read back the beat's last lanes (still being written) on the update port
            rd = addr[L:]
            ctx.set(dut.upd_rd.req.payload.addr, rd)
            ctx.set(dut.upd_rd.req.payload.en, (1 << L) - 1)
            ctx.set(dut.upd_rd.req.valid, 1)
            ctx.set(dut.upd_rd.resp.ready, 1)
            await ctx.tick().until(dut.upd_rd.req.ready)
            ctx.set(dut.upd_rd.req.valid, 0)
            await ctx.tick().until(dut.upd_rd.resp.valid)
            got.append((rd, list(ctx.get(dut.upd_rd.resp.payload))))
            await ctx.tick()
        return got

    for rd, vals in _run(dut, bench):
        assert vals == [int(ref[a]) for a in rd], (rd, vals)


def test_core_reset_on_a_global_buffer_on_ecp5_only():
    """ECP5 board tops carry the core's reset (~30k flip-flops at `default`) on a DCCA
    global buffer whose output is the core domain's reset; the icebreaker's does not."""
    def rtlil(name):
        plat = board.platform_for(name, noabc9=True)
        top = board.PlatformTop(name, board.board_config(board.board_spec(name).preset, name),
                                board.DEFAULT_BAUD)
        return plat.prepare(top, name="top").files["top.il"]
    il = rtlil("ulx3s")
    dcca = [l for l in il.splitlines() if l.strip().startswith("cell \\DCCA")]
    assert len(dcca) == 1, dcca
    assert "core_rst" in il and "\\core_rst_buf" in il
    ice = rtlil("icebreaker")
    assert "DCCA" not in ice


def test_board_memory_every_write_beat_kind_then_reads():
    """Every kind of write beat (engine data and mask lanes, ocompact zero writes, update
    lanes, host words), each with its last lane disabled, then idle gaps: with check=True
    the kept ``wr_free`` flag is asserted against its definition every cycle, and the
    update port's reads then see every write (against a Python memory)."""
    cfg = preset("small").replace(mem_addr_bits=10)
    C, U = cfg.cols, cfg.pred_cols
    dut = BoardMemory(cfg, update=True, check=True)
    ref = np.zeros(cfg.mem_words, dtype=np.int64)
    ref[:400] = np.arange(400) + 7

    async def put(ctx, port, fields, gap):
        for name, val in fields.items():
            ctx.set(getattr(port.payload, name), val)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)
        if gap:
            await ctx.tick().repeat(gap)

    async def bench(ctx):
        for a in range(400):                                   # host words, back to back
            await put(ctx, dut.host.req, {"addr": a, "data": int(ref[a]), "we": 1}, 0)
        last_off = (1 << C) - 1 >> 1                           # every lane but the last
        for gap in (0, 1, 3):
            base = 10 + 40 * gap
            await put(ctx, dut.wr, {"addr": [base + j for j in range(C)], "data": [900 + j for j in range(C)],
                                    "en": last_off, "mask_addr": [base + 10 + j for j in range(C)],
                                    "mask": (1 << C) - 1, "mask_en": last_off}, gap)
            for j in range(C - 1):
                ref[base + j], ref[base + 10 + j] = 900 + j, 1
            await put(ctx, dut.wz, {"addr": [base + 20 + j for j in range(C)], "en": last_off}, gap)
            ref[base + 20:base + 20 + C - 1] = 0
            ulast = (1 << 2 * U) - 1 >> 1
            await put(ctx, dut.upd_wr, {"addr": [base + 30 + j for j in range(2 * U)],
                                        "data": [500 + j for j in range(2 * U)], "en": ulast}, gap)
            for j in range(2 * U - 1):
                ref[base + 30 + j] = 500 + j
        got = []
        ctx.set(dut.upd_rd.resp.ready, 1)
        for a0 in range(0, 160, U):
            ctx.set(dut.upd_rd.req.payload.addr, [a0 + l for l in range(U)])
            ctx.set(dut.upd_rd.req.payload.en, (1 << U) - 1)
            ctx.set(dut.upd_rd.req.valid, 1)
            await ctx.tick().until(dut.upd_rd.req.ready)
            ctx.set(dut.upd_rd.req.valid, 0)
            await ctx.tick().until(dut.upd_rd.resp.valid)
            got += [int(v) for v in ctx.get(dut.upd_rd.resp.payload)]
            await ctx.tick()
        return got

    assert _run(dut, bench) == [int(v) for v in ref[:160]]
