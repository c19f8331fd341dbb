"""`make verilog`: every preset converts to Verilog that passes verilator --lint-only
(-Wall, with the waivers listed in rtl/generate.py, each with its reason)."""
import pytest

from rtl import generate
from rtl.config import PRESETS, AcceleratorConfig, ConfigError, preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_verilog_lints_clean(tmp_path, name):
    out = tmp_path / "v"
    generate.main(["--presets", name, "--out", str(out), "--lint"])
    text = (out / f"engine_{name}.v").read_text()
    assert "module engine" in text


def test_bad_configurations_are_rejected_naming_the_field():
    with pytest.raises(ConfigError, match="acc_bits"):
        AcceleratorConfig(op_bits=16, acc_bits=32)
    with pytest.raises(ConfigError, match="rows=0"):
        AcceleratorConfig(rows=0)
    with pytest.raises(ConfigError, match="spad_a_words=1000"):
        AcceleratorConfig(spad_a_words=1000)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")
