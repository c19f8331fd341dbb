"""The `ice40` preset's lite engine (one PE; no sparse modes, no convolution addressing,
no ReLU-mask write; six 16-bit counters) on Verilator: dense GEMMs bit-exact against the golden model and cycle-exact
against the cycle model; bad input answered by an error status; the modes it does not
build refused early, in Python, with a message naming the mode and the preset."""
import numpy as np
import pytest

from cosim import driver
from cosim.driver import ConvGeom, DriverError, MemoryImage
from cosim.execute import run_checked
from rtl import isa
from rtl.config import ConfigError, preset
from rtl.engine import CORE_COUNTERS, COUNTERS, Engine, counter_names, counters_layout
from tests.rtl_cases import conv_case, gemm_case, raw_gemm

CFG = preset("ice40")


def test_lite_config_is_tiny_with_one_pe_and_the_engine_options():
    tiny = preset("tiny")
    assert CFG.replace(name="tiny", rows=2, cols=2, acc_bits=32, counter_bits=48, all_counters=True, sparse=True,
                       conv=True, relu_mask=True, fmax_logic=True) == tiny
    # the full presets keep today's design
    for name in ("tiny", "small", "default", "large", "wide16"):
        p = preset(name)
        assert (p.counter_bits, p.all_counters, p.sparse, p.conv, p.relu_mask, p.fmax_logic) == (48, True, True, True, True, True)
        assert counter_names(p) == COUNTERS
    assert counter_names(CFG) == CORE_COUNTERS
    assert counters_layout(CFG).size == 16 * len(CORE_COUNTERS)
    eng = Engine(CFG)
    eng._MustUse__silence = True                      # only its signature is looked at
    assert eng.counters.shape().size == 16 * len(CORE_COUNTERS)
    # the instruction holds no sparse or convolution fields
    assert isa.instr_width(CFG) < isa.instr_width(tiny) // 4


def _shapes(rng, n):
    """n random (M, N, K): small ones, K = 1, and K past the scratchpad (128 words: split
    K with accumulate-into) with M, N small enough for the 1K-slot memory."""
    small = [tuple(int(v) for v in rng.integers(1, 12, 3)) for _ in range(n)]
    return [(m, nn, 1) if t % 5 == 0 else
            (m % 3 + 1, nn % 3 + 1, int(rng.integers(130, 160))) if t % 5 == 1 else (m, nn, k)
            for t, (m, nn, k) in enumerate(small)]


def test_random_gemms_bit_exact_and_cycle_exact(sim):
    rng = np.random.default_rng(40)
    for trial, (M, N, K) in enumerate(_shapes(rng, 10)):
        img, prog, _ = gemm_case(CFG, rng, M, N, K, ta=bool(trial & 1), tb=bool(trial & 2),
                                 relu=bool(trial & 4), out_raw=trial % 4 == 0)
        res = run_checked(sim, CFG, img, prog, what=f"ice40 gemm {M}x{N}x{K} #{trial}")
        assert res.error == 0 and res.counters["retired"] == len(prog)


def test_gemm_equals_numpy(sim):
    rng = np.random.default_rng(4)
    img, prog, want = gemm_case(CFG, rng, 7, 5, 19, out_raw=True)
    run_checked(sim, CFG, img, prog)
    assert (img.get("d") == want).all()


@pytest.mark.parametrize("bad,code", [
    (dict(opcode=9), isa.ERR_OPCODE),
    (dict(k=0), isa.ERR_ZERO_DIM),
    (dict(m=64, k=200), isa.ERR_SPAD_A),
    (dict(store=0, m=64, n=64, k=2), isa.ERR_ACC),
    (dict(d_addr=(1 << 10) - 5), isa.ERR_ADDR_WRITE),
])
def test_bad_instruction_raises_error_status(sim, bad, code):
    img = MemoryImage(CFG)
    img.put("all", np.arange(128) - 64)
    res = run_checked(sim, CFG, img, [raw_gemm(CFG, **bad)])
    assert res.error == code
    assert (img.get("all") == np.arange(128) - 64).all()


@pytest.mark.parametrize("mode", ["compact_a", "ocompact", "omask"])
def test_sparse_modes_are_refused_naming_mode_and_preset(mode):
    img = MemoryImage(CFG)
    a, b = img.alloc("a", (4, 8)), img.alloc("b", (8, 4))
    d, om = img.alloc("d", (4, 4)), img.alloc("om", (4, 4))
    kw = {"compact_a": dict(compact_a=True), "omask": dict(om_addr=om.base, om_si=4),
          "ocompact": dict(om_addr=om.base, om_si=4, ocompact=True)}[mode]
    with pytest.raises(DriverError, match=rf"preset 'ice40' is built without the sparse modes.*{mode}"):
        driver.gemm_program(CFG, 4, 4, 8, driver.matrix_desc(a.base, 8, 1),
                            driver.matrix_desc(b.base, 1, 4), d_addr=d.base, d_si=4, **kw)
    # the encoder (the path of every instruction to the hardware) refuses it too
    with pytest.raises(ConfigError, match=rf"sparse=False.*{mode}"):
        isa.encode(CFG, raw_gemm(CFG, **{mode: 1}))
    # the same instruction is fine on a preset with the sparse modes
    isa.encode(preset("small"), raw_gemm(preset("small"), **{mode: 1}))


def test_relu_mask_write_is_refused_naming_mode_and_preset():
    with pytest.raises(DriverError, match=r"preset 'ice40' is built without the ReLU-mask write "
                                          r"\(relu_mask=False\): instruction sets write_mask"):
        gemm_case(CFG, np.random.default_rng(1), 3, 3, 3, mask=True)
    with pytest.raises(isa.ModeError, match="relu_mask=False"):
        isa.encode(CFG, raw_gemm(CFG, write_mask=1, mask_addr=100, mask_si=4))


@pytest.mark.parametrize("kind", ["fwd", "bwd_weight", "bwd_data"])
def test_convolution_is_refused_naming_mode_and_preset(kind):
    with pytest.raises(DriverError, match=r"preset 'ice40' is built without convolution addressing"):
        conv_case(CFG, np.random.default_rng(0), ConvGeom(1, 2, 5, 5, 2, 3, 3, 1, 1), kind)


def test_conv_descriptor_fields_are_refused_by_the_encoder():
    for over, field in ((dict(geo=1), "a.geo"), (dict(init={"sp": 3}), "a.init.sp"),
                        (dict(lane=[driver.digit(4, cb=1), driver.digit(cb=8), driver.digit()]),
                         "a.lane[0].count=4")):
        desc = dict(driver.matrix_desc(0, 4, 1), **over)
        with pytest.raises(isa.ModeError, match=rf"conv=False.*{field.replace('[', '.').replace(']', '.')}"):
            isa.encode(CFG, raw_gemm(CFG, a=desc))


def test_an_interrupted_build_is_rebuilt_from_scratch(tmp_path):
    """A build cut off part-way (no `built.ok`) leaves broken precompiled headers behind;
    the next session must start that build clean instead of failing in make."""
    from cosim.rtlsim import RtlSim
    with RtlSim(CFG, "verilator", build_root=tmp_path) as s:
        build_dir = s.build_dir
    (build_dir / "built.ok").unlink()
    # what a compile cut off while writing leaves: truncated objects (and, for larger models,
    # truncated precompiled headers), newer than their sources so make would keep them
    partial = sorted(build_dir.glob("*.o")) + sorted(build_dir.glob("*.gch"))
    assert partial
    for f in partial:
        f.write_bytes(b"truncated")
    rng = np.random.default_rng(8)
    with RtlSim(CFG, "verilator", build_root=tmp_path) as s:
        assert s.build_dir == build_dir and s.build_s > 0
        img, prog, want = gemm_case(CFG, rng, 3, 4, 5, out_raw=True)
        run_checked(s, CFG, img, prog)
        assert (img.get("d") == want).all()
