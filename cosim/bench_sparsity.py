"""Sparsity bench: dense vs sparse execution of backward-pass GEMMs on the engine.

    python -m cosim bench sparsity [--preset default] [--sim verilator] [--json] [--model-only]

Every case runs twice on the RTL (dense program, sparse program), each checked
bit-exactly against the golden model (dense result, then masking) and its
busy-cycle counter exactly against the analytic cycle model.  One JSON object per
case: ``case, density, dense_cycles, sparse_cycles, ideal_cycles, bit_exact`` and
more (``ideal = dense_cycles * density``).  Cases:

* ``iid-*`` / ``pixel-*``: a backward-weight-shaped GEMM dW = (G*mask) . X^T whose
  gradient operand is masked by a synthetic ReLU mask over [channels, pixels]:
  i.i.d. elements, or spatially structured (whole pixels zero in every channel,
  in runs; :func:`mask_pixels`); sparse = zero-word skipping
  (compact_a);
* ``digits-*``: each backward op of the digits CNN (model_sw) on its real ReLU
  masks, dense vs sparse, and the whole backward pass;
* ``model-*``: analytic only (no RTL): output-column compaction of the real masks
  after regrouping channels by mask similarity, and the mask statistics of the
  digits CNN after a short training.
"""
from __future__ import annotations

import numpy as np

from rtl.config import preset
from . import cyclemodel, driver
from .driver import MemoryImage
from .execute import MismatchError, golden_run, run_checked
from .rtlsim import RtlSim

DENSITIES = (1.0, 0.75, 0.5, 0.25, 0.1, 0.05)


# ---- synthetic masks and masked GEMMs (also used by the tests) -----------------
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


def _run(sim, cfg, img, prog, what, model_only):
    """(busy cycles, bit_exact) of ``prog`` from ``img``; ``img`` is left unchanged."""
    if model_only:
        return cyclemodel.program_cycles(cfg, prog, img.mem), None
    saved = img.mem.copy()
    try:
        res = run_checked(sim, cfg, img, prog, what=what)
        return res.counters["busy_cycles"], True
    except MismatchError as e:
        print(f"# MISMATCH {what}: {e}", flush=True)
        return cyclemodel.program_cycles(cfg, prog, saved), False
    finally:
        img.mem[:] = saved


def synthetic_cases(cfg, sim, emit, model_only, seed=0):
    R, C = cfg.rows, cfg.cols
    # channels x pixels gradient (A), pixels x taps operand (B): enough tiles on both
    # sides that the operand loads do not bound the sparse run (see docs/sparsity.md)
    M, N, K = 8 * R, 8 * C, min(256, cfg.max_k)
    for kind, gen in (("iid", mask_iid), ("pixel", mask_pixels)):
        for dens in DENSITIES:
            rng = np.random.default_rng(seed)
            g = gen(rng, (M, K), dens)
            cyc, ok = {}, True
            for mode in ("dense", "sparse"):
                img, prog, _, _ = masked_gemm_case(cfg, np.random.default_rng(seed + 1), M, N, K, g,
                                                   compact=mode == "sparse")
                cyc[mode], bit = _run(sim, cfg, img, prog, f"{kind} d={dens} {mode}", model_only)
                ok = ok and bit is not False
            A = g.reshape(M // R, R, K).any(axis=1)
            emit(_row(f"{kind}-gemm-{M}x{N}x{K}", float(g.mean()), cyc, ok, model_only,
                      mask=kind, word_density=round(float(A.mean()), 4)))


def output_cases(cfg, sim, emit, model_only, seed=0):
    """Output sparsity: a backward-data-shaped GEMM (one tile row of R channels, many
    pixel columns) whose outputs are masked; dense = hardware masking only (omask),
    sparse = only the columns some channel needs are computed (ocompact)."""
    R, C = cfg.rows, cfg.cols
    M, N = min(R, C), 64 * C
    # K = 64, and K = 144 as in the digits CNN's conv2 backward-data (16 x 3 x 3): the
    # lane walk costs one cycle per column, so the speed-up is bounded by K / C
    for kind, gen, K in [(k, g, kk) for kk in (64, 144)
                         for k, g in (("iid", mask_iid), ("pixel", mask_pixels))]:
        for dens in DENSITIES:
            om = gen(np.random.default_rng(seed), (M, N), dens)
            g = np.ones((M, K), dtype=np.int64)
            cyc, ok = {}, True
            for mode in ("dense", "sparse"):
                img, prog, _, _ = masked_gemm_case(cfg, np.random.default_rng(seed + 1), M, N, K, g, om,
                                                   compact=False, ocompact=mode == "sparse")
                cyc[mode], bit = _run(sim, cfg, img, prog, f"out-{kind} d={dens} {mode}", model_only)
                ok = ok and bit is not False
            emit(_row(f"{kind}-out-{M}x{N}x{K}", float(om.mean()), cyc, ok, model_only, mask=kind,
                      column_density=round(float(om.any(axis=0).mean()), 4)))


def _row(case, density, cyc, ok, model_only, **extra):
    d, s = cyc["dense"], cyc["sparse"]
    return {"case": case, "density": round(density, 4), "dense_cycles": int(d), "sparse_cycles": int(s),
            "ideal_cycles": round(d * density, 1), "speedup": round(d / s, 3),
            "vs_ideal": round(s / max(d * density, 1e-9), 3) if density > 0 else None,
            "bit_exact": None if model_only else bool(ok), **extra}


def digits_pass(cfg, batch: int, sparse: bool, seed: int = 0):
    """The digits CNN's forward pass (golden) and the backward ops of ``sparse``."""
    import torch
    from model_sw.data import load_digits_split
    from model_sw.models import CNN
    from .cnn_pass import CnnPass
    torch.manual_seed(seed)
    data = load_digits_split()
    p = CnnPass(cfg, CNN(), data.x_train[:batch], data.y_train[:batch], sparse=sparse)
    for op in p.forward_ops():
        p.img.mem, _ = golden_run(cfg, p.img, op.prog)
    p.put_logit_grad()
    return p


def digits_cases(cfg, sim, emit, model_only, batch):
    """Each backward op of the digits CNN, dense and sparse, on its real masks; the
    ops run in order on the engine so each reads what the previous one wrote."""
    passes = {mode: digits_pass(cfg, batch, mode == "sparse") for mode in ("dense", "sparse")}
    stages = {mode: p.backward_stages() for mode, p in passes.items()}
    tot = {"dense": 0, "sparse": 0}
    ok_all = True
    rows = []
    for si in range(len(stages["dense"])):
        for oi in range(len(stages["dense"][si][0])):
            cyc, ok = {}, True
            for mode in ("dense", "sparse"):
                p, op = passes[mode], stages[mode][si][0][oi]
                before = p.img.mem.copy()
                cyc[mode], bit = _run(sim, cfg, p.img, op.prog, f"digits {op.layer} {op.kind} {mode}",
                                      model_only)
                ok = ok and bit is not False
                p.img.mem[:], _ = golden_run(cfg, p.img, op.prog)   # advance to the op's result
                if mode == "sparse":
                    dens = _op_density(cfg, p, op, before)
            tot["dense"] += cyc["dense"]
            tot["sparse"] += cyc["sparse"]
            ok_all = ok_all and ok
            op = stages["dense"][si][0][oi]
            rows.append(_row(f"digits-{op.layer}-{op.kind}", dens, cyc, ok, model_only,
                             mask="digits-cnn", batch=batch))
    for r in rows:
        emit(r)
    emit({**_row("digits-backward-pass", _pass_density(passes["sparse"]), tot, ok_all, model_only,
                 mask="digits-cnn", batch=batch), "paper_backward_speedup": "1.69x-5.43x"})
    return passes["sparse"]


def _op_density(cfg, p, op, mem_before):
    """The density an op's sparsity depends on: the fraction of kept outputs (its
    omask) for backward-data, of nonzero gradient elements (its A operand) for
    backward-weight; 1.0 where no ReLU mask is involved."""
    ins = op.prog[0]
    if ins.get("omask"):
        return float(p.img.get("mask_" + {"g_h2": "h2", "g_h1": "h1"}[op.out]).mean())
    if ins.get("compact_a"):
        src = {"conv2": "g_h2", "conv1": "g_h1"}[op.layer]
        t = p.img.tensors[src]
        return float((mem_before[t.base:t.base + t.size] != 0).mean())
    return 1.0


def _pass_density(p):
    m = [p.img.get("mask_h1"), p.img.get("mask_h2")]
    return float(sum(x.sum() for x in m) / sum(x.size for x in m))


def group_rows(mask: np.ndarray, g: int) -> list[int]:
    """A channel order that puts channels with similar masks into the same group of
    ``g`` rows (greedy: seed each group with the sparsest channel left, then add the
    channel that grows the group's union of needed columns least)."""
    left = list(range(mask.shape[0]))
    order = []
    while left:
        seed = min(left, key=lambda c: mask[c].sum())
        grp, union = [seed], mask[seed].astype(bool)
        left.remove(seed)
        while len(grp) < g and left:
            c = min(left, key=lambda c: (union | mask[c].astype(bool)).sum())
            grp.append(c)
            union |= mask[c].astype(bool)
            left.remove(c)
        order += grp
    return order


def grouping_cases(cfg, emit, p):
    """Analytic (cycle model, no RTL): output-column compaction of each
    backward-data layer of the digits CNN on its real mask, in the natural channel
    order and after the driver regroups channels by mask similarity, beside the
    element-granular ideal (dense x density)."""
    G = min(cfg.rows, cfg.cols)
    for name, act in (("fc", "h2"), ("conv2", "h1")):
        geo = p.geoms[name]
        mk = p.img.get("mask_" + act).reshape(geo.cin, -1)
        K = geo.cout * geo.kh * geo.kw
        cyc = {}
        for mode, om in (("dense", mk), ("sparse", mk), ("grouped", mk[group_rows(mk, G)]),
                         ("all_kept", np.ones_like(mk))):
            # timing depends on the mask and the shapes only: both operands read one slot
            img = MemoryImage(cfg)
            img.put("one", [1])
            o = img.put("om", om)
            d = img.alloc("d", om.shape)
            n = om.shape[1]
            one = driver.matrix_desc(0, 0, 0)
            prog = driver.gemm_program(cfg, om.shape[0], n, K, one, one, d_addr=d.base, d_si=n,
                                       om_addr=o.base, om_si=n, om_sj=1, ocompact=mode != "dense",
                                       layer=f"{name} {mode}")
            cyc[mode] = cyclemodel.program_cycles(cfg, prog, img.mem)
        unions = {mode: float(np.mean([om[r:r + G].any(axis=0).mean() for r in range(0, len(om), G)]))
                  for mode, om in (("natural", mk), ("grouped", mk[group_rows(mk, G)]))}
        emit({**_row(f"model-{name}-bwd_data-grouping", float(mk.mean()), cyc, True, True,
                     mask="digits-cnn"), "grouped_cycles": int(cyc["grouped"]),
              # ocompact with nothing to skip: what merging instructions alone gives
              "ocompact_all_kept_cycles": int(cyc["all_kept"]),
              "column_density_natural": round(unions["natural"], 4),
              "column_density_grouped": round(unions["grouped"], 4), "group_rows": G})


def trained_mask_stats(emit, epochs: int = 6, batch: int = 32, seed: int = 0):
    """The same statistics after training the digits CNN briefly (SGD, lr 0.05,
    momentum 0.9): does training make the masks sparser or more pixel-structured?"""
    import torch
    import torch.nn.functional as F
    from model_sw.data import load_digits_split
    from model_sw.models import CNN
    torch.manual_seed(seed)
    d = load_digits_split()
    m = CNN()
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(d.x_train))
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(m(d.x_train[idx]), d.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = float((m(d.x_test).argmax(1) == d.y_test).float().mean())
        h1 = torch.relu(m.conv1(d.x_train[:batch]))
        h2 = torch.relu(m.conv2(h1))
    for name, h in (("h1", h1), ("h2", h2)):
        mk = (h > 0).permute(1, 0, 2, 3).reshape(h.shape[1], -1).numpy()
        emit({"case": f"model-digits-trained-{name}", "density": round(float(mk.mean()), 4),
              "column_density": round(float(mk.any(axis=0).mean()), 4), "epochs": epochs,
              "test_accuracy": round(acc, 4)})


def table_printer():
    cols = ["case", "density", "dense_cycles", "sparse_cycles", "ideal_cycles", "speedup", "vs_ideal",
            "bit_exact"]
    first = [True]

    def emit(row):
        if first[0]:
            print("  ".join(f"{c:>{24 if c == 'case' else 13}}" for c in cols))
            first[0] = False
        print("  ".join(f"{str(row.get(c)):>{24 if c == 'case' else 13}}" for c in cols), flush=True)
    return emit


def run(preset_name: str, sim_name: str, emit, model_only: bool = False, batch: int = 32):
    cfg = preset(preset_name)
    if model_only:
        output_cases(cfg, None, emit, True)
        synthetic_cases(cfg, None, emit, True)
        p = digits_cases(cfg, None, emit, True, batch)
    else:
        with RtlSim(cfg, sim_name) as sim:
            output_cases(cfg, sim, emit, False)
            synthetic_cases(cfg, sim, emit, False)
            p = digits_cases(cfg, sim, emit, False, batch)
    grouping_cases(cfg, emit, p)
    trained_mask_stats(emit)
