"""Jobs that really run, through submitit's local executor (no cluster): a teacher, then its
student (the dependency honoured), both complete and reported; a job interrupted as SLURM
would (USR2, the signal submitit's ``checkpoint()`` reacts to) is requeued and finishes in
the same run directory with ``--resume``."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from helpers import FAST, ROOT, TINY_ARGS

from kdbias import runs
from kdbias.launch import plan_matrix
from kdbias.launch.slurm import SlurmSettings, submit_matrix
from kdbias.report import write_report

pytest.importorskip("submitit")
pytestmark = pytest.mark.subprocess

LOCAL = SlurmSettings(executor="local", gpus_per_run=0, time_min=30, signal_delay_s=5)


@pytest.fixture(autouse=True)
def _job_env(monkeypatch):
    """What a job process needs here: this checkout and tests/ importable, offline, one thread."""
    paths = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("KDBIAS_RUN_DIR", raising=False)


def tiny_plan(root: Path, only: list[str], *extra: str):
    """The smoke plan of ``only`` with each run made tiny (its own architecture arguments)."""
    plan = plan_matrix(root, 1, smoke=True, only=only, extra_args=[*FAST, *extra], match_config=False)
    return [dataclasses.replace(run, argv=(*run.argv, *TINY_ARGS[run.experiment])) for run in plan]


def test_teacher_then_student_with_the_local_executor(tmp_path):
    root = tmp_path / "runs"
    plan = tiny_plan(root, ["teacher_resnet18", "exp1"])
    assert [run.needs for run in plan] == [(), ("teacher_resnet18:0",)]
    jobs = submit_matrix(plan, root, LOCAL)
    assert set(jobs) == {"teacher_resnet18:0", "exp1:0"}
    teacher = runs.latest_complete_run(root, "teacher_resnet18", 0, "digits", "smoke")
    student = runs.latest_complete_run(root, "exp1", 0, "digits", "smoke")
    assert teacher is not None and student is not None
    assert jobs["exp1:0"].result() == str(student) and jobs["teacher_resnet18:0"].result() == str(teacher)
    # the dependency: the student started after the teacher had finished, and distils from it
    assert (student / "config.yaml").stat().st_mtime >= (teacher / "summary.json").stat().st_mtime
    summary = json.loads((student / "summary.json").read_text())
    assert Path(summary["teacher"]["source"]).resolve() == (teacher / "checkpoints" / "best.ckpt").resolve()
    for run in plan:
        record = json.loads((root / runs.JOBS_DIR / "slurm" / f"{run.slug}.json").read_text())
        assert record["state"] == "done" and Path(record["log"]).is_file()
    report = write_report(root, tmp_path / "RESULTS.md", preset="smoke")
    text = report.read_text()
    assert "EXP-1" in text and "ResNet-18 teacher" in text


def test_an_interrupted_job_requeues_and_resumes_the_same_run(tmp_path):
    root = tmp_path / "runs"
    flag = tmp_path / "stalled"
    stall = ["--trainer.callbacks+=helpers.StallOnceAt", f"--trainer.callbacks.flag={flag}"]
    plan = tiny_plan(root, ["baseline_b512"], "--trainer.max_epochs", "2", *stall)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(jobs=submit_matrix(plan, root, LOCAL)))
    thread.start()
    deadline = time.monotonic() + 600  # a safety net against a hang, not a timing assertion
    while not flag.exists() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert flag.exists(), "the job never reached its second epoch"
    run_dir = root / "baseline_b512" / "version_0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and runs.is_running(run_dir)
    os.kill(int(flag.read_text()), signal.SIGUSR2)  # what SLURM sends before the time limit
    thread.join(timeout=600)
    assert not thread.is_alive()
    job = result["jobs"]["baseline_b512:0"]
    assert job.result() == str(run_dir)
    assert [p.name for p in (root / "baseline_b512").iterdir()] == ["version_0"]  # no second version
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert runs.load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 1  # both epochs, one folder
    log = Path(job.paths.stdout).read_text()
    assert f"Resuming {run_dir} from {run_dir / 'checkpoints' / 'last.ckpt'}" in log
    assert "requeued" in (log + Path(job.paths.stderr).read_text()).lower()
