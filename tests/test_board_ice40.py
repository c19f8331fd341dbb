"""The iCEBreaker (iCE40UP5K) board build with the `ice40` preset: its board entry, the
one-instruction-wide program buffer (WideBufferStream), the refusal of the Accelerator
core, and a Yosys-only synthesis of the board top checking the device's DSPs and block
RAMs and nextpnr's packed logic-cell count (the full place-and-route is `slow`)."""
import json

import pytest

from rtl import board, synth
from rtl.config import preset


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


def test_wide_buffer_stream_keeps_the_buffer_stream_contract(monkeypatch):
    """tests/test_board.py's BufferStream test (entries in order under random back-pressure,
    a second start with count 0), run on WideBufferStream (3 words per entry: word w is
    lane w % 3 of entry w // 3)."""
    from tests import test_board
    assert issubclass(board.WideBufferStream, board.BufferStream)
    monkeypatch.setattr(board, "BufferStream", board.WideBufferStream)
    test_board.test_buffer_stream_entries_in_order_under_back_pressure()


def test_board_top_fits_the_up5k_yosys_and_packing(tmp_path):
    """Yosys (synth_ice40 -dsp) on the icebreaker board top with the ice40 preset, then
    nextpnr-ice40 --pack-only: logic cells, DSPs and block RAMs within the UP5K."""
    r = synth.synthesize("ice40", "ice40", str(tmp_path / "b"), unit="board", board="icebreaker")
    assert r["latches"] == 0 and r["top"] == synth.BOARD_TOP
    f = r["fit"]
    assert f["dsp"] == preset("ice40").rows * preset("ice40").cols <= f["dsp_avail"] == 8
    assert f["bram"] <= f["bram_avail"] == 30
    # within the cells nextpnr-ice40 places (86 %), not only the device's 5280: at 88 % and
    # more its placers failed (docs/fpga.md, Fmax round 15)
    assert f["lc_packed"] is not None and f["lc_packed"] <= f["lc_place_limit"] == synth.PLACE_LIMIT["iCE40UP5K"], f
    assert f["lc_place_limit"] < f["lc_avail"] == 5280 and f["places"], f
    assert json.loads((tmp_path / "b" / "report.json").read_text())["fit"] == f


@pytest.mark.slow
def test_icebreaker_board_build_places_routes_and_meets_12mhz(tmp_path):
    """The whole board build (Yosys, nextpnr-ice40, icepack; ~2.5 min): a bitstream, the
    report's figures within the device, timing met at the board's 12 MHz."""
    r = synth.synth_board("icebreaker", None, out=str(tmp_path / "icebreaker-ice40"))
    assert r["preset"] == "ice40" and r["device"] == "iCE40UP5K"
    assert 0 < r["lut"] <= r["lut_avail"] == 5280
    assert r["dsp"] == preset("ice40").rows * preset("ice40").cols <= r["dsp_avail"] and 0 < r["bram"] <= r["bram_avail"] == 30
    assert r["ff"] > 0 and r["latches"] == 0
    assert r["target_mhz"] == 12.0 and r["timing_met"] and r["fmax_mhz"] >= 12.0
    assert r["bitstream"] and (tmp_path / "icebreaker-ice40" / "top.bin").stat().st_size > 0
