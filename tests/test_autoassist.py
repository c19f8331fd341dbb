"""AutoAssist: shrink rule, labels, Assistant, integer logit, async accounting, failures."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from model_sw import numerics
from model_sw.autoassist import AAConfig, main, run, summarize
from model_sw.autoassist_assistant import (Assistant, ConstantAssistant, LossEMA, LossFeatures, PixelFeatures,
                                           assistant_logit_int, check_base_prob, keep_probability,
                                           logit_int_error_bound, quantize_assistant, quantize_features,
                                           shrink_keep)
from model_sw.autoassist_async import AccountingError, Feeder
from model_sw.data import load_digits_split

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return load_digits_split()


# -- shrink rule -------------------------------------------------------------

@pytest.mark.parametrize("base_prob", [0.0, 0.3, 0.75, 1.0])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.9])
def test_shrink_keep_rate_binomial(base_prob, p):
    n = 200_000
    rng = np.random.default_rng(int(base_prob * 100 + p * 10))
    keep = shrink_keep(np.full(n, p), rng.random(n), base_prob)
    expect = base_prob + (1 - base_prob) * p
    assert math.isclose(float(keep_probability(p, base_prob)), expect)
    sd = math.sqrt(max(expect * (1 - expect), 1e-12) / n)
    assert abs(keep.mean() - expect) <= 5 * sd + 1e-12


def test_shrink_rule_per_instance_p():
    rng = np.random.default_rng(1)
    n = 100_000
    p = rng.random(n)
    keep = shrink_keep(p, rng.random(n), 0.3)
    for lo in (0.0, 0.5):  # high-p instances are kept more often, as the rule says
        m = (p >= lo) & (p < lo + 0.5)
        expect = 0.3 + 0.7 * p[m].mean()
        assert abs(keep[m].mean() - expect) < 5 * math.sqrt(expect * (1 - expect) / m.sum())


@pytest.mark.parametrize("bad", [-0.01, 1.5, float("nan"), float("inf"), "0.3", None, True])
def test_bad_base_prob(bad):
    with pytest.raises(ValueError, match="base_prob"):
        check_base_prob(bad)
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        shrink_keep([0.5], [0.5], bad)


def test_bad_base_prob_config_and_feeder():
    with pytest.raises(ValueError, match="base_prob=1.2"):
        AAConfig(base_prob=1.2)
    with pytest.raises(ValueError, match="base_prob=-1"):
        Feeder(ConstantAssistant(0.5), LossFeatures(4), np.zeros(4, int), 2, base_prob=-1, threaded=False)
    with pytest.raises(SystemExit, match="base_prob=2.0"):
        main(["--base-prob", "2", "--seeds", "1", "--out", "/tmp/unused"])


# -- labels and the Assistant -----------------------------------------------

def test_labels_vs_ema():
    ema = LossEMA(0.75)
    lab = ema.update([1.0, 3.0])  # first batch sets the mean: 2
    assert ema.value == 2.0 and lab.tolist() == [False, True]
    lab = ema.update([0.0, 1.0, 5.0])  # mean 2 -> 0.75 * 2 + 0.25 * 2 = 2
    assert ema.value == 2.0 and lab.tolist() == [False, False, True]
    lab = ema.update([6.0, 6.0])  # 0.75 * 2 + 0.25 * 6 = 3
    assert ema.value == 3.0 and lab.tolist() == [True, True]
    lab = ema.update([2.9, 3.0, 3.1])  # mean 3: EMA stays 3; strictly greater is "high"
    assert lab.tolist() == [False, False, True]
    assert ema.update([]).size == 0 and ema.value == 3.0
    with pytest.raises(ValueError):
        LossEMA(1.0)


def test_assistant_learns_separable_rule():
    rng = np.random.default_rng(0)
    a = Assistant(3, 10, lr=0.5, l2=1e-3)
    for _ in range(400):
        f = rng.normal(size=(32, 3))
        y = rng.integers(0, 10, 32)
        a.train_step(f, y, f[:, 0] > 0)
    f = rng.normal(size=(1000, 3))
    y = rng.integers(0, 10, 1000)
    acc = ((a.prob(f, y) > 0.5) == (f[:, 0] > 0)).mean()
    assert acc > 0.95 and a.w[0] > 0


def test_loss_features_update():
    lf = LossFeatures(5)
    assert lf([0, 1]).tolist() == [[0, 0, 1], [0, 0, 1]]
    lf.update([1], [20.0], [-2.0])
    assert lf([1]).tolist() == [[8.0, -0.5, 0.0]]


# -- integer Assistant logit ------------------------------------------------

def _trained_assistant(n_feat, seed=0):
    rng = np.random.default_rng(seed)
    a = Assistant(n_feat, 10)
    a.w = rng.normal(scale=0.3, size=n_feat)
    a.u = rng.normal(scale=1.0, size=10)
    return a


@pytest.mark.parametrize("kind", ["pixels", "loss"])
def test_int_logit_vs_float_and_python_loop(data, kind):
    n = 64
    if kind == "pixels":
        f = PixelFeatures(data.x_train.numpy())(np.arange(n))
    else:
        rng = np.random.default_rng(3)
        lf = LossFeatures(n)
        lf.update(np.arange(n), rng.exponential(1.0, n), rng.normal(0, 4, n))
        f = lf(np.arange(n))
    y = data.y_train.numpy()[:n]
    a = _trained_assistant(f.shape[1])
    x_int, fx = quantize_features(f)
    if kind == "pixels":
        assert fx == 6 and np.array_equal(x_int * 2.0 ** -6, f)  # k/16 pixels are exact in int8 at 2**-6
    ia = quantize_assistant(a, fx)
    z = assistant_logit_int(x_int, ia.w_int, ia.u_int, y)
    # exact vs an explicit python-int loop
    for i in range(n):
        acc = int(ia.u_int[int(y[i])])
        for k in range(f.shape[1]):
            acc += int(x_int[i, k]) * int(ia.w_int[k])
        assert int(z[i]) == acc
        assert -(1 << 31) <= acc < (1 << 31)
    # vs float64 reference within the documented bound
    ref = f.astype(np.float64) @ a.w + a.u[y]
    err = np.abs(z * 2.0 ** -ia.acc_frac - ref)
    bound = logit_int_error_bound(f, ia, a)
    assert np.all(err <= bound + 1e-12)
    assert err.max() < 0.05  # and the bound is small in absolute terms for these sizes


def test_int_logit_rejects_bad_operands():
    with pytest.raises(numerics.NumericsError):
        assistant_logit_int(np.array([[200]]), np.array([1]), np.array([0]), [0])
    with pytest.raises(numerics.NumericsError):
        assistant_logit_int(np.array([[1]]), np.array([-129]), np.array([0]), [0])
    with pytest.raises(ValueError, match="shapes"):
        assistant_logit_int(np.ones((2, 3), int), np.ones(4, int), np.zeros(10, int), [0, 0])
    with pytest.raises(ValueError, match="class biases"):
        assistant_logit_int(np.ones((1, 3), int), np.ones(3, int), np.zeros(10, int), [10])


# -- async accounting -------------------------------------------------------

def _drive(feeder, n, epochs, seed=0, delay=0.0):
    """A fake Boss: takes batches, 'trains' (records), reports random losses."""
    rng = np.random.default_rng(seed)
    seen = []
    for _ in range(epochs):
        feeder.start_epoch(rng.permutation(n))
        trained = []
        while (b := feeder.next_batch()) is not None:
            idx, kind = b
            assert kind in ("filtered", "plain") and 1 <= len(idx) <= feeder.batch
            trained.extend(idx.tolist())
            feeder.report(idx, rng.exponential(1.0, len(idx)), rng.normal(size=len(idx)))
            if delay:
                time.sleep(delay)
        c = feeder.end_epoch()
        assert len(trained) == len(set(trained)) == c["trained_filtered"] + c["trained_plain"]
        assert c["trained_filtered"] + c["trained_plain"] + c["shrunk"] == n
        seen.append((trained, c))
    return seen


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("fname", ["pixels", "loss"])
def test_async_accounting_adds_up(data, threaded, fname):
    n = int(data.x_train.shape[0])
    feats = PixelFeatures(data.x_train.numpy()) if fname == "pixels" else LossFeatures(n)
    fd = Feeder(Assistant(feats.n, lr=0.1), feats, data.y_train.numpy(), 32, 0.3, threaded=threaded, seed=1)
    try:
        seen = _drive(fd, n, 4, delay=0.0005 if threaded else 0.0)
    finally:
        fd.close()
    assert fd.alive and fd.error is None
    tot = sum(c["shrunk"] for _, c in seen)
    assert 0 < tot < 4 * n
    # keep rate is between base_prob and 1 (the Assistant starts at p = 0.5)
    keep = 1 - tot / (4 * n)
    assert 0.3 <= keep <= 1.0
    assert sum(c["trained_filtered"] for _, c in seen) > 0
    assert len(fd.quality) > 0 and fd.assistant.updates > 0


def test_boss_never_blocks_takes_plain_batch(data):
    """A worker that never runs (threaded=False, no pump): only plain batches, nothing lost."""
    y = data.y_train.numpy()[:100]
    fd = Feeder(ConstantAssistant(0.0), LossFeatures(100), y, 32, 0.3, threaded=False)
    fd.alive = False  # pump disabled: the Boss must not wait for it
    fd.start_epoch(np.arange(100))
    kinds = []
    while (b := fd.next_batch()) is not None:
        kinds.append(b[1])
    c = fd.end_epoch()
    assert set(kinds) == {"plain"} and c["trained_plain"] == 100 and c["shrunk"] == 0


def test_empty_batch_after_shrinking_forces_one(data):
    """base_prob 0 and p 0: every chunk would be empty; one instance per chunk is kept (forced)."""
    n = 100
    fd = Feeder(ConstantAssistant(0.0), LossFeatures(n), data.y_train.numpy()[:n], 32, 0.0, threaded=False)
    (trained, c), = _drive(fd, n, 1)
    assert c["forced_keep"] == math.ceil(n / 32) == len(trained) == c["trained_filtered"]
    assert c["shrunk"] == n - len(trained)


def test_steal_inflight_and_buffer(data):
    """Epoch tail: the Boss takes the partial buffer and steals an in-flight chunk; counts add up."""
    n = 40
    fd = Feeder(ConstantAssistant(1.0), LossFeatures(n), data.y_train.numpy()[:n], 32, 0.3, threaded=False)
    fd.alive = False  # drive the worker by hand
    fd.start_epoch(np.arange(n))
    # worker decides chunk 0..31 (all kept, p = 1): a full batch
    fd.alive = True
    assert fd.work_once()
    # worker takes chunk 32..39 but "is still deciding" when the Boss arrives
    with fd.cv:
        chunk = np.array([fd.cursor.popleft() for _ in range(len(fd.cursor))])
        fd._token += 1
        fd.inflight = (fd._token, chunk)
    fd.alive = False
    b1 = fd.next_batch()
    b2 = fd.next_batch()
    assert b1[1] == "filtered" and len(b1[0]) == 32
    assert b2[1] == "plain" and b2[0].tolist() == list(range(32, 40))
    assert fd.next_batch() is None
    c = fd.end_epoch()
    assert c["trained_filtered"] == 32 and c["trained_plain"] == 8 and c["shrunk"] == 0


def test_accounting_error_detected(data):
    fd = Feeder(ConstantAssistant(1.0), LossFeatures(10), data.y_train.numpy()[:10], 4, 0.3, threaded=False)
    fd.start_epoch(np.arange(10))
    fd.next_batch()
    with pytest.raises(AccountingError):
        fd.end_epoch()
    with pytest.raises(AccountingError):
        fd.start_epoch(np.arange(10))


@pytest.mark.parametrize("threaded", [False, True])
def test_worker_death_boss_goes_on(data, threaded, caplog):
    n = int(data.x_train.shape[0])
    feats = LossFeatures(n)
    fd = Feeder(Assistant(feats.n), feats, data.y_train.numpy(), 32, 0.3, threaded=threaded, fail_after=5)
    try:
        with caplog.at_level("WARNING", logger="model_sw.autoassist"):
            seen = _drive(fd, n, 4, delay=0.0005 if threaded else 0.0)
    finally:
        fd.close()
    assert not fd.alive and "injected Assistant failure" in fd.error
    if not threaded:
        assert fd.died_at_epoch == 0
    assert fd.died_at_epoch is not None and fd.died_at_epoch < 3
    assert any("worker died" in r.getMessage() for r in caplog.records)
    # after the death every instance is trained on plain batches; nothing lost (_drive checks the sums)
    for trained, c in seen[fd.died_at_epoch + 1:]:
        assert c["trained_plain"] == n and c["shrunk"] == 0


def test_run_worker_death_reported(data):
    cfg = AAConfig(passes=2, fail_after=3, threaded=True)
    r = run(data, "autoassist", 0, cfg)
    assert r["worker_error"] and "injected" in r["worker_error"]
    assert r["events"] and r["events"][0]["event"] == "worker_died"
    assert r["trained"] + r["shrunk"] == 2 * r["n_train"]
    s = summarize("autoassist", [r], 50.0)
    assert s["worker_errors"] == [r["worker_error"]]


# -- whole runs -------------------------------------------------------------

def test_short_runs_and_macs(data):
    cfg = AAConfig(passes=2, threaded=False)
    rs = run(data, "sgd", 0, cfg)
    ra = run(data, "autoassist", 0, cfg)
    rg = run(data, "autoassist+adagp", 0, cfg)
    # CNN: forward MACs per instance 4608 + 18432 + 2560; backward = all + all but conv1
    assert rs["backward_macs_per_instance"] == (4608 + 18432 + 2560) + (18432 + 2560)
    assert rs["trained"] == rs["bp_trained"] == 2 * rs["n_train"]
    assert ra["trained"] + ra["shrunk"] == 2 * ra["n_train"] and ra["trained"] == ra["bp_trained"]
    assert ra["curve"][-1]["backward_macs"] == ra["bp_trained"] * ra["backward_macs_per_instance"]
    assert rg["trained"] + rg["shrunk"] == 2 * rg["n_train"] and rg["bp_trained"] <= rg["trained"]
    assert all(0.0 <= r["acc"] <= 1.0 for r in (rs, ra, rg))  # 2 passes: accuracy is not the point here
    s = summarize("sgd", [rs], 30.0)
    assert s["epochs_to_target"] is not None and s["backward_macs_to_target"] > 0


def test_sync_run_is_deterministic(data):
    cfg = AAConfig(passes=1, threaded=False)
    a, b = run(data, "autoassist", 1, cfg), run(data, "autoassist", 1, cfg)
    assert a["acc"] == b["acc"] and a["shrunk"] == b["shrunk"]


def test_cli_writes_json(tmp_path, capsys):
    import json
    assert main(["--seeds", "1", "--passes", "1", "--methods", "sgd,autoassist", "--json", "--sync",
                 "--out", str(tmp_path)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["method"] for x in lines] == ["sgd", "autoassist"]
    for x in lines:
        for k in ("method", "epochs_to_target", "backward_macs_to_target", "final_acc_mean", "final_acc_std"):
            assert k in x
    res = json.loads((tmp_path / "results.json").read_text())
    assert [s["method"] for s in res["summaries"]] == ["sgd", "autoassist"]
    assert not list(tmp_path.glob(".tmp-*"))
