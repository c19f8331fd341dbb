"""Energy model: exact on hand-checkable counters, bad tables rejected naming the key."""
import json
import math

import pytest

from cosim import energy
from rtl.config import preset

with open(energy.DEFAULT_TABLE) as f:
    RAW = json.load(f)

COUNTERS = {"macs": 1000, "spad_reads": 20, "spad_writes": 6, "acc_reads": 3, "acc_writes": 2,
            "rd_bytes": 100, "wr_bytes": 40, "mask_bits": 16, "predictor_macs": 50,
            "cycles": 10 ** 9, "retired": 7}


def test_default_preset_by_hand():
    # default: 8x8 int8/int32; scratchpads 1024 words x 8 B = 8 KiB (the 8 KB class, 64-bit words);
    # accumulator 256 rows x 8 x 4 B = 8 KiB, rows of 256 bits
    sram8k = RAW["sram_64bit_access_pj"]["8192"]
    mac = RAW["mult_int8_pj"] + RAW["add_int32_pj"]
    byte = RAW["dram_64bit_access_pj"] / 8
    want = {"mac": 1000 * mac, "spad_read": 20 * sram8k, "spad_write": 6 * sram8k,
            "acc_read": 3 * sram8k * 4, "acc_write": 2 * sram8k * 4, "dram_read": 100 * byte,
            "dram_write": 40 * byte, "dram_mask": 2 * byte, "predictor": 50 * mac}
    got = energy.energy(COUNTERS, preset("default"))
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k
    assert got["total_pj"] == pytest.approx(sum(want.values()), rel=1e-12)
    assert got["total_j"] == pytest.approx(sum(want.values()) * 1e-12, rel=1e-12)
    assert got["leakage"] == 0                     # the default table has no leakage


def test_large_preset_interpolates_sram_classes():
    # large: 16x16; scratchpad 16 KiB = geometric mean of the 8 KB and 32 KB classes, so its
    # 64-bit energy is the geometric mean of theirs (log-log interpolation); 128-bit words.
    # accumulator 512 x 16 x 4 B = 32 KiB exactly, 512-bit rows.
    cls = RAW["sram_64bit_access_pj"]
    spad = math.sqrt(cls["8192"] * cls["32768"]) * 2
    acc = cls["32768"] * 8
    got = energy.energy({"spad_reads": 3, "acc_writes": 5}, preset("large"))
    assert got["spad_read"] == pytest.approx(3 * spad, rel=1e-12)
    assert got["acc_write"] == pytest.approx(5 * acc, rel=1e-12)


def test_wide16_uses_16bit_multiplier_and_48bit_adder():
    got = energy.energy({"macs": 10}, preset("wide16"))
    assert got["mac"] == pytest.approx(10 * (RAW["mult_int16_pj"] + RAW["add_int48_pj"]))


def test_sram_floor_and_extrapolation():
    t = energy.load_table()
    assert energy.sram_access_pj(t, 1024, 64) == t["sram_64bit_access_pj"][8192]
    # 4 MB: the 32 KB -> 1 MB segment's slope continued
    slope = math.log(100 / 20) / math.log(32)
    assert energy.sram_access_pj(t, 4 << 20, 64) == pytest.approx(100 * 4 ** slope)


def test_leakage_counts_busy_cycles(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({**RAW, "leakage_pj_per_cycle": 2.5}))
    got = energy.energy({"busy_cycles": 4}, preset("default"), energy.load_table(str(p)))
    assert got["leakage"] == 10.0


@pytest.mark.parametrize("edit,needle", [
    (lambda t: t.pop("dram_64bit_access_pj"), "'dram_64bit_access_pj' is missing"),
    (lambda t: t.update(add_int32_pj=-0.1), "'add_int32_pj' must be >= 0"),
    (lambda t: t.update(mult_int8_pj="0.2"), "'mult_int8_pj' must be a finite number"),
    (lambda t: t.update(sram_64bit_access_pj={"big": 3}), "size 'big'"),
    (lambda t: t.update(sram_64bit_access_pj={"8192": -1}), "sram_64bit_access_pj[8192]' must be >= 0"),
])
def test_bad_table_names_the_key(tmp_path, edit, needle):
    t = json.loads(json.dumps(RAW))
    edit(t)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(t))
    with pytest.raises(energy.EnergyTableError) as e:
        energy.load_table(str(p))
    assert needle in str(e.value) and str(p) in str(e.value)


def test_table_missing_a_width_the_preset_needs():
    t = energy.load_table()
    del t["mult_int16_pj"]
    with pytest.raises(energy.EnergyTableError, match="mult_int16_pj"):
        energy.energy({"macs": 1}, preset("wide16"), t)


def test_unreadable_table_and_negative_counter(tmp_path):
    with pytest.raises(energy.EnergyTableError, match="cannot be read"):
        energy.load_table(str(tmp_path / "nope.json"))
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(energy.EnergyTableError, match="not valid JSON"):
        energy.load_table(str(tmp_path / "x.json"))
    with pytest.raises(ValueError, match="'macs' is negative"):
        energy.energy({"macs": -1}, preset("default"))
