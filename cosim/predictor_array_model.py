"""Host-side models around the PredictorArray: its cycle functions (re-exported from
predictor_hw.predictor_array), the engine cycles of one digits-CNN training step, and
:func:`assistant_filter_hw`, the AutoAssist batch filter run on the array.

AutoAssist on the hardware (issue 6): before a batch goes to the engine, the array
computes the Assistant's int32 logit of every instance (bit-exact with
model_sw.autoassist_assistant.assistant_logit_int); the host turns it into
p = sigmoid(z * 2**-(fx + fw)) and applies model_sw's shrink rule
(``shrink_keep(p, u, base_prob)``) with the supplied uniform draws u.  The kept
instances go through the engine's forward and backward; the cycles saved are the
engine-cycle-model difference between the full and the shrunk batch.
"""
from __future__ import annotations

import functools

import numpy as np

from model_sw.autoassist_assistant import (IntAssistant, assistant_logit_int, check_base_prob,
                                           quantize_features, shrink_keep, sigmoid)
from predictor_hw.predictor_array import (Geometry, PredictorArrayError, assistant_cycles,  # noqa: F401
                                          predictor_array_cycles)
from rtl.config import AcceleratorConfig

BACKENDS = ("golden", "verilator", "icarus")


@functools.lru_cache(maxsize=64)
def engine_step_cycles(cfg: AcceleratorConfig, batch: int) -> dict:
    """Engine cycles (cosim.cyclemodel) of one BP training step of the digits CNN on
    ``batch`` instances: the forward programs and the backward ones (weight and data
    gradients), as cosim.cnn_pass builds them.  Cycle counts depend on shapes only, so
    the programs are laid out in a memory big enough for any batch (``mem_addr_bits``
    does not enter the cycle model)."""
    import torch

    from cosim.cnn_pass import CnnPass
    from cosim.cyclemodel import program_cycles
    from model_sw.models import CNN

    if batch < 0:
        raise ValueError(f"batch={batch} must be >= 0")
    if batch == 0:
        return dict(forward=0, backward=0, total=0)
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CNN()
    x = torch.rand(batch, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    big = cfg.replace(name=f"{cfg.name}-cycles", mem_addr_bits=30)
    cp = CnnPass(big, model, x, y)
    fwd = sum(program_cycles(big, op.prog) for op in cp.forward_ops())
    cp.put_logit_grad()
    bwd = sum(program_cycles(big, op.prog) for ops, _ in cp.backward_stages() for op in ops)
    return dict(forward=fwd, backward=bwd, total=fwd + bwd)


def _hw_logits(cfg, x_int, y, ia: IntAssistant, sim: str) -> np.ndarray:
    """The array's logits, from the RTL (the cocotb bench with this one job)."""
    from tb.predictor_array_runner import cfg_dict, run_case

    job = dict(name="assistant-filter", mode=1, k=int(x_int.shape[1]), x=x_int.tolist(), y=np.asarray(y).tolist(),
               valid_prob=1.0, ready_prob=1.0, return_outputs=True)
    case = dict(cfg=cfg_dict(cfg), params=dict(aw=ia.w_int.tolist(), au=ia.u_int.tolist()), jobs=[job])
    [res] = run_case(case, sim)["results"]
    z = [v for b in res["outputs"] for v, e in zip(b["z"], b["en"]) if e]
    return np.asarray(z, dtype=np.int64)


def assistant_filter_hw(cfg: AcceleratorConfig, features, y, ia: IntAssistant, u, base_prob: float,
                        backend: str = "golden", engine_cycles: bool = True) -> dict:
    """Drop the instances AutoAssist shrinks, the Assistant running on the predictor array.

    features: (N, K) real features (quantized with the Assistant's ``ia.fx``), y: (N,) labels,
    ia: quantize_assistant(...), u: (N,) uniform draws, base_prob in [0, 1].
    backend: ``golden`` (assistant_logit_int, which the RTL matches bit for bit; see
    tests/test_predictor_array*.py), ``verilator`` or ``icarus`` (run the RTL).

    Returns keep (bool mask), kept (indices), logits z (int), p, the array's cycles
    (assistant_cycles) and the engine cycles of a training step on the full and on the
    kept batch, their difference ``engine_cycles_saved`` and ``net_cycles_saved``
    (saved minus the array's busy cycles, i.e. if the filter is not overlapped);
    ``engine_cycles=False`` leaves the engine figures out (None).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; choose one of {', '.join(BACKENDS)}")
    base_prob = check_base_prob(base_prob)
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] == 0:
        raise PredictorArrayError(f"features of shape {f.shape}: need a non-empty (N, K) batch")
    y = np.asarray(y, dtype=np.int64)
    u = np.asarray(u, dtype=np.float64)
    if y.shape != (f.shape[0],) or u.shape != (f.shape[0],):
        raise PredictorArrayError(f"y {y.shape} and u {u.shape} must both be ({f.shape[0]},)")
    if f.shape[1] != len(ia.w_int):
        raise PredictorArrayError(f"{f.shape[1]} features but the Assistant has {len(ia.w_int)} weights")
    x_int, _ = quantize_features(f, ia.fx)
    x_int = np.asarray(x_int)
    if backend == "golden":
        z = assistant_logit_int(x_int, ia.w_int, ia.u_int, y)
    else:
        z = _hw_logits(cfg, x_int, y, ia, backend)
    p = sigmoid(z * 2.0 ** -ia.acc_frac)
    keep = shrink_keep(p, u, base_prob)
    n, n_kept = len(keep), int(keep.sum())
    arr = assistant_cycles(cfg, n, f.shape[1])
    out = dict(keep=keep, kept=np.flatnonzero(keep), logits=z, p=p, n=n, n_kept=n_kept, array_cycles=arr,
               engine_cycles_full=None, engine_cycles_kept=None, engine_cycles_saved=None, net_cycles_saved=None)
    if engine_cycles:
        full, kept = engine_step_cycles(cfg, n)["total"], engine_step_cycles(cfg, n_kept)["total"]
        out.update(engine_cycles_full=full, engine_cycles_kept=kept, engine_cycles_saved=full - kept,
                   net_cycles_saved=full - kept - arr["busy_cycles"])
    return out
