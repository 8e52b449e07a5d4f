"""run_all's decisions (skip / resume / run) on fixture directories, and its loop, without training."""

from __future__ import annotations

import importlib.util
import json
import signal
import sys
from pathlib import Path

import pytest
from report_fixtures import write_run

from kdbias.matrix import completed_run, plan_matrix, resumable_run_dir

RUN_ALL = Path(__file__).resolve().parents[2] / "experiments" / "run_all.py"


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("kdbias_run_all_under_test", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _actions(plan):
    return [(p.experiment, p.seed, p.action) for p in plan]


def test_empty_runs_dir_runs_everything_in_dependency_order(tmp_path):
    plan = plan_matrix(tmp_path / "runs", seeds=2, smoke=True)
    assert _actions(plan) == [
        ("teacher_resnet18", 0, "run"), ("teacher_convnextv2", 0, "run"),
        ("baseline", 0, "run"), ("exp1", 0, "run"), ("exp2", 0, "run"), ("exp3", 0, "run"),
        ("baseline", 1, "run"), ("exp1", 1, "run"), ("exp2", 1, "run"), ("exp3", 1, "run"),
    ]
    assert plan[3].argv == ("--smoke", "--seed", "0", "--runs-dir", str(tmp_path / "runs"))
    assert plan[3].command("experiments", python="py") == [
        "py", "experiments/exp1.py", "--smoke", "--seed", "0", "--runs-dir", str(tmp_path / "runs")]
    paper = plan_matrix("runs", seeds=1, dataset="cifar100")
    assert paper[0].argv == ("--seed", "0", "--runs-dir", "runs", "--dataset", "cifar100")
    with pytest.raises(ValueError, match="seeds"):
        plan_matrix("runs", seeds=0)


def test_skip_resume_run(tmp_path):
    runs = tmp_path / "runs"
    teacher = write_run(runs, "teacher_resnet18", val_acc=0.9)  # completed
    write_run(runs, "teacher_convnextv2", preset="paper", dataset="cifar10", val_acc=0.9)  # other preset
    interrupted = write_run(runs, "baseline", complete=False)  # last.ckpt, no summary
    write_run(runs, "exp1", seed=1, complete=False)  # other seed: not ours
    write_run(runs, "exp2", complete=False, last_ckpt=False)  # crashed before any checkpoint
    plan = {(p.experiment, p.seed): p for p in plan_matrix(runs, seeds=1, smoke=True)}
    assert plan["teacher_resnet18", 0].action == "skip" and plan["teacher_resnet18", 0].run_dir == teacher
    assert plan["teacher_convnextv2", 0].action == "run"
    assert plan["baseline", 0].action == "resume" and plan["baseline", 0].run_dir == interrupted
    assert plan["baseline", 0].argv[-1] == "--resume"
    assert plan["exp1", 0].action == "run" and "--resume" not in plan["exp1", 0].argv
    assert plan["exp2", 0].action == "run"
    assert plan["exp3", 0].action == "run"
    # the paper matrix sees the paper teacher as done and nothing of the smoke runs
    paper = {(p.experiment, p.seed): p.action for p in plan_matrix(runs, seeds=1)}
    assert paper["teacher_convnextv2", 0] == "skip" and paper["teacher_resnet18", 0] == "run"
    assert paper["baseline", 0] == "run"


def test_completed_beats_interrupted_and_latest_interrupted_wins(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "exp3", version=0, complete=False)
    newer = write_run(runs, "exp3", version=1, complete=False)
    write_run(runs, "exp3", version=2, seed=5, complete=False)
    assert resumable_run_dir(runs, "exp3", 0, "digits", "smoke") == newer
    done = write_run(runs, "exp3", version=3, val_acc=0.5)
    assert completed_run(runs, "exp3", 0, "digits", "smoke") == done
    (exp3,) = [p for p in plan_matrix(runs, smoke=True) if p.experiment == "exp3"]
    assert exp3.action == "skip"
    # a summary of another experiment copied into the dir does not count
    (done / "summary.json").write_text(json.dumps({"experiment": "exp2", "seed": 0, "dataset": "digits",
                                                   "preset": "smoke"}))
    assert completed_run(runs, "exp3", 0, "digits", "smoke") is None


def test_dry_run_trains_nothing(run_all, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_all.subprocess, "call", lambda *a, **k: pytest.fail("dry run started a process"))
    assert run_all.main(["--smoke", "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 runs in the matrix, 0 completed, 6 to train" in out
    assert "would run: python " in out and "exp3.py --smoke --seed 0" in out
    assert not (tmp_path / "RESULTS.md").exists()


def _fake_training(runs_dir: Path, fail: str | None = None, code: int = 1, calls: list | None = None):
    """A stand-in for ``subprocess.call`` that writes the run a script would write."""

    def call(command, env=None):
        script, argv = Path(command[1]), command[2:]
        name = script.stem
        seed = int(argv[argv.index("--seed") + 1])
        if calls is not None:
            calls.append((name, seed, "--resume" in argv))
        assert command[0] == sys.executable and script.is_file()
        assert env["HF_HUB_OFFLINE"] == "1"
        if name == fail:
            write_run(runs_dir, name, seed=seed, complete=False)
            return code
        write_run(runs_dir, name, seed=seed, val_acc=0.5 + 0.01 * len(name))
        return 0

    return call


def test_runs_the_rest_then_reports_and_skips_next_time(run_all, tmp_path, monkeypatch, capsys):
    runs, out = tmp_path / "runs", tmp_path / "R.md"
    write_run(runs, "teacher_resnet18", val_acc=0.9)
    write_run(runs, "exp1", complete=False)
    calls: list = []
    monkeypatch.setattr(run_all.subprocess, "call", _fake_training(runs, calls=calls))
    assert run_all.main(["--smoke", "--runs-dir", str(runs), "--out", str(out)]) == 0
    assert calls == [("teacher_convnextv2", 0, False), ("baseline", 0, False), ("exp1", 0, True),
                     ("exp2", 0, False), ("exp3", 0, False)]
    text = out.read_text()
    assert "Source: digits / smoke" in text and "| **EXP-2** |" in text
    calls.clear()
    assert run_all.main(["--smoke", "--runs-dir", str(runs), "--out", str(out)]) == 0
    assert calls == []
    assert "6 completed, 0 to train" in capsys.readouterr().out


@pytest.mark.parametrize("code, reason", [(1, "exited with code 1"), (-signal.SIGKILL, "SIGKILL")])
def test_stops_at_first_failure_with_rerun_command(run_all, tmp_path, monkeypatch, capsys, code, reason):
    runs, out = tmp_path / "runs", tmp_path / "R.md"
    calls: list = []
    monkeypatch.setattr(run_all.subprocess, "call", _fake_training(runs, fail="exp1", code=code, calls=calls))
    assert run_all.main(["--smoke", "--runs-dir", str(runs), "--out", str(out)]) == 1
    assert [c[0] for c in calls] == ["teacher_resnet18", "teacher_convnextv2", "baseline", "exp1"]
    err = capsys.readouterr().err
    assert "FAILED: exp1 (seed 0)" in err and reason in err
    assert f"exp1.py --smoke --seed 0 --runs-dir {runs}" in err
    assert "| **EXP-1** | ResNet-18 | Soft KL (τ=4) | *pending* | *pending* |" not in out.read_text()  # teacher known
    assert "| Student Val Accuracy | *pending* |" in out.read_text()
    # the interrupted exp1 is resumed next time
    assert [p.action for p in plan_matrix(runs, smoke=True) if p.experiment == "exp1"] == ["resume"]


def test_success_without_summary_is_a_failure(run_all, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_all.subprocess, "call", lambda command, env=None: 0)
    assert run_all.main(["--smoke", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "R.md")]) == 1
    assert "teacher_resnet18 (seed 0) finished without writing summary.json" in capsys.readouterr().err
