"""The `default` preset (8x8) on Verilator: bit-exact and cycle-exact too."""
import numpy as np
import pytest

from cosim.driver import ConvGeom
from cosim.execute import run_checked
from rtl.config import preset
from tests.rtl_cases import conv_case, gemm_case

CFG = preset("default")




@pytest.mark.parametrize("shape", [(32, 32, 64), (37, 21, 9), (8, 64, 1), (64, 40, 300)])
def test_default_gemms(sim, shape):
    img, prog, _ = gemm_case(CFG, np.random.default_rng(sum(shape)), *shape, relu=True, mask=True)
    run_checked(sim, CFG, img, prog, what=f"default gemm {shape}")


@pytest.mark.parametrize("kind", ["fwd", "bwd_weight", "bwd_data"])
def test_default_conv(sim, kind):
    img, prog = conv_case(CFG, np.random.default_rng(1), ConvGeom(4, 8, 8, 8, 16, 3, 3, 2, 1), kind)
    run_checked(sim, CFG, img, prog, what=f"default conv {kind}")
