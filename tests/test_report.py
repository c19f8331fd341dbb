"""Methods on the analytic model and the `cosim report` command."""
import json
import os
import subprocess
import sys

import pytest

from cosim import energy, layermodel as L, methods as M, networks as N, report
from model_sw.adagp_predictor import GradPredictor, PredictorConfig
from rtl.config import preset

CFG = preset("default")
ASM = M.Assumptions(batch=4)


def bp_by_hand(net, batch, density=None):
    """(forward cycles, backward cycles) straight from the layer model; with ``density`` the
    stated sparse rule: backward-weight x d if the output gradient is masked, backward-data
    x d if the input is a ReLU output."""
    fwd = bwd = 0
    for i, l in enumerate(net.layers):
        for gm in L.layer_gemms(l, batch, first=i == 0, last=i == len(net.layers) - 1,
                                input_grad=net.input_grad):
            c = L.gemm_cost(CFG, gm)["busy_cycles"]
            if gm.op == "fwd":
                fwd += c
                continue
            if density is not None and ((gm.op == "bwd_weight" and l.grad_masked)
                                        or (gm.op == "bwd_data" and l.in_relu)):
                c *= density
            bwd += c
    return fwd, bwd


@pytest.fixture(scope="module")
def lenet():
    return N.build("lenet5/cifar10")


def test_two_stage_pipeline_by_hand():
    assert M.two_stage([5, 5], [1, 1]) == 11          # predictor hidden except the last one
    assert M.two_stage([1, 1], [5, 5]) == 11          # predictor-bound: 1 + 5 + 5
    assert M.two_stage([3, 0, 4], [0, 0, 0]) == 7


def test_bp_step_is_the_sum_of_all_training_gemms(lenet):
    fwd, bwd = bp_by_hand(lenet, 4)
    c = M.step("bp", CFG, lenet, ASM)
    assert c["busy_cycles"] == fwd + bwd
    ops = [gm.op for gm in L.layer_gemms(lenet.layers[0], 4, first=True)]
    assert ops == ["fwd", "bwd_weight"]                 # the first CNN layer has no backward-data
    bert = N.build("bert_layer/seq128")
    assert "bwd_data" in [gm.op for gm in L.layer_gemms(bert.layers[0], 1, first=True, input_grad=True)]


def test_predictor_macs_match_model_sw(lenet):
    pc = PredictorConfig()
    for l in lenet.layers:
        p = M.predictor_cost(l, ASM, CFG)
        net = GradPredictor(l.fan_in, pc)
        assert p["fwd"]["predictor_macs"] == net.forward_macs(l.out_units, l.fan_in)
        assert p["train"]["predictor_macs"] == net.train_macs(l.out_units, l.fan_in)


def test_adagp_extremes(lenet):
    fwd, bwd = bp_by_hand(lenet, 4)
    preds = [M.predictor_cost(l, ASM, CFG) for l in lenet.layers]
    # all GP: forward with the predictors pipelined behind it, no backward at all
    gp = M.step("adagp", CFG, lenet, M.Assumptions(batch=4, gp_fraction=1.0))
    fl = [L.gemm_cost(CFG, next(g for g in L.layer_gemms(l, 4, first=i == 0, last=i == 4) if g.op == "fwd"))
          ["busy_cycles"] for i, l in enumerate(lenet.layers)]
    assert sum(fl) == fwd
    assert gp["busy_cycles"] == M.two_stage(fl, [p["fwd_cycles"] for p in preds])
    assert gp["busy_cycles"] >= fwd + preds[-1]["fwd_cycles"]
    assert gp["backward_cycles"] == 0
    assert gp["predictor_macs"] == sum(p["fwd"]["predictor_macs"] for p in preds)
    # all BP: the BP step plus the predictor's training (at least the last layer's is exposed)
    bp = M.step("adagp", CFG, lenet, M.Assumptions(batch=4, gp_fraction=0.0))
    assert bp["busy_cycles"] >= fwd + bwd + preds[0]["train_cycles"]
    assert bp["predictor_macs"] == sum(p["train"]["predictor_macs"] for p in preds)
    # in between: the GP-fraction-weighted mean
    g = 0.6726
    mid = M.step("adagp", CFG, lenet, M.Assumptions(batch=4, gp_fraction=g))
    assert mid["busy_cycles"] == pytest.approx((1 - g) * bp["busy_cycles"] + g * gp["busy_cycles"])
    assert mid["macs"] == pytest.approx((1 - g) * bp["macs"] + g * gp["macs"])


@pytest.mark.parametrize("key", ["lenet5/cifar10", "resnet18/cifar10", "mobilenetv2/cifar10"])
def test_sparse_backward_follows_the_stated_rule(key):
    net = N.build(key)
    fwd, bwd = bp_by_hand(net, 2)
    _, sbwd = bp_by_hand(net, 2, density=0.3)
    asm = M.Assumptions(batch=2, density=0.3)
    c = M.step("sparse", CFG, net, asm)
    assert c["busy_cycles"] == pytest.approx(fwd + sbwd)
    assert c["backward_cycles"] == pytest.approx(sbwd)
    dense = M.step("sparse", CFG, net, M.Assumptions(batch=2, density=1.0))
    assert dense["busy_cycles"] == fwd + bwd


def test_autoassist_trains_the_kept_fraction(lenet):
    bp = M.step("bp", CFG, lenet, ASM)
    aa = M.step("autoassist", CFG, lenet, M.Assumptions(batch=4, keep_rate=0.5))
    assert aa["busy_cycles"] == pytest.approx(0.5 * bp["busy_cycles"])      # the Assistant is hidden
    assert aa["macs"] == pytest.approx(0.5 * bp["macs"])
    assert aa["assistant_macs"] == 4 * 3 + 0.5 * 4 * 2 * 3
    e_bp, e_aa = energy.energy(bp, CFG), energy.energy(aa, CFG)
    assert e_aa["total_pj"] == pytest.approx(0.5 * e_bp["total_pj"] + e_aa["assistant"])


def test_all_combined_reduces_to_its_parts(lenet):
    a = M.Assumptions(batch=4, gp_fraction=0.5, density=1.0, keep_rate=1.0)
    assert M.step("all", CFG, lenet, a)["busy_cycles"] == M.step("adagp", CFG, lenet, a)["busy_cycles"]
    a = M.Assumptions(batch=4, gp_fraction=0.0, density=0.4, keep_rate=0.5)
    sp = M.step("sparse", CFG, lenet, a)
    al = M.step("all", CFG, lenet, a)
    assert al["busy_cycles"] >= 0.5 * sp["busy_cycles"]     # plus the exposed predictor training


def test_evaluate_fields_and_ratios(lenet):
    ev = M.evaluate(CFG, lenet, M.METHODS, ASM)
    res = {r["method"]: r for r in ev["results"]}
    assert list(res) == list(M.METHODS)
    bp = res["bp"]
    assert bp["speedup_vs_bp"] == 1 and bp["energy_vs_bp"] == 1
    for r in res.values():
        assert r["speedup_vs_bp"] == pytest.approx(bp["cycles"] / r["cycles"])
        assert r["energy_vs_bp"] == pytest.approx(r["energy_j"] / bp["energy_j"])
        assert r["dram_bytes"] > 0
    c = M.step("bp", CFG, lenet, ASM)
    assert bp["dram_bytes"] == c["rd_bytes"] + c["wr_bytes"] + c["mask_bits"] / 8


def test_bad_method_and_assumptions():
    with pytest.raises(M.MethodError, match="unknown method 'gpx'; choose from bp, adagp, sparse, autoassist, all"):
        M.check_methods(["bp", "gpx"])
    with pytest.raises(M.MethodError, match="density=1.5 must be in"):
        M.Assumptions(density=1.5).check()


# ---------------------------------------------------------------- the command
def run_cli(capsys, *args):
    code = report.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_table_files(tmp_path, capsys):
    out = str(tmp_path / "rep")
    code, text, _ = run_cli(capsys, "--networks", "lenet5,alexnet/imagenet", "--json", "--out", out)
    assert code == 0
    lines = [json.loads(x) for x in text.splitlines()]
    rows, summ = lines[:-1], lines[-1]
    assert len(rows) == 2 * len(M.METHODS)
    for r in rows:
        assert {"network", "method", "cycles", "speedup_vs_bp", "energy_j", "energy_vs_bp", "dram_bytes"} <= set(r)
    assert summ["anchors"]["adagp_speedup_avg"] == 1.47
    assert summ["measured"]["sparse_backward_speedup_range"][0] > 1
    doc = json.load(open(os.path.join(out, "results.json")))
    assert doc["results"] == rows and "alexnet/imagenet" in doc["layers_bp"]
    for f in ("speedup.png", "energy.png", "layers_lenet5_cifar10.png", "report.csv"):
        assert os.path.getsize(os.path.join(out, f)) > 100
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
    code, text, _ = run_cli(capsys, "--networks", "lenet5", "--out", out, "--no-plots")
    assert code == 0 and "paper: 1.47x average, energy -34%" in text and "lenet5" in text


def test_paper_set_maps_on_every_preset_but_small():
    for name in ("default", "large"):
        res, _ = report.run(N.paper_set(), preset(name), ["bp"], M.Assumptions(batch=2))
        assert len(res) == 22 and all(r["cycles"] > 0 for r in res)


@pytest.mark.parametrize("args,needle", [
    (["--networks", "vgg17"], "unknown network 'vgg17'; choose one of paper, vgg11"),
    (["--preset", "huge"], "unknown preset 'huge'; choose one of small, default"),
    (["--methods", "bp,magic"], "unknown method 'magic'; choose from bp, adagp"),
    (["--gp-fraction", "2"], "gp_fraction=2.0 must be in [0, 1]"),
    (["--energy-table", "/nonexistent.json"], "cannot be read"),
])
def test_cli_bad_input(tmp_path, capsys, args, needle):
    out = str(tmp_path / "o")
    code, _, err = run_cli(capsys, "--networks", "lenet5", *args, "--out", out)
    assert code == 2 and err.startswith("error: ") and needle in err
    assert not os.path.exists(os.path.join(out, "results.json"))


def test_cli_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "--networks", "lenet5", "--out", str(blocker / "sub"))
    assert code == 2 and "cannot be created" in err


def test_python_dash_m_cosim_report(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-m", "cosim", "report", "--networks", "lenet5", "--methods", "bp,adagp",
                        "--json", "--no-plots", "--out", str(tmp_path)], cwd=root, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in p.stdout.splitlines()]
    assert [r.get("method") for r in rows[:2]] == ["bp", "adagp"]
