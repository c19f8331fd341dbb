"""The same engine on Icarus Verilog (a second simulator, ~30x slower): a subset."""
import shutil

import numpy as np
import pytest

from cosim.driver import MemoryImage
from cosim.execute import run_checked
from rtl import isa
from rtl.config import preset
from tests.rtl_cases import check_gemms_and_conv, raw_gemm

CFG = preset("small")
pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None,
                                reason="iverilog missing: `make setup` installs it")


SIMULATOR = "icarus"


def test_icarus_gemms_and_conv(sim):
    check_gemms_and_conv(sim, CFG, np.random.default_rng(21), "icarus")


def test_icarus_bad_instruction(sim):
    img = MemoryImage(CFG)
    img.put("all", np.arange(64))
    res = run_checked(sim, CFG, img, [raw_gemm(CFG, m=0)])
    assert res.error == isa.ERR_ZERO_DIM
