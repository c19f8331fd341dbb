"""Sparse RTL test and bench cases: GEMMs whose A operand has zero words and whose
outputs are masked, with masks drawn i.i.d. or with spatial structure."""
import numpy as np

from cosim import driver
from cosim.driver import MemoryImage


def mask_iid(rng, shape, density):
    """Every element kept independently with probability ``density``."""
    return (rng.random(shape) < density).astype(np.int64)


def mask_pixels(rng, shape, density):
    """Spatially structured: a [channels, pixels] mask whose zeros are whole pixels
    (the same in every channel), as bias-free convolutions over blank image regions
    give; kept pixels are runs (a random walk of run lengths ~8), then each kept
    element survives with probability 0.9 so channels still differ a little."""
    ch, px = shape
    keep = np.zeros(px, dtype=bool)
    p = 0
    on = rng.random() < density
    while p < px:
        run = int(rng.geometric(1 / 8))
        keep[p:p + run] = on
        p += run
        on = rng.random() < density
    # fix the density of kept pixels exactly-ish by trimming / adding runs at random
    want = int(round(density / 0.9 * px)) if density < 0.9 else px
    idx = np.nonzero(keep)[0]
    if len(idx) > want:
        keep[rng.choice(idx, len(idx) - want, replace=False)] = False
    elif len(idx) < want:
        off = np.nonzero(~keep)[0]
        keep[rng.choice(off, min(len(off), want - len(idx)), replace=False)] = True
    m = np.broadcast_to(keep, (ch, px)).copy()
    if density < 0.9:
        m &= rng.random((ch, px)) < 0.9
    return m.astype(np.int64)


def masked_gemm_case(cfg, rng, M, N, K, gmask, omask=None, compact=True, ocompact=False, shift=6):
    """D = A.B with A = G * gmask (the masked gradient, M x K, zeros where gmask is 0)
    and the output masked by ``omask`` (M x N) if given (``ocompact``: computing only
    the columns some row needs); dense when ``compact`` is False and ``omask`` None."""
    img = MemoryImage(cfg)
    A = rng.integers(-128, 128, (M, K)) * gmask
    B = rng.integers(-128, 128, (K, N))
    a = img.put("a", A)
    b = img.put("b", B)
    d = img.alloc("d", (M, N))
    kw = dict(d_addr=d.base, d_si=N, d_sj=1, shift=shift, compact_a=compact)
    if omask is not None:
        om = img.put("om", omask)
        kw.update(om_addr=om.base, om_si=N, om_sj=1, ocompact=ocompact)
    ad, bd = driver.matrix_desc(a.base, K, 1), driver.matrix_desc(b.base, 1, N)
    prog = driver.gemm_program(cfg, M, N, K, ad, bd, **kw)
    return img, prog, A, B
