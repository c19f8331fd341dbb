"""Phase controller: schedules, the adaptive rule and its log."""
import pytest

from model_sw.adagp_phases import PhaseConfig, PhaseController


def _run(ctrl, steps, cos_fn=lambda step: 0.0):
    phases = []
    for _ in range(steps):
        ph = ctrl.phase
        phases.append(ph)
        if ph != "gp":
            c = cos_fn(ctrl.step)
            ctrl.record_cos({"a": c, "b": c + 0.5})
        ctrl.advance()
    return phases


def test_bp_schedule_never_predicts():
    ph = _run(PhaseController(PhaseConfig(schedule="bp", warmup=0)), 50)
    assert set(ph) == {"bp"}


def test_fixed_schedule_pattern():
    ph = _run(PhaseController(PhaseConfig(schedule="fixed", warmup=3, fixed_bp=1, fixed_gp=3)), 11)
    assert ph == ["warmup"] * 3 + ["bp", "gp", "gp", "gp"] * 2


def test_always_gp_after_warmup():
    ph = _run(PhaseController(PhaseConfig(schedule="always", warmup=4)), 20)
    assert ph == ["warmup"] * 4 + ["gp"] * 16


def test_adaptive_grows_with_good_predictions_and_shrinks_with_bad():
    cfg = PhaseConfig(schedule="adaptive", warmup=2, n_bp=2, n_gp0=1, n_gp_max=8, theta_up=0.5, theta_down=0.2,
                      quality="min")
    ctrl = PhaseController(cfg)
    good = _run(ctrl, 2 + (2 + 2) + (2 + 4) + (2 + 8) + (2 + 8), lambda s: 0.9)
    assert good[:4] == ["warmup", "warmup", "bp", "bp"]
    gp_runs, cur = [], 0
    for p in good[2:] + ["bp"]:
        if p == "gp":
            cur += 1
        elif cur:
            gp_runs.append(cur)
            cur = 0
    assert gp_runs == [2, 4, 8, 8]  # doubles up to the cap
    decisions = [e["decision"] for e in ctrl.log if "decision" in e]
    assert decisions == ["grow"] * 4
    # now predictions turn bad (q = min over layers = 0.0): the GP phases halve down to none
    _run(ctrl, 2 + 4 + 2 + 2 + 2 + 1 + 2, lambda s: 0.0)
    assert [e["decision"] for e in ctrl.log if "decision" in e][4:] == ["shrink"] * 4
    assert ctrl.n_gp == 0
    assert _run(ctrl, 10, lambda s: 0.0) == ["bp"] * 10


def test_adaptive_keeps_in_between_and_logs_every_step():
    cfg = PhaseConfig(schedule="adaptive", warmup=0, n_bp=1, n_gp0=3, theta_up=0.9, theta_down=0.1,
                      quality="min")
    ctrl = PhaseController(cfg)
    ph = _run(ctrl, 12, lambda s: 0.5)
    assert ph == (["bp"] + ["gp"] * 3) * 3
    assert len(ctrl.log) == 12 and [e["step"] for e in ctrl.log] == list(range(12))
    assert all(e["decision"] == "keep" and e["q"] == pytest.approx(0.5) for e in ctrl.log if "decision" in e)


def test_quality_min_vs_mean():
    # layer b is 0.5 better than layer a: with "mean" q = a + 0.25
    mk = lambda qual: PhaseController(PhaseConfig(schedule="adaptive", warmup=0, n_bp=1, n_gp0=1,
                                                  theta_up=0.4, theta_down=0.0, quality=qual))
    c_min, c_mean = mk("min"), mk("mean")
    _run(c_min, 1, lambda s: 0.2)
    _run(c_mean, 1, lambda s: 0.2)
    assert c_min.log[0]["decision"] == "keep" and c_mean.log[0]["decision"] == "grow"


def test_cos_during_gp_is_an_error_and_bad_configs():
    ctrl = PhaseController(PhaseConfig(schedule="always", warmup=0))
    assert ctrl.phase == "gp"
    with pytest.raises(RuntimeError, match="GP step"):
        ctrl.record_cos({"a": 1.0})
    with pytest.raises(ValueError, match="unknown schedule"):
        PhaseConfig(schedule="sometimes")
    with pytest.raises(ValueError, match="n_bp"):
        PhaseConfig(n_bp=0)
    with pytest.raises(ValueError, match="theta_down"):
        PhaseConfig(theta_up=0.1, theta_down=0.5)
