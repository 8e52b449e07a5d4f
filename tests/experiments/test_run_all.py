"""run_all: skip / resume / run decisions on fixture run directories, its loop, and the whole matrix."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import EXPERIMENTS

from kdbias import registry, runs

RUN_ALL = EXPERIMENTS / "run_all.py"


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("kdbias_run_all_under_test", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_run(
    root: Path,
    experiment: str,
    seed: int = 0,
    dataset: str = "digits",
    preset: str = "smoke",
    complete: bool = True,
    checkpoint: bool = True,
) -> Path:
    run_dir = runs.claim_run_dir(root, experiment)
    config = {"seed_everything": seed, "data": {"dataset": dataset}, "preset": preset}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    if complete:
        summary = {"experiment": experiment, "seed": seed, "dataset": dataset, "preset": preset, "status": "complete"}
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def _actions(plan):
    return [(p.experiment, p.seed, p.action) for p in plan]


def test_empty_runs_dir_runs_everything_in_dependency_order(run_all, tmp_path):
    plan = run_all.plan_matrix(tmp_path / "runs", seeds=2, smoke=True)
    students = [n for n in registry.STUDENTS]
    assert _actions(plan) == [(t, 0, "run") for t in registry.TEACHERS] + [
        (name, seed, "run") for seed in (0, 1) for name in students
    ]
    assert "baseline_b512" in students and students.index("baseline") < students.index("exp1")
    first_student = plan[len(registry.TEACHERS)]
    assert first_student.argv == ("--smoke", "--seed_everything", "0", "--runs_dir", str(tmp_path / "runs"))
    assert first_student.command("experiments", python="py")[:2] == ["py", f"experiments/{first_student.experiment}.py"]
    paper = run_all.plan_matrix("runs", seeds=1, dataset="cifar100", extra_args=["--trainer.devices", "2"])
    assert paper[0].argv == (
        "--seed_everything",
        "0",
        "--runs_dir",
        "runs",
        "--data.dataset",
        "cifar100",
        "--trainer.devices",
        "2",
    )
    with pytest.raises(ValueError, match="seeds"):
        run_all.plan_matrix("runs", seeds=0)


def test_skip_resume_run(run_all, tmp_path):
    root = tmp_path / "runs"
    teacher = write_run(root, "teacher_resnet18")
    write_run(root, "teacher_convnextv2", preset="paper", dataset="cifar10")  # another preset: not ours
    unfinished = write_run(root, "baseline", complete=False)
    write_run(root, "exp1", seed=1, complete=False)  # another seed
    write_run(root, "exp2", complete=False, checkpoint=False)  # died before its first checkpoint
    plan = {(p.experiment, p.seed): p for p in run_all.plan_matrix(root, seeds=1, smoke=True)}
    assert plan["teacher_resnet18", 0].action == "skip" and plan["teacher_resnet18", 0].run_dir == teacher
    assert plan["teacher_convnextv2", 0].action == "run"
    assert plan["baseline", 0].action == "resume" and plan["baseline", 0].run_dir == unfinished
    assert plan["baseline", 0].argv[-1] == "--resume"
    assert plan["exp1", 0].action == "run" and plan["exp2", 0].action == "run"


def test_loop_stops_at_the_first_failure_and_writes_the_report(run_all, tmp_path, monkeypatch, capsys):
    root = tmp_path / "runs"
    calls = []

    def fake_call(command, env):
        calls.append(command)
        name = Path(command[1]).stem
        if name == "teacher_convnextv2":
            return 1
        write_run(root, name)
        return 0

    monkeypatch.setattr(run_all.subprocess, "call", fake_call)
    code = run_all.main(["--smoke", "--seeds", "1", "--runs_dir", str(root), "--out", str(tmp_path / "R.md")])
    assert code == 1 and [Path(c[1]).stem for c in calls] == ["teacher_resnet18", "teacher_convnextv2"]
    err = capsys.readouterr().err
    assert "FAILED: teacher_convnextv2 (seed 0) exited with code 1" in err and "teacher_convnextv2.py" in err
    assert (tmp_path / "R.md").is_file()
    # a second call skips what completed and starts with what failed
    calls.clear()
    monkeypatch.setattr(run_all.subprocess, "call", lambda command, env: calls.append(command) or 1)
    run_all.main(["--smoke", "--seeds", "1", "--runs_dir", str(root), "--out", str(tmp_path / "R.md")])
    assert [Path(c[1]).stem for c in calls] == ["teacher_convnextv2"]


def test_dry_run_trains_nothing(run_all, tmp_path, capsys):
    assert run_all.main(["--smoke", "--dry-run", "--runs_dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert f"{len(registry.TEACHERS) + 2 * len(registry.STUDENTS)} to train" in out  # smoke default: 2 seeds
    assert "would run: python" in out and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_whole_smoke_matrix_with_two_seeds(tmp_path):
    """``run_all.py --smoke --seeds 2`` end to end (minutes): paired init hashes, a report with controls."""
    out = tmp_path / "RESULTS.md"
    command = [
        sys.executable,
        str(RUN_ALL),
        "--smoke",
        "--seeds",
        "2",
        "--runs_dir",
        str(tmp_path / "runs"),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, timeout=3600)
    hashes = {
        runs.read_summary(runs.latest_complete_run(tmp_path / "runs", name, 0))["student_init_sha256"]
        for name in registry.STUDENTS
    }
    assert len(hashes) == 1
    text = out.read_text()
    assert "±" in text and "n=2" in text
    assert "inconclusive" in text.lower() or "yes" in text  # each paired comparison is decided or says it is not
