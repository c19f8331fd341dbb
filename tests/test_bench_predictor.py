"""`python -m cosim bench predictor`: the rows it prints and the overlap goal (a GP step
costs at most 1.10x the forward alone), from the models (fast) and, marked slow, the
whole bench with the digits CNN simulated on Verilator."""
import json

import pytest

from cosim import accel_sim as AS
from cosim import bench_predictor as BP
from cosim import predictor_model as PM
from rtl.config import preset

CFG = preset("default")
KEYS = {"layer", "forward_cycles", "predictor_cycles", "gp_step_cycles", "bp_step_cycles", "bit_exact"}


def test_digits_rows_from_the_models_meet_the_overlap_goal():
    cap = BP.capture_digits(steps=6, batch=32)
    run = AS.gp_program(CFG, cap, steps=1)
    specs = PM.specs_from_run(run)
    rows, total = BP.layer_rows(CFG, specs, [Ld["geom"] for Ld in run.layers], "digits-cnn")
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "fc"]
    assert total["forward_cycles"] == sum(r["forward_cycles"] for r in rows)
    assert total["gp_step_cycles"] <= 1.10 * total["forward_cycles"]
    # the isolated step pays the last layer's predictor as a tail; back to back it hides
    assert total["gp_step_isolated_cycles"] > total["gp_step_cycles"]
    assert total["bp_step_cycles"] > total["gp_step_cycles"] + total["backward_cycles"] // 2
    for r in rows:
        assert r["predictor_cycles"] > r["array_cycles"] > 0


def test_larger_network_rows_are_analytic_and_meet_the_goal():
    big, specs, geoms = BP.larger_net(CFG)
    rows, total = BP.layer_rows(big, specs, geoms, "cifar")
    assert len(rows) == 4 and total["gp_step_cycles"] <= 1.10 * total["forward_cycles"]
    assert all(r["forward_cycles"] > 0 and r["bp_step_cycles"] > r["forward_cycles"] for r in rows)


@pytest.mark.slow
def test_bench_cli_json(capsys):
    from cosim.__main__ import main
    assert main(["bench", "predictor", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert all(KEYS <= set(r) for r in rows)
    sim = [r for r in rows if r["simulated"]]
    assert sim and all(r["bit_exact"] and r["cycles_match_model"] for r in sim)
    step = next(r for r in sim if r["layer"] == "step")
    assert step["gp_step_cycles"] == step["gp_step_cycles_rtl"] <= 1.10 * step["forward_cycles"]
