"""Training methods on the analytic model: cycles, counters and energy of one
training step (one batch of candidate instances) of a network, per method.

* ``bp``: every layer's forward, backward-weight and backward-data (not for the
  first layer of a CNN: its input needs no gradient) run one after the other on the engine.
* ``adagp``: a fraction ``gp_fraction`` of the steps are GP steps: forward only, each
  layer's predictor forward on the predictor array runs while the engine does the
  next layer's forward (two-stage pipeline: the GP step ends when the last
  prediction is out).  The other steps are BP steps plus the predictor's training on
  (output activation, true dW) pairs, on the predictor array, pipelined behind the
  backward pass layer by layer.  Predictor: ``model_sw.adagp_predictor`` (one sample per
  output channel; conv 1->8 3x3 on PxP, pool 2, fc 32 -> fan-in outputs).
* ``sparse``: the backward GEMMs skip work made zero by ReLU masks (densities
  ``density``): backward-data computes only the input positions whose mask is 1 (output
  sparsity: x density when the layer's input is a ReLU output), backward-weight skips the
  zero output-gradient steps (input sparsity: x density when the layer's output
  gradient is ReLU-masked); ideal compaction (every counter x density).  Forward is dense.
* ``autoassist``: the Boss trains only the kept fraction ``keep_rate`` of the
  instances (forward and backward); the Assistant (logistic regression on
  ``assistant_features`` features) decides every candidate and trains on every
  reported instance, on the predictor array, asynchronously (hidden unless it is slower).
* ``all``: AutoAssist feeding ADA-GP whose BP steps use sparse backward.

All methods are reported per step of ``batch`` candidate instances, so that
``speedup_vs_bp`` is work per pass over the data (same number of passes).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from rtl.config import AcceleratorConfig
from . import energy as energy_mod
from . import layermodel as L
from .networks import Network

METHODS = ("bp", "adagp", "sparse", "autoassist", "all")


class MethodError(ValueError):
    """Unknown method or a bad assumption value."""


@dataclass(frozen=True)
class Assumptions:
    batch: int = 32
    gp_fraction: float = 0.6726     # docs/adagp.md: adagp (fp32), 5 seeds, post-warm-up GP steps
    density: float = 0.4            # stated ReLU density (typical 0.3-0.5)
    keep_rate: float = 0.5077       # docs/autoassist.md: headline run, kept instances
    assistant_features: int = 3     # docs/autoassist.md: the 'loss' feature set (default)
    pred_rows: int = 4              # predictor MAC array (predictor_hw config defaults)
    pred_cols: int = 4
    pred_p: int = 4                 # model_sw PredictorConfig
    pred_channels: int = 8
    pred_pool: int = 2

    def check(self):
        if not isinstance(self.batch, int) or self.batch < 1:
            raise MethodError(f"batch={self.batch!r} must be a positive integer")
        for f, lo in (("gp_fraction", 0.0), ("density", 0.0), ("keep_rate", 0.0)):
            v = getattr(self, f)
            if not (lo <= v <= 1.0):
                raise MethodError(f"{f}={v!r} must be in [0, 1]")
        if self.keep_rate == 0:
            raise MethodError("keep_rate=0 would train on nothing")
        return self

    @property
    def pred_features(self) -> int:
        return self.pred_channels * (self.pred_p // self.pred_pool) ** 2


def check_methods(names) -> list[str]:
    out = []
    for n in names:
        if n not in METHODS:
            raise MethodError(f"unknown method {n!r}; choose from {', '.join(METHODS)}")
        out.append(n)
    return out


# ---------------------------------------------------------------- helpers
def add(*ds, scale: float = 1.0) -> dict:
    out = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v * scale
    return out


def two_stage(a: list, b: list) -> float:
    """End time of a two-stage pipeline: item i's stage b starts after its stage a and
    after item i-1's stage b; stage a items run back to back."""
    ta = tb = 0
    for x, y in zip(a, b):
        ta += x
        tb = max(ta, tb) + y
    return max(ta, tb)


def _pred_ideal(asm: Assumptions, m: int, n: int, k: int) -> int:
    return -(-m // asm.pred_rows) * -(-n // asm.pred_cols) * k


def predictor_cost(layer, asm: Assumptions, cfg: AcceleratorConfig) -> dict:
    """Predictor GEMMs of one layer on the predictor array (ideal cycles: its exact
    model is predictor_hw's), forward (GP steps) and training (BP steps)."""
    s, kl = layer.out_units, layer.fan_in
    pp, ch, f = asm.pred_p * asm.pred_p, asm.pred_channels, asm.pred_features
    conv = (ch, s * pp, 9)                     # M, N, K
    fc = (kl, s, f)
    fwd_cyc = _pred_ideal(asm, *conv) + _pred_ideal(asm, *fc)
    train_extra = [(f, s, kl), (kl, f, s), (ch, 9, s * pp)]      # fc dX, fc dW, conv dW
    train_cyc = fwd_cyc + sum(_pred_ideal(asm, *g) for g in train_extra)
    fwd_macs = s * (ch * pp * 9 + f * kl)
    train_macs = 2 * s * ch * pp * 9 + 3 * s * f * kl
    ob, ab = cfg.op_bytes, cfg.acc_bytes
    w_bytes = (kl * f + ch * 9) * ob
    return {"fwd_cycles": fwd_cyc, "train_cycles": train_cyc,
            "fwd": {"predictor_macs": fwd_macs,
                    # predictor weights in, predicted dW (8-bit) out; samples come from the output stream
                    "predictor_dram_bytes": w_bytes + s * kl * ob},
            "train": {"predictor_macs": train_macs,
                      # weights in and out, the true dW (raw) in
                      "predictor_dram_bytes": 2 * w_bytes + s * kl * ab}}


def layer_table(cfg: AcceleratorConfig, net: Network, batch: int) -> list[dict]:
    """Per layer: {'layer', 'ops': {op: counters}, 'fallback': bool}."""
    rows = []
    n = len(net.layers)
    for i, layer in enumerate(net.layers):
        ops = {}
        fb = False
        for gm in L.layer_gemms(layer, batch, first=i == 0, last=i == n - 1, input_grad=net.input_grad):
            c = L.gemm_cost(cfg, gm)
            fb = fb or c.pop("fallback")
            ops[gm.op] = c
        rows.append({"layer": layer, "ops": ops, "fallback": fb})
    return rows


def _sparse_ops(row, density: float) -> dict:
    """A sparse backward GEMM is modelled as the dense GEMM over the compacted dimension
    (N x density for backward-data, K x density for backward-weight): every counter scales
    by the density, except backward-weight's output (dW stays dense)."""
    layer, ops = row["layer"], row["ops"]
    out = dict(ops)
    factors = {"bwd_data": density if layer.in_relu else 1.0,
               "bwd_weight": density if layer.grad_masked else 1.0}
    for op, fac in factors.items():
        if op in ops and fac != 1.0:
            c = {k: v * fac for k, v in ops[op].items()}
            if op == "bwd_weight":
                c["wr_bytes"] = ops[op]["wr_bytes"]
            out[op] = c
    return out


def _bwd(ops: dict) -> dict:
    return add(*(ops[o] for o in ("bwd_weight", "bwd_data") if o in ops))


# ---------------------------------------------------------------- one step per method
def step(method: str, cfg: AcceleratorConfig, net: Network, asm: Assumptions, rows=None) -> dict:
    """Average counters of one step (``busy_cycles`` = the step's cycles), per ``method``."""
    rows = rows if rows is not None else layer_table(cfg, net, asm.batch)
    sparse = method in ("sparse", "all")
    opsl = [_sparse_ops(r, asm.density) if sparse else r["ops"] for r in rows]
    fwd = [o["fwd"] for o in opsl]
    bwd = [_bwd(o) for o in opsl]
    bp = add(*fwd, *bwd)
    out = dict(bp)
    out["backward_cycles"] = sum(b["busy_cycles"] for b in bwd)
    if method in ("adagp", "all"):
        preds = [predictor_cost(r["layer"], asm, cfg) if r["layer"].has_weight else None for r in rows]
        zero = {"fwd_cycles": 0, "train_cycles": 0, "fwd": {}, "train": {}}
        preds = [p or zero for p in preds]
        # BP step: forward, then backward layer by layer (last first) with the predictor's
        # training of each layer behind it on the predictor array
        bp_cyc = (sum(f["busy_cycles"] for f in fwd)
                  + two_stage([b["busy_cycles"] for b in bwd[::-1]], [p["train_cycles"] for p in preds[::-1]]))
        bp_step = add(bp, *(p["train"] for p in preds))
        bp_step["busy_cycles"] = bp_cyc
        gp_cyc = two_stage([f["busy_cycles"] for f in fwd], [p["fwd_cycles"] for p in preds])
        gp_step = add(*fwd, *(p["fwd"] for p in preds))
        gp_step["busy_cycles"] = gp_cyc
        g = asm.gp_fraction
        out = add(add(bp_step, scale=1 - g), add(gp_step, scale=g))
        out["backward_cycles"] = (1 - g) * sum(b["busy_cycles"] for b in bwd)
    if method in ("autoassist", "all"):
        keep, kf = asm.keep_rate, asm.assistant_features
        boss = add(out, scale=keep)
        # every candidate decided (kf MACs), every kept instance reported and trained on (2 kf)
        a_macs = asm.batch * kf + keep * asm.batch * 2 * kf
        a_cyc = -(-a_macs // (asm.pred_rows * asm.pred_cols))
        boss["assistant_macs"] = a_macs
        # per candidate: its features in (kf 16-bit values); per kept instance: loss and margin out
        boss["assistant_dram_bytes"] = asm.batch * kf * 2 + keep * asm.batch * 4
        boss["busy_cycles"] = max(boss["busy_cycles"], a_cyc)
        out = boss
    return out


def dram_bytes(c: dict) -> float:
    return (c.get("rd_bytes", 0) + c.get("wr_bytes", 0) + c.get("mask_bits", 0) / 8
            + c.get("predictor_dram_bytes", 0) + c.get("assistant_dram_bytes", 0))


def evaluate(cfg: AcceleratorConfig, net: Network, methods, asm: Assumptions, table=None) -> dict:
    """{'rows': per-layer table, 'results': [one dict per method]} for one network."""
    asm.check()
    methods = check_methods(methods)
    rows = layer_table(cfg, net, asm.batch)
    res = {m: step(m, cfg, net, asm, rows) for m in dict.fromkeys(["bp", *methods])}
    e = {m: energy_mod.energy(c, cfg, table) for m, c in res.items()}
    base, ebase = res["bp"], e["bp"]
    out = []
    for m in methods:
        c = res[m]
        out.append({
            "network": net.name, "dataset": net.dataset, "method": m, "preset": cfg.name,
            "batch": asm.batch, "cycles": c["busy_cycles"],
            "speedup_vs_bp": base["busy_cycles"] / c["busy_cycles"],
            "backward_speedup_vs_bp": (base["backward_cycles"] / c["backward_cycles"]
                                       if c["backward_cycles"] else None),
            "energy_j": e[m]["total_j"], "energy_vs_bp": e[m]["total_pj"] / ebase["total_pj"],
            "dram_bytes": dram_bytes(c), "macs": c["macs"],
            "utilization": c["macs"] / (c["busy_cycles"] * cfg.rows * cfg.cols),
            "energy_pj": {k: v for k, v in e[m].items() if k not in ("total_pj", "total_j")},
            "fallback_layers": sum(r["fallback"] for r in rows),
        })
    return {"rows": rows, "results": out, "assumptions": asdict(asm)}
