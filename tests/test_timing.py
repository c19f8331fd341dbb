"""Out-of-context place-and-route (rtl.timing): a real Yosys + nextpnr run of the smallest
unit (the weight-update unit, `small`; ~25 s) and fast checks of bad input and of the
condensed critical path."""
import json

import pytest

from rtl import timing
from rtl.synth import SynthError
from rtl.config import ConfigError


@pytest.fixture(scope="module")
def update_small(tmp_path_factory):
    out = tmp_path_factory.mktemp("timing") / "update-small"
    return timing.run("update", "small", out=str(out)), out


def test_routed_report(update_small):
    r, out = update_small
    saved = json.loads((out / "report.json").read_text())
    assert saved["fmax_mhz"] == r["fmax_mhz"] and r["routed"]
    # a plausible ECP5 speed-6 figure for a pipelined unit, and resources that exist
    assert 20 < r["fmax_mhz"] < 400, r["fmax_mhz"]
    assert r["lut"] > 100 and r["ff"] > 100
    assert r["critical_path"], "nextpnr printed no critical path"


def test_path_names_python_lines(update_small):
    r, _ = update_small
    steps = timing.condensed_path(r["critical_path"])
    assert steps and "clk-to-q" in steps[0] and "setup" in steps[-1]
    # emit_src: some net on the path is traced back to the unit's Python source
    assert any("update.py:" in s for s in steps), "\n".join(steps)
    # cumulative times never go down, and the last one is the path delay
    cum = [float(s.split()[0]) for s in steps if not s.lstrip().startswith("...")]
    assert cum == sorted(cum)
    assert abs(1000 / cum[-1] - r["fmax_mhz"]) / r["fmax_mhz"] < 0.05


def test_condensed_path_folds_carry_chains():
    lines = [
        "Info:  clk-to-q  0.52  0.52 Source a_TRELLIS_FF_Q.Q",
        "Info:   routing  1.00  1.52 Net a (1,1) -> (2,2)",
        "Info:                          Defined in:",
        "Info:                               /x/rtl/unit.py:42",
        "Info:     logic  0.45  1.97 Source s_CCU2C_S1$CCU2_COMB0.FCO",
        "Info:     logic  0.07  2.04 Source s_CCU2C_S1_1$CCU2_COMB0.FCO",
        "Info:     logic  0.07  2.11 Source s_CCU2C_S1_2$CCU2_COMB0.FCO",
        "Info:     setup  0.00  2.11 Sink b_TRELLIS_FF_Q.DI",
    ]
    out = timing.condensed_path(lines)
    assert len(out) == 5
    assert "/x/rtl/unit.py:42" in out[1]
    assert "2 carry-chain steps" in out[3]


@pytest.mark.parametrize("kw, match", [
    ({"unit": "npu"}, "unknown unit 'npu'"),
    ({"device": "99k"}, "unknown ECP5 device '99k'"),
    ({"freq": 0}, "--freq must be positive, got 0"),
    ({"flow": "abc10"}, "unknown flow 'abc10'"),
    ({"abc9": True, "flow": "widelut"}, "conflicts with --flow 'widelut'"),
])
def test_bad_input(kw, match, tmp_path):
    args = {"unit": "update", "preset_name": "small", "out": str(tmp_path / "x"), **kw}
    with pytest.raises(SynthError, match=match):
        timing.run(**args)
    assert not (tmp_path / "x").exists()          # refused before anything was written


def test_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        timing.run("update", "huge", out=str(tmp_path / "x"))


def test_cli_exit_code(capsys):
    assert timing.main(["--unit", "npu"]) == 2
    assert "unknown unit 'npu'" in capsys.readouterr().err


def test_extra_nextpnr_argument_reaches_nextpnr(tmp_path):
    # --pnr-arg is passed through: nextpnr itself refuses an unknown option, and the error
    # names it (the run stops after Yosys, a few seconds for the update unit)
    with pytest.raises(SynthError, match="no-such-option"):
        timing.run("update", "small", out=str(tmp_path / "x"), pnr_args=("--no-such-option",))
