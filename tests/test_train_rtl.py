"""Co-simulated training on the RTL: a short Verilator run equals the golden run
bit for bit (weights, losses, accuracy, counters), and an injected fault (one bit
flipped in the memory model, tb/harness.sv) stops the run with the mismatch
report and a waveform of the failing operation."""
import csv
import json
import os

import pytest
import torch

from cosim import checkpoint, train

KW = dict(preset="small", batch=4, steps=3, method="adagp", warmup=0)   # steps 0, 1 BP; 2 GP


def load(out, name="results.json"):
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def test_verilator_training_equals_golden_bit_for_bit(tmp_path):
    outs = {}
    for backend in ("golden", "verilator"):
        outs[backend] = str(tmp_path / backend)
        assert train.run_train(train.RunConfig(backend=backend, out=outs[backend], **KW), json_out=True) == 0
    g, v = load(outs["golden"]), load(outs["verilator"])
    assert [s["phase"] for s in v["steps_log"]] == ["bp", "bp", "gp"]
    for key in ("curve", "cycles", "bp_equivalent_cycles", "max_errors_vs_fp32"):
        assert g[key] == v[key], key
    for a, b in zip(g["steps_log"], v["steps_log"]):
        assert a["loss"] == b["loss"] and a["phase"] == b["phase"]
        for oa, ob in zip(a["ops"], b["ops"]):
            # the golden backend's exact counters (MACs, array steps, external bytes) equal the RTL's
            for k in ("cycles", "model_cycles", "macs", "compute_cycles", "dram_bytes"):
                assert oa[k] == ob[k], (oa["layer"], oa["op"], k)
            if a["phase"] != "gp" and oa["op"] in ("fwd", "bwd_weight", "bwd_data"):
                assert ob["stall_cycles"] is not None and oa["stall_cycles"] is None
    gp = v["steps_log"][2]["ops"]
    assert [o["op"] for o in gp] == ["fwd", "fwd", "fwd", "gp_predict_update"]
    assert sum(o["op"] == "update" for o in v["steps_log"][0]["ops"]) == 3
    wg = checkpoint.load(outs["golden"], {})["model"]
    wv = checkpoint.load(outs["verilator"], {})["model"]
    assert all(torch.equal(wg[k], wv[k]) for k in wg)
    with open(os.path.join(outs["verilator"], "COMPUTE_REPORT.csv")) as f:
        rows = list(csv.DictReader(f))
    # engine operations run alone have the RTL's stall counter (a GP step's forward runs in one
    # Accelerator run with the predictor side: its rows have the run's checked totals only)
    assert all(r["Stall Cycles"] != "" and r["Compute Util %"] != "" for r in rows
               if r["Operation"] in ("bwd_weight", "bwd_data"))
    assert g["energy_j"] is None and v["energy_j"] > 0        # energy needs the RTL's SRAM counters
    timing = load(outs["verilator"], "timing.json")
    assert 0 < timing["inside_simulator_s"] < timing["wall_s"]


def test_injected_fault_stops_the_run_with_report_and_waveform(tmp_path, capsys):
    out = str(tmp_path / "fault")
    rc = train.RunConfig(backend="icarus", out=out, inject_fault="0:conv2:fwd:3",
                         **{**KW, "steps": 2, "method": "bp"})
    assert train.run_train(rc) == 1
    err = capsys.readouterr().err
    rep = load(out, "failure.json")
    assert (rep["step"], rep["layer"], rep["op"], rep["check"]) == (0, "conv2", "fwd", "bit_exact")
    assert rep["slots_differ"] == 1 and rep["first_index"].startswith("h2[")
    assert rep["got"] == rep["expected"] ^ 1                    # bit 0 flipped
    assert "CHECK FAILED at step 0, layer conv2, operation fwd" in err and rep["first_index"] in err
    assert rep["waves"] and os.path.getsize(rep["waves"]) > 1000
    assert not os.path.exists(os.path.join(out, "results.json"))


@pytest.mark.slow
def test_injected_fault_on_verilator_leaves_a_vcd(tmp_path):
    """The same on Verilator (its waveform build takes about 100 s the first time: slow)."""
    out = str(tmp_path / "fault")
    rc = train.RunConfig(backend="verilator", out=out, inject_fault="1:fc:bwd_weight:7",
                         **{**KW, "steps": 2, "method": "bp"})
    assert train.run_train(rc) == 1
    rep = load(out, "failure.json")
    assert (rep["step"], rep["layer"], rep["op"], rep["first_index"]) == (1, "fc", "bwd_weight", "dw_fc[0, 0, 1, 3]")
    assert rep["got"] == rep["expected"] ^ 1
    assert rep["waves"].endswith(".vcd") and os.path.getsize(rep["waves"]) > 1000
    with open(rep["waves"]) as f:
        text = f.read()
    assert text.startswith("$version") and "$enddefinitions" in text and "\n#" in text   # header + value changes
