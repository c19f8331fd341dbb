"""Sparse execution on Icarus Verilog (the second simulator): one small case of
each mode, bit-exact and cycle-exact."""
import shutil

import numpy as np
import pytest

from cosim.execute import run_checked
from rtl.config import preset
from cosim.bench_sparsity import mask_pixels, masked_gemm_case

CFG = preset("small")
SIMULATOR = "icarus"
pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None,
                                reason="iverilog missing: `make setup` installs it")


def test_icarus_sparse_modes(sim):
    rng = np.random.default_rng(8)
    om = mask_pixels(rng, (4, 24), 0.3)
    for kw in (dict(compact=True), dict(compact=False, ocompact=True)):
        img, prog, A, B = masked_gemm_case(CFG, rng, 4, 24, 10, mask_pixels(rng, (4, 10), 0.3), om, **kw)
        run_checked(sim, CFG, img, prog, what=f"icarus sparse {kw}")
        assert ((img.get("d") != 0) <= (om != 0)).all()
