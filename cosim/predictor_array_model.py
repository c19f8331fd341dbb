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
from predictor_hw.predictor_array import (PredictorArrayError, assistant_cycles,  # noqa: F401 (re-exported)
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


# ------------------------------------------------------------------------------------------
# python -m cosim.predictor_array_model: measured cycles per digits-CNN layer on the RTL
# ------------------------------------------------------------------------------------------

def _run_amaranth(cfg: AcceleratorConfig, case: dict) -> dict:
    """The same jobs in Amaranth's simulator (no Verilog build: handy for big arrays)."""
    import time

    from predictor_hw.predictor_array import (feature_beats, golden_logits, golden_rows,
                                              pack_assistant_weights, pack_predictor_weights)
    from tb.predictor_array_pysim import run_pysim, sample_beats

    p = case["params"]
    weights = pack_predictor_weights(cfg, p["w1"], p["w2"]) + pack_assistant_weights(cfg, p["aw"], p["au"])
    jobs, wants = [], []
    for j in case["jobs"]:
        if j["mode"] == 0:
            x = np.asarray(j["x"])
            jobs.append(dict(mode=0, k=j["k"], shift1=p["shift1"], shift2=p["shift2"],
                             beats=sample_beats(x, j["channels"])))
            wants.append(golden_rows(cfg, x, p, j["k"], j["channels"]))
        else:
            jobs.append(dict(mode=1, k=j["k"], beats=feature_beats(cfg, j["x"], j["y"])))
            wants.append(golden_logits(cfg, j["x"], p["aw"], p["au"], j["y"]))
    t0 = time.perf_counter()
    res = run_pysim(cfg, jobs, weights, max_cycles=10_000_000)
    results = []
    for j, want, r in zip(case["jobs"], wants, res):
        n = len(j["x"])
        cm = predictor_array_cycles(cfg, n, j["k"]) if j["mode"] == 0 else assistant_cycles(cfg, n, j["k"])
        results.append(dict(name=j["name"], n=n, k=j["k"], counters=r["counters"], model=cm,
                            cycles_ok=r["counters"] == dict(cm, errors=0), bit_exact=r["out"] == want))
    return dict(results=results, build_s=0.0, sim_s=time.perf_counter() - t0)


def measure_digits(cfg: AcceleratorConfig, sim: str = "verilator", batch: int = 32, seed: int = 0) -> dict:
    """Predictor jobs of one captured digits GP step (every layer) and one Assistant batch
    run on the RTL; per job the RTL counters, the cycle model and bit-exactness."""
    from tb.predictor_array_cases import digits_assistant_case, digits_predictor_case
    from tb.predictor_array_runner import cfg_dict, run_case

    pred = digits_predictor_case(seed=seed)
    asst = digits_assistant_case("loss", n=batch, seed=seed)
    jobs = [dict(name=l["name"], mode=0, k=l["k"], x=l["x"], channels=list(range(len(l["x"]))),
                 valid_prob=1.0, ready_prob=1.0) for l in pred["layers"]]
    jobs.append(dict(name="assistant(loss)", mode=1, k=len(asst["w"]), x=asst["x"], y=asst["y"],
                     valid_prob=1.0, ready_prob=1.0))
    case = dict(cfg=cfg_dict(cfg), params=dict(pred["params"], aw=asst["w"], au=asst["u"]), jobs=jobs)
    out = run_case(case, sim) if sim != "amaranth" else _run_amaranth(cfg, case)
    rows = []
    for r in out["results"]:
        rows.append(dict(job=r["name"], n=r["n"], k=r["k"], rtl_busy_cycles=r["counters"]["busy_cycles"],
                         model_busy_cycles=r["model"]["busy_cycles"], macs=r["counters"]["macs"],
                         macs_per_cycle=round(r["counters"]["macs"] / r["counters"]["busy_cycles"], 2),
                         counters_equal_model=r["cycles_ok"], bit_exact=r["bit_exact"]))
    eng = engine_step_cycles(cfg, batch)
    ia = IntAssistant(np.asarray(asst["w"]), np.asarray(asst["u"]), asst["fx"], asst["fw"])
    u = np.random.default_rng(seed).random(batch)
    filt = assistant_filter_hw(cfg, np.asarray(asst["f"]), np.asarray(asst["y"]), ia, u, 0.3)
    return dict(config=cfg.name, pred_array=f"{cfg.pred_rows}x{cfg.pred_cols}", sim=sim, jobs=rows,
                engine_forward_cycles=eng["forward"], engine_backward_cycles=eng["backward"],
                filter=dict(batch=batch, base_prob=0.3, kept=filt["n_kept"],
                            array_busy_cycles=filt["array_cycles"]["busy_cycles"],
                            engine_cycles_full=filt["engine_cycles_full"],
                            engine_cycles_kept=filt["engine_cycles_kept"],
                            engine_cycles_saved=filt["engine_cycles_saved"],
                            net_cycles_saved=filt["net_cycles_saved"]),
                sim_seconds=round(out["sim_s"], 1), build_seconds=round(out["build_s"], 1))


def main(argv=None) -> int:
    import argparse
    import json

    from model_sw.fileio import write_atomic
    from rtl.config import preset

    ap = argparse.ArgumentParser(description="PredictorArray on the RTL: cycles per digits-CNN layer")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--pred-array", default=None, help="override pred_rows x pred_cols, e.g. 8x8")
    ap.add_argument("--sim", default="verilator", choices=("verilator", "icarus", "amaranth"))
    ap.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    ap.add_argument("--out", default=None, help="also write the JSON result to this file")
    args = ap.parse_args(argv)
    cfg = preset(args.preset)
    if args.pred_array:
        r, c = (int(v) for v in args.pred_array.lower().split("x"))
        cfg = cfg.replace(name=f"{cfg.name}-pred{r}x{c}", pred_rows=r, pred_cols=c)
    res = measure_digits(cfg, args.sim)
    text = json.dumps(res, indent=None if args.json else 2)
    if args.out:
        write_atomic(args.out, text + "\n")
    if args.json:
        print(text)
    else:
        print(f"{res['config']}, predictor array {res['pred_array']}, {res['sim']}")
        print(f"{'job':16} {'n':>4} {'k':>4} {'rtl_cycles':>10} {'model':>8} {'macs/cyc':>8}  exact")
        for j in res["jobs"]:
            print(f"{j['job']:16} {j['n']:4} {j['k']:4} {j['rtl_busy_cycles']:10} {j['model_busy_cycles']:8} "
                  f"{j['macs_per_cycle']:8}  {j['bit_exact'] and j['counters_equal_model']}")
        print(f"engine (cycle model), digits BP step at batch 32: forward {res['engine_forward_cycles']}, "
              f"backward {res['engine_backward_cycles']}")
        print("AutoAssist filter:", json.dumps(res["filter"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
