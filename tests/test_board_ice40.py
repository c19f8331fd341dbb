"""The iCEBreaker (iCE40UP5K) board build with the `ice40` preset: its board entry, the
one-instruction-wide program buffer (WideBufferStream), the refusal of the Accelerator
core, and a Yosys-only synthesis of the board top checking the device's DSPs and block
RAMs and nextpnr's packed logic-cell count (the full place-and-route is `slow`)."""
import json

import numpy as np
import pytest

from rtl import board, synth
from rtl.config import preset
from tests.test_board import _run


def test_icebreaker_defaults_to_the_lite_preset_and_engine_core():
    spec = board.board_spec("icebreaker")
    assert (spec.preset, spec.core, spec.cores, spec.wide_prog) == ("ice40", "engine", ("engine",), True)
    cfg = board.board_config(spec.preset, "icebreaker")
    assert cfg.mem_words == 1 << spec.mem_addr_bits
    # PING: the counters the lite engine has (the host reads that many, counter_bits wide)
    assert board.board_info(cfg, spec.prog_words)[-1] == len(board.counter_names("engine", cfg)) == 6
    # the other boards keep their presets, cores and program buffers
    for name in ("ulx3s", "orangecrab"):
        s = board.board_spec(name)
        assert (s.preset, s.cores, s.wide_prog) == ("small", board.CORES, False)


def test_accelerator_core_on_icebreaker_is_refused_clearly(capsys):
    with pytest.raises(board.BoardError, match=r"icebreaker \(iCE40UP5K\): the accelerator core does "
                                               r"not fit this device.*predictor side.*choose core engine"):
        synth.synth_board("icebreaker", "ice40", core="accelerator")
    assert synth.main(["--board", "icebreaker", "--core", "accelerator"]) == 2
    assert "does not fit this device" in capsys.readouterr().err


@pytest.mark.parametrize("width,depth", [(70, 64), (192, 256)])
def test_wide_buffer_stream_entries_in_order_under_back_pressure(width, depth):
    """The same contract as BufferStream (tests/test_board.py), on the wide buffer."""
    dut = board.WideBufferStream(width, depth)
    n = dut.words
    rng = np.random.default_rng(width)
    entries = [int(rng.integers(0, 1 << 62)) << (width - 62) | int(rng.integers(0, 256)) for _ in range(7)]
    words = [(e >> (32 * i)) & 0xFFFFFFFF for e in entries for i in range(n)]
    order = list(rng.permutation(len(words)))        # words written in any order

    async def bench(ctx):
        for a in order:
            ctx.set(dut.wr_addr, int(a))
            ctx.set(dut.wr_data, words[a])
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
            for _ in range(400):
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


def test_board_top_fits_the_up5k_yosys_and_packing(tmp_path):
    """Yosys (synth_ice40 -dsp) on the icebreaker board top with the ice40 preset, then
    nextpnr-ice40 --pack-only: logic cells, DSPs and block RAMs within the UP5K."""
    r = synth.synthesize("ice40", "ice40", str(tmp_path / "b"), unit="board", board="icebreaker")
    assert r["latches"] == 0 and r["top"] == synth.BOARD_TOP
    f = r["fit"]
    assert f["dsp"] == preset("ice40").rows * preset("ice40").cols <= f["dsp_avail"] == 8
    assert f["bram"] <= f["bram_avail"] == 30
    assert f["lc_packed"] is not None and f["lc_packed"] <= f["lc_avail"] == 5280, f
    assert json.loads((tmp_path / "b" / "report.json").read_text())["fit"] == f
