"""The same engine on Icarus Verilog (a second simulator, ~30x slower): a subset."""
import shutil

import numpy as np
import pytest

from cosim.driver import ConvGeom, MemoryImage
from cosim.execute import run_checked
from rtl import isa
from rtl.config import preset
from tests.rtl_cases import conv_case, gemm_case, raw_gemm

CFG = preset("small")
pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None,
                                reason="iverilog missing: `make setup` installs it")


SIMULATOR = "icarus"


def test_icarus_gemms_and_conv(sim):
    rng = np.random.default_rng(21)
    for M, N, K, ta, tb in ((5, 7, 9, False, True), (8, 3, 1, True, False), (6, 9, 40, False, False)):
        img, prog, _ = gemm_case(CFG, rng, M, N, K, ta=ta, tb=tb, relu=True, mask=True)
        run_checked(sim, CFG, img, prog, what=f"icarus gemm {M}x{N}x{K}")
    img, prog = conv_case(CFG, rng, ConvGeom(1, 2, 6, 6, 3, 3, 3, 2, 1), "bwd_data")
    run_checked(sim, CFG, img, prog, what="icarus conv bwd_data")


def test_icarus_bad_instruction(sim):
    img = MemoryImage(CFG)
    img.put("all", np.arange(64))
    res = run_checked(sim, CFG, img, [raw_gemm(CFG, m=0)])
    assert res.error == isa.ERR_ZERO_DIM
