"""Co-simulated training (cosim.train) on the golden backend: the engine's
gradients against PyTorch autograd, cycle accounting per method against the layer
shapes, bit-for-bit reproducibility and resume, and the report files."""
import csv
import json
import os

import pytest
import torch
import torch.nn.functional as F

from cosim import checkpoint, train
from model_sw.data import load_digits_split
from model_sw.models import CNN
from rtl.config import preset

CFG = preset("default")


@pytest.fixture(scope="module")
def data():
    return load_digits_split()


def run(tmp_path, name, **kw):
    out = str(tmp_path / name)
    rc = train.RunConfig(out=out, **{"steps": 3, "batch": 8, **kw})
    return train.run_train(rc, json_out=True), out


def results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_engine_gradients_match_autograd(data):
    """One BP step's weight gradients from the engine vs PyTorch autograd of the
    float model on the same batch (stated tolerance: max error <= 0.25 of the
    gradient's range; 8-bit operands with per-tensor power-of-two scales)."""
    torch.manual_seed(3)
    model = CNN()
    x, y = data.x_train[:16], data.y_train[:16]
    eng = train.Engine(CFG, "golden", "/tmp")
    p = train.StepPass(CFG, model, x, y)
    for op in p.forward_ops():
        eng.run(p.img, op, 0)
    p.put_logit_grad()
    for ops, host in p.backward_stages():
        for op in ops:
            eng.run(p.img, op, 0)
        host()
    got = p.weight_grads()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for name, layer in (("conv1", model.conv1), ("conv2", model.conv2), ("fc", model.fc)):
        ref = layer.weight.grad
        err = float((got[name] - ref).abs().max() / ref.abs().max())
        assert err <= 0.25, (name, err)
        assert got[name].shape == ref.shape


def test_bp_run_cycles_and_macs_from_layer_shapes(tmp_path):
    code, out = run(tmp_path, "bp", steps=2, batch=8)
    assert code == 0
    r = results(out)
    assert r["speedup_vs_bp"] == 1.0 and r["cycles"] == r["bp_equivalent_cycles"]
    # forward MACs per step from the layer shapes: Cout*Cin*k*k*Ho*Wo*B
    B = 8
    want = {"conv1": 8 * 1 * 9 * 64 * B, "conv2": 16 * 8 * 9 * 16 * B, "fc": 10 * 256 * B}
    for o in r["ops"]:
        if o["op"] in ("fwd", "bwd_weight"):
            assert o["macs"] == 2 * want[o["layer"]], o
    assert {(o["layer"], o["op"]) for o in r["ops"]} == {
        (l, k) for l in ("conv1", "conv2", "fc") for k in ("fwd", "bwd_weight", "bwd_data", "update")} - {
        ("conv1", "bwd_data")}
    # the update unit reads every int8 gradient and reads and writes every 16-bit weight once a step
    fan = {"conv1": (8, 9), "conv2": (16, 72), "fc": (10, 256)}
    for o in r["ops"]:
        if o["op"] == "update":
            c_out, k = fan[o["layer"]]
            assert o["dram_bytes"] == 2 * c_out * k * (1 + 2 + 2) and o["cycles"] > 0, o
    assert all(o["bit_exact"] for o in r["ops"])
    assert r["steps"] == 2 and len(r["curve"]) == 2 and 0.0 <= r["final_test_acc"] <= 1.0


def test_adagp_gp_steps_run_forward_and_predictor_only(tmp_path):
    code, out = run(tmp_path, "adagp", method="adagp", steps=6, warmup=1)
    assert code == 0
    r = results(out)
    log = r["steps_log"]
    gp = [s for s in log if s["phase"] == "gp"]
    bp = [s for s in log if s["phase"] != "gp"]
    assert gp and bp and r["gp_steps"] == len(gp)
    bp_fwd = {o["layer"]: o["cycles"] for o in bp[0]["ops"] if o["op"] == "fwd"}
    bp_engine = sum(o["cycles"] for o in bp[0]["ops"] if o["op"] != "pred_train")
    # BP steps also train the predictor (modelled rows, not simulated: bit_exact None)
    assert {o["layer"] for o in bp[0]["ops"] if o["op"] == "pred_train"} == {"conv1", "conv2", "fc"}
    assert all(o["bit_exact"] is None for o in bp[0]["ops"] if o["op"] == "pred_train")
    for s in gp:
        assert [o["op"] for o in s["ops"]] == ["fwd", "fwd", "fwd", "gp_predict_update"]
        assert {o["layer"]: o["cycles"] for o in s["ops"] if o["op"] == "fwd"} == bp_fwd   # same shapes
        assert s["ops"][-1]["cycles"] > 0
        assert s["skipped_cycles"] == bp_engine - sum(bp_fwd.values())
        # the array's prediction equals model_sw's predictor in PyTorch (stated tolerance)
        assert all(s["errors_vs_fp32"]["pred_" + n] <= train.GRAD_TOL for n in ("conv1", "conv2", "fc"))
    assert r["speedup_vs_bp"] > 1.0
    assert r["predictor_macs_software"] > 0


def test_gp_step_changes_the_weights_by_the_predicted_gradient(data):
    """A GP step on the golden backend: the 16-bit masters move by the predictor's
    output times lr and the scale, on the weights' grid (numpy, independently of the
    update unit's golden function)."""
    import numpy as np
    from cosim import train_hw as HW
    from model_sw import numerics as nx
    torch.manual_seed(0)
    model = CNN()
    eng = train.Engine(CFG, "golden", "/tmp")
    p = train.new_step_pass(CFG, model, data.x_train[:8], data.y_train[:8], None, 0)
    from model_sw.adagp_predictor import PredictorBank, PredictorConfig
    from model_sw import adagp_reorg as reorg
    mods = HW.layer_modules(model)
    bank = PredictorBank({n: reorg.fan_in(m) for n, m in mods.items()}, "shared", PredictorConfig(), quant=True)
    bank.set_out_channels({n: int(m.weight.shape[0]) for n, m in mods.items()})
    # calibrate the quantized predictor with one training step on random targets
    batch = {}
    for n, m in mods.items():
        act = torch.relu(torch.randn(8, m.weight.shape[0], 8, 8)) if n != "fc" else torch.randn(8, 10)
        batch[n] = (reorg.quantize_samples(reorg.layer_samples(m, act, bank.cfg.p, n)),
                    torch.randn(m.weight.shape[0], reorg.fan_in(m)))
    bank.train_step(batch)
    pred = next(iter(bank.nets.values())).int_params()
    masters = HW.masters_of(model)
    # scales that put the largest prediction (|pred| <= 128) a few grid steps from zero (g_shift = -4)
    scales = {n: pred["frac_out"] - masters[n][1] + 3 - 4 for n in masters}
    cap = HW.gp_capture(p, masters, pred, -3, scales)
    rows, out = eng.run_gp(cap, 0)
    for i, n in enumerate(("conv1", "conv2", "fc")):
        w16, fm = masters[n]
        g = np.asarray(out["pred"][n], dtype=np.float64) * 2.0 ** -pred["frac_out"]
        step = g * 2.0 ** (-3 + cap.layers[i].gp_scale_log2) * 2.0 ** fm      # on the weight grid
        moved = w16 - np.asarray(out["w16_" + n])
        assert np.abs(moved - step).max() <= 0.5 + 1e-9, n                    # one rounding
        assert np.abs(moved).sum() > 0, n
    assert [r["op"] for r in rows] == ["fwd", "fwd", "fwd", "gp_predict_update"]


def test_bp_update_matches_pytorch_sgd(data):
    """One BP step with the update unit (golden): the new weights against PyTorch's SGD
    step (w - lr * autograd gradient of the mean loss) within the gradient tolerance."""
    torch.manual_seed(3)
    model = CNN()
    ref = CNN()
    ref.load_state_dict(model.state_dict())
    x, y = data.x_train[:16], data.y_train[:16]
    eng = train.Engine(CFG, "golden", "/tmp")
    from cosim import train_hw as HW
    masters = HW.masters_of(model)
    p = train.new_step_pass(CFG, model, x, y, masters, -3)
    for op in p.forward_ops():
        eng.run(p.img, op, 0)
    p.put_logit_grad()
    rows = []
    for ops, _ in p.backward_stages():
        for op in ops:
            rows += eng.run(p.img, op, 0)
    assert [r["layer"] for r in rows if r["op"] == "update"] == ["fc", "conv2", "conv1"]
    HW.set_masters(model, p.updated_masters())
    F.cross_entropy(ref(x), y).backward()
    for name in ("conv1", "conv2", "fc"):
        got = getattr(model, name).weight.detach() - getattr(ref, name).weight.detach()   # -lr * g
        want = -0.125 * getattr(ref, name).weight.grad
        err = float((got - want).abs().max() / want.abs().max())
        assert err <= train.GRAD_TOL, (name, err)


def test_autoassist_engine_trains_on_kept_instances_only(tmp_path):
    code, out = run(tmp_path, "aa", method="autoassist", steps=4, batch=16)
    assert code == 0
    r = results(out)
    kept = 0
    for s in r["steps_log"]:
        assert 1 <= s["batch"] <= s["candidates"] == 16
        conv1 = next(o for o in s["ops"] if o["layer"] == "conv1" and o["op"] == "fwd")
        assert conv1["macs"] == 8 * 9 * 64 * s["batch"]
        kept += s["batch"]
    assert r["shrunk"] == 4 * 16 - kept
    if r["shrunk"]:
        assert r["cycles"] < r["bp_equivalent_cycles"]


def _weights(out):
    return checkpoint.load(out, {})["model"]


@pytest.mark.parametrize("method", ["bp", "adagp", "autoassist"])
def test_resume_after_interruption_is_bit_identical(tmp_path, method):
    kw = dict(method=method, steps=4, warmup=1, batch=8)
    assert train.run_train(train.RunConfig(out=str(tmp_path / "straight"), **kw), json_out=True) == 0
    part = str(tmp_path / "part")
    assert train.run_train(train.RunConfig(out=part, stop_after=2, **kw), json_out=True) == 3
    assert not os.path.exists(os.path.join(part, "results.json"))
    assert len(checkpoint.load(part, {})["records"]) == 2
    assert train.run_train(train.RunConfig(out=part, **kw), resume=True, json_out=True) == 0
    with open(tmp_path / "straight" / "results.json", "rb") as a, open(os.path.join(part, "results.json"), "rb") as b:
        assert a.read() == b.read()          # results.json bit for bit (timings live in timing.json)
    wa, wb = _weights(str(tmp_path / "straight")), _weights(part)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_seeded_run_is_reproducible_and_seed_matters(tmp_path):
    outs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert train.run_train(train.RunConfig(out=str(tmp_path / name), seed=seed, steps=2, batch=8),
                               json_out=True) == 0
        outs.append(str(tmp_path / name))
    ra, rb, rc = (results(o) for o in outs)
    with open(os.path.join(outs[0], "results.json"), "rb") as a, open(os.path.join(outs[1], "results.json"), "rb") as b:
        assert a.read() == b.read()
    assert ra["steps_log"] != rc["steps_log"]
    wa, wb = _weights(outs[0]), _weights(outs[1])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_other_runs(tmp_path):
    out = str(tmp_path / "r")
    assert train.run_train(train.RunConfig(out=out, steps=1, batch=8), json_out=True) == 0
    with pytest.raises(checkpoint.CheckpointError, match="seed"):
        checkpoint.load(out, train.RunConfig(out=out, seed=9, batch=8).identity())
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.load(str(tmp_path), {})


def test_compute_report_and_plots(tmp_path):
    code, out = run(tmp_path, "rep", steps=2)
    assert code == 0
    r = results(out)
    with open(os.path.join(out, "COMPUTE_REPORT.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(r["ops"]) == 11      # 8 engine operations, 3 weight updates
    pes = CFG.rows * CFG.cols
    assert sum(int(x["Total Cycles"]) for x in rows) == r["cycles"]
    for x, o in zip(rows, r["ops"]):
        assert (x["Layer"], x["Operation"]) == (o["layer"], o["op"])
        macs, cyc, steps = int(x["MACs"]), int(x["Total Cycles"]), int(x["Array Steps"])
        assert abs(float(x["Overall Util %"]) - 100 * macs / (cyc * pes)) < 0.01
        if o["op"] == "update":               # the update unit: no array steps, no MACs
            assert steps == 0 and macs == 0 and x["Mapping Efficiency %"] == ""
            continue
        assert abs(float(x["Mapping Efficiency %"]) - 100 * macs / (steps * pes)) < 0.01
        assert float(x["Mapping Efficiency %"]) <= 100.0
        assert x["Stall Cycles"] == ""           # the golden backend has no stall counter
    for png in ("cycles_per_phase.png", "cycles_per_layer.png", "accuracy.png"):
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_method_registry_accepts_a_new_method(tmp_path, monkeypatch):
    class Twice(train.BP):
        name = "twice"

    monkeypatch.setitem(train.METHODS, "twice", Twice)
    assert train.run_train(train.RunConfig(out=str(tmp_path / "t"), method="twice", steps=1, batch=4),
                           json_out=True) == 0
    monkeypatch.setitem(train.UNAVAILABLE, "later", "its hardware has not landed")
    train.register_method("later", Twice)
    try:
        assert "later" not in train.UNAVAILABLE and train.METHODS["later"] is Twice
    finally:
        train.METHODS.pop("later")


def test_all_methods_resume_and_summary(tmp_path):
    kw = dict(method="all", steps=2, warmup=0, batch=4)
    straight, part = str(tmp_path / "s"), str(tmp_path / "p")
    assert train.run_train(train.RunConfig(out=straight, **kw), json_out=True) == 0
    assert train.run_train(train.RunConfig(out=part, stop_after=1, **kw), json_out=True) == 3
    assert train.run_train(train.RunConfig(out=part, **kw), resume=True, json_out=True) == 0
    for m in ("bp", "adagp", "sparse", "autoassist"):
        with open(os.path.join(straight, m, "results.json"), "rb") as a, \
                open(os.path.join(part, m, "results.json"), "rb") as b:
            assert a.read() == b.read(), m
    summary = results(straight)["methods"]
    assert summary["bp"]["speedup_vs_bp"] == 1.0
    for m in ("adagp", "sparse", "autoassist"):
        r = results(os.path.join(straight, m))
        assert summary[m]["speedup_vs_bp"] == r["speedup_vs_bp"]
        assert r["bp_equivalent_cycles"] == results(os.path.join(straight, "bp"))["cycles"]


def test_sparse_trains_exactly_like_bp_in_fewer_cycles(tmp_path):
    """The sparse modes skip only work whose result is zero: losses and weights equal
    BP's bit for bit, and the mask-dependent cycle model gives fewer cycles."""
    kw = dict(steps=2, batch=32, seed=0)
    out = {m: str(tmp_path / m) for m in ("bp", "sparse")}
    for m in out:
        assert train.run_train(train.RunConfig(out=out[m], method=m, **kw), json_out=True) == 0
    bp, sp = results(out["bp"]), results(out["sparse"])
    assert [s["loss"] for s in bp["steps_log"]] == [s["loss"] for s in sp["steps_log"]]
    assert bp["final_test_acc"] == sp["final_test_acc"]
    assert sp["cycles"] < bp["cycles"]
    assert sp["speedup_vs_bp"] > 1.0
