"""The `python -m cosim` command line: subcommand dispatch and bad input (a clear
message naming the bad value and the choices, exit status 2, no results file)."""
import os
import sys
import types

import pytest

from cosim import __main__ as cli
from cosim import train


def main_err(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flag,value,choices", [
    ("--model", "resnet", "cnn"),
    ("--dataset", "mnist", "digits"),
    ("--method", "sgd", "bp, adagp, sparse, autoassist, all"),
    ("--backend", "vcs", "golden, verilator, icarus"),
    ("--preset", "huge", "small, default, large"),
])
def test_unknown_choice_lists_the_choices(tmp_path, capsys, flag, value, choices):
    out = tmp_path / "o"
    code, err = main_err(capsys, "train", flag, value, "--out", str(out))
    assert code == 2
    assert repr(value) in err and choices in err
    assert not (out / "results.json").exists()


def test_unavailable_method_says_why(tmp_path, capsys, monkeypatch):
    from cosim import train
    monkeypatch.setitem(train.UNAVAILABLE, "sparse", "its hardware has not landed")
    code, err = main_err(capsys, "train", "--method", "sparse", "--out", str(tmp_path))
    assert code == 2 and "not available" in err and "has not landed" in err


def test_preset_too_small_names_layer_and_limit(tmp_path, capsys):
    out = tmp_path / "o"
    code, err = main_err(capsys, "train", "--preset", "small", "--batch", "32", "--out", str(out))
    assert code == 2
    assert "layer fc" in err and "65536" in err and "preset 'small'" in err
    assert not (out / "results.json").exists() and not (out / "checkpoint.pt").exists()


def test_unwritable_output_folder_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, err = main_err(capsys, "train", "--out", str(blocker / "sub"))
    assert code == 2 and "cannot be written" in err and str(blocker / "sub") in err


def test_missing_simulator_says_how_to_install(tmp_path, capsys, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    code, err = main_err(capsys, "train", "--backend", "icarus", "--out", str(tmp_path))
    assert code == 2 and "iverilog" in err and "apt-get install iverilog" in err and "make setup" in err


@pytest.mark.parametrize("spec,msg", [
    ("x:fc:fwd", "integers"), ("0:fc", "STEP:LAYER:OP"), ("0:conv9:fwd", "conv9"),
    ("0:fc:sideways", "sideways"), ("0:conv1:bwd_data", "no backward-data"),
])
def test_bad_fault_spec(tmp_path, capsys, spec, msg):
    code, err = main_err(capsys, "train", "--backend", "icarus", "--inject-fault", spec, "--out", str(tmp_path))
    assert code == 2 and msg in err


def test_fault_injection_needs_an_rtl_backend(tmp_path, capsys):
    code, err = main_err(capsys, "train", "--inject-fault", "0:fc:fwd", "--out", str(tmp_path))
    assert code == 2 and "RTL" in err


@pytest.mark.parametrize("flag,value", [("--steps", "0"), ("--batch", "0"), ("--lr", "-1"), ("--lr", "0.1"),
                                        ("--base-prob", "1.5"), ("--warmup", "-2")])
def test_bad_numbers(tmp_path, capsys, flag, value):
    code, err = main_err(capsys, "train", flag, value, "--out", str(tmp_path))
    assert code == 2 and value in err


def test_resume_without_checkpoint(tmp_path, capsys):
    code, err = main_err(capsys, "train", "--resume", "--out", str(tmp_path), "--steps", "1", "--batch", "4")
    assert code == 2 and "no checkpoint" in err


def test_report_is_dispatched_to_cosim_report(monkeypatch):
    seen = {}
    fake = types.ModuleType("cosim.report")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 7
    monkeypatch.setitem(sys.modules, "cosim.report", fake)
    import cosim
    monkeypatch.setattr(cosim, "report", fake, raising=False)
    assert cli.main(["report", "--networks", "paper", "--json"]) == 7
    assert seen["argv"] == ["--networks", "paper", "--json"]


def test_bench_is_a_table_of_named_benches(monkeypatch):
    assert {"gemm", "harness"} <= set(cli.BENCHES)
    seen = []
    monkeypatch.setitem(cli.BENCHES, "toy", (lambda p: p.add_argument("--n", type=int, default=1),
                                             lambda args: seen.append(args.n) or 0))
    assert cli.main(["bench", "toy", "--n", "5"]) == 0 and seen == [5]


def test_run_defaults_are_the_main_job(monkeypatch):
    got = {}
    monkeypatch.setattr(train, "run_train", lambda rc, **kw: got.update(rc=rc, **kw) or 0)
    assert cli.main(["run"]) == 0
    rc = got["rc"]
    assert (rc.method, rc.backend, rc.preset, rc.batch, rc.model, rc.dataset) == \
        ("all", "verilator", "default", 32, "cnn", "digits")
    assert cli.main(["train", "--steps", "3", "--method", "adagp", "--resume"]) == 0
    assert got["rc"].steps == 3 and got["rc"].method == "adagp" and got["resume"] is True


def test_train_writes_every_output(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["train", "--steps", "1", "--batch", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for f in ("results.json", "COMPUTE_REPORT.csv", "timing.json", "checkpoint.pt", "cycles_per_phase.png",
              "cycles_per_layer.png", "accuracy.png"):
        assert os.path.exists(out / f), f
    assert "speed-up over BP" in text and "test accuracy" in text and "bit_exact" in text
