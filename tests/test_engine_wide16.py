"""16-bit operands (preset wide16: 48-bit accumulators, 64-bit memory slots) on Verilator."""
import numpy as np

from cosim import driver
from cosim.driver import MemoryImage
from cosim.execute import run_checked
from cosim.rtlsim import RtlSim
from model_sw import numerics
from rtl.config import preset

CFG = preset("wide16")


def test_wide16_gemms_raw_and_requantized():
    rng = np.random.default_rng(0)
    with RtlSim(CFG, "verilator") as sim:
        for M, N, K, raw in ((9, 7, 33, True), (5, 12, 200, False)):
            img = MemoryImage(CFG)
            A = rng.integers(-32768, 32768, (M, K))
            B = rng.integers(-32768, 32768, (K, N))
            a, b, d = img.put("a", A), img.put("b", B), img.alloc("d", (M, N))
            mk = img.alloc("mask", (M, N))
            prog = driver.gemm_program(CFG, M, N, K, driver.matrix_desc(a.base, K, 1),
                                       driver.matrix_desc(b.base, 1, N), d_addr=d.base, d_si=N,
                                       out_raw=raw, shift=20, relu=not raw, mask_addr=mk.base, mask_si=N)
            run_checked(sim, CFG, img, prog, what=f"wide16 {M}x{N}x{K}")
            want = A @ B if raw else numerics.requantize(A @ B, 20, 16, relu=True)[0]
            assert (img.get("d") == want).all()
