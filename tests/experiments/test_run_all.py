"""run_all: skip / resume / run / running-elsewhere decisions on fixture run directories (matched
by configuration), the local loop (stop at the first failure, dependencies, --parallel slots,
GPU pinning), --dry-run's estimate, --status, and the whole matrix."""

from __future__ import annotations

import fcntl
import functools
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from helpers import EXPERIMENTS

from kdbias import registry, runs
from kdbias.launch import expected_config
from kdbias.launch.local import run_local

RUN_ALL = EXPERIMENTS / "run_all.py"


@pytest.fixture(scope="module")
def run_all():
    from kdbias.launch import run_all as module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "can_fork", lambda: False)  # these tests fake subprocess.Popen; a fork runs real scripts
        yield module


@functools.cache
def _preset_config(experiment: str, preset: str, dataset: str) -> str:
    argv = (["--smoke"] if preset == "smoke" else []) + (["--data.dataset", dataset] if dataset != "digits" else [])
    return yaml.safe_dump(expected_config(experiment, argv))


def write_run(
    root: Path,
    experiment: str,
    seed: int = 0,
    dataset: str = "digits",
    preset: str = "smoke",
    complete: bool = True,
    checkpoint: bool = True,
    change: dict | None = None,
    train_time_s: float | None = None,
) -> Path:
    """A run folder whose config.yaml is the preset's configuration (with ``change``: {section: {key: value}})."""
    run_dir = runs.claim_run_dir(root, experiment)
    config = yaml.safe_load(_preset_config(experiment, preset, "cifar10" if preset == "paper" else dataset))
    config["seed_everything"] = seed
    for section, values in (change or {}).items():
        config[section].update(values)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    if complete:
        summary = {"experiment": experiment, "seed": seed, "dataset": dataset, "preset": preset, "status": "complete"}
        if train_time_s is not None:
            summary["train_time_s"] = train_time_s
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def _actions(plan):
    return [(p.experiment, p.seed, p.action) for p in plan]


def test_empty_runs_dir_runs_everything_in_dependency_order(run_all, tmp_path):
    plan = run_all.plan_matrix(tmp_path / "runs", seeds=2, smoke=True)
    students = list(registry.STUDENTS)
    assert _actions(plan) == [(t, 0, "run") for t in registry.TEACHERS] + [
        (name, seed, "run") for seed in (0, 1) for name in students
    ]
    first_student = plan[len(registry.TEACHERS)]
    assert first_student.argv == ("--smoke", "--seed_everything", "0", "--runs_dir", str(tmp_path / "runs"))
    assert first_student.command(python="py")[:4] == ["py", "-m", "kdbias.run", first_student.experiment]
    # dependencies come from the registry: each student needs its teacher runs of the matrix
    for run in plan:
        spec = registry.get(run.experiment)
        wanted = {*spec.depends_on, *([spec.teacher] if spec.teacher else [])}
        assert {n.split(":")[0] for n in run.needs} == wanted
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


def test_a_run_of_another_configuration_is_listed_never_skipped(run_all, tmp_path, capsys):
    """exp1 with tau = 2 and 1 epoch is not the preset's exp1: planned as 'run', listed with what differs."""
    root = tmp_path / "runs"
    write_run(root, "teacher_resnet18")
    other = write_run(root, "exp1", change={"model": {"temperature": 2.0}, "trainer": {"max_epochs": 1}})
    plan = {(p.experiment, p.seed): p for p in run_all.plan_matrix(root, seeds=1, smoke=True, only=["exp1"])}
    run = plan["exp1", 0]
    assert run.action == "run" and run.run_dir is None
    assert [path for path, _ in run.others] == [other]
    assert set(run.others[0][1]) == {"model.temperature", "trainer.max_epochs"}
    assert runs.latest_complete_run(root, "exp1", 0, "digits", "smoke", config=run.config) is None
    assert runs.latest_complete_run(root, "exp1", 0, "digits", "smoke") == other  # without a configuration: any
    assert run_all.main(["--smoke", "--seeds", "1", "--only", "exp1", "--dry-run", "--runs_dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "other configuration, not counted" in out and "model.temperature: 2.0" in out and "would run" in out
    # the preset's own run (a resumed-by-seed-only config would not count): skipped
    same = write_run(root, "exp1")
    plan = run_all.plan_matrix(root, seeds=1, smoke=True, only=["exp1"])
    assert plan[0].action == "skip" and plan[0].run_dir == same


def _hold_lock_in_child(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock as a live run does (flock on run.lock)."""
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(run_dir / runs.LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_locked_run_is_running_elsewhere_never_resumed(run_all, tmp_path, capsys):
    root = tmp_path / "runs"
    live = write_run(root, "teacher_resnet18", complete=False)
    child = _hold_lock_in_child(live)
    try:
        plan = run_all.plan_matrix(root, seeds=1, smoke=True, only=["teacher_resnet18", "exp1"])
        assert _actions(plan) == [("teacher_resnet18", 0, "running"), ("exp1", 0, "run")]
        assert runs.is_running(live) and not runs.is_running(write_run(root, "baseline"))
        with pytest.raises(runs.RunningElsewhere, match="another live process"):
            runs.hold_lock(live)
        args = ["--smoke", "--seeds", "1", "--only", "teacher_resnet18", "exp1", "--runs_dir", str(root)]
        assert run_all.main([*args, "--status"]) == 0
        out = capsys.readouterr().out
        assert f"running    teacher_resnet18 seed 0  {live} (locked" in out and "missing    exp1 seed 0" in out
        assert run_all.main([*args, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "is running elsewhere" in out and "would run: " in out and "teacher_resnet18.py" not in out
    finally:
        child.kill()
        child.wait()
    assert not runs.is_running(live)  # released by the OS with the process
    assert run_all.plan_matrix(root, seeds=1, smoke=True, only=["teacher_resnet18"])[0].action == "resume"


class FakeProcess:
    """A finished child: ``outcome(command)`` is called when it is polled the first time."""

    running: list = []
    peak = 0

    def __init__(self, command, env, outcome, **kwargs):
        self.command, self.env, self._outcome, self._code, self.pid = command, env, outcome, None, 0
        self.stdout = io.StringIO("epoch 1/1  val/acc 0.5\n")
        FakeProcess.running.append(self)
        FakeProcess.peak = max(FakeProcess.peak, len(FakeProcess.running))
        self._polls = 0

    def poll(self):
        self._polls += 1
        if self._code is None and self._polls >= 2:  # alive for one poll: overlapping runs are seen
            self._code = self._outcome(self.command, self.env)
            FakeProcess.running.remove(self)
        return self._code


def _row(command: list[str]) -> str:
    """The row a launcher command trains: ``python -m kdbias.run [--study FILE] ROW ARGS``."""
    assert command[1:3] == ["-m", "kdbias.run"], command
    rest = command[3:]
    return rest[2] if rest[0] == "--study" else rest[0]


def _fake_start(outcome, started):
    def start(command, env, **kwargs):
        started.append((_row(command), env))
        return FakeProcess(command, env, outcome, **kwargs)

    return start


def test_loop_stops_at_the_first_failure_and_writes_the_report(run_all, tmp_path, monkeypatch, capsys):
    root = tmp_path / "runs"
    started: list = []

    def outcome(command, env):
        name = _row(command)
        if name == "teacher_convnextv2":
            return 1
        write_run(root, name)
        return 0

    monkeypatch.setattr("kdbias.launch.local.subprocess.Popen", _fake_start(outcome, started))
    code = run_all.main(
        ["--smoke", "--parallel", "1", "--seeds", "1", "--runs_dir", str(root), "--out", str(tmp_path / "R.md")]
    )
    assert code == 1 and [name for name, _ in started] == ["teacher_resnet18", "teacher_convnextv2"]
    err = capsys.readouterr().err
    assert "FAILED: teacher_convnextv2 (seed 0) exited with code 1" in err and "-m kdbias.run teacher_convnextv2" in err
    log = root / runs.JOBS_DIR / "local" / "teacher_convnextv2-seed0.log"
    assert f"log: {log}" in err and log.read_text().startswith("epoch 1/1")
    assert (tmp_path / "R.md").is_file()
    assert run_all.main(["--smoke", "--parallel", "1", "--seeds", "1", "--runs_dir", str(root), "--status"]) == 0
    out = capsys.readouterr().out
    assert "failed     teacher_convnextv2 seed 0  teacher_convnextv2 (seed 0) exited with code 1 after" in out
    assert f"; log: {log}" in out
    assert "done       teacher_resnet18 seed 0" in out
    # a second call skips what completed and starts with what failed
    started.clear()
    monkeypatch.setattr("kdbias.launch.local.subprocess.Popen", _fake_start(lambda c, e: 1, started))
    run_all.main(
        ["--smoke", "--parallel", "1", "--seeds", "1", "--runs_dir", str(root), "--out", str(tmp_path / "R.md")]
    )
    assert [name for name, _ in started] == ["teacher_convnextv2"]


def test_parallel_slots_respect_dependencies_and_pin_gpus(run_all, tmp_path):
    root = tmp_path / "runs"
    plan = run_all.plan_matrix(root, seeds=2, smoke=True, only=["teacher_resnet18", "exp1", "baseline_b512"])
    finished: list[str] = []
    order_ok = threading.Event()

    def outcome(command, env):
        name = _row(command)
        seed = int(command[command.index("--seed_everything") + 1])
        if name == "exp1" and "teacher_resnet18" not in finished:
            order_ok.set()  # a student before its teacher completed
        finished.append(name)
        write_run(root, name, seed=seed)
        return 0

    started: list = []
    FakeProcess.peak = 0

    out = io.StringIO()
    result = run_local(  # done: the newest complete run of each planned run's identity (PlannedRun.completed)
        plan, root, parallel=2, env={}, gpus=4, gpus_per_run=2, start=_fake_start(outcome, started), out=out
    )
    assert result.failure is None and result.trained == 5 and not order_ok.is_set()
    assert FakeProcess.peak == 2  # two at a time
    assert {env["CUDA_VISIBLE_DEVICES"] for _, env in started} == {"0,1", "2,3"}
    # no GPU: no pinning, each of the 2 runs gets half the cores
    started.clear()
    root2 = tmp_path / "cpu"
    plan = run_all.plan_matrix(root2, seeds=1, smoke=True, only=["baseline_b512", "teacher_resnet18"])
    run_local(plan, root2, lambda run: root2, parallel=2, env={}, gpus=0, start=_fake_start(lambda c, e: 0, started))
    assert all("CUDA_VISIBLE_DEVICES" not in env for _, env in started)
    assert {env["OMP_NUM_THREADS"] for _, env in started} == {str(max(1, (os.cpu_count() or 1) // 2))}


def test_dry_run_trains_nothing_and_estimates_the_time(run_all, tmp_path, capsys):
    assert run_all.main(["--smoke", "--dry-run", "--runs_dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    n = len(registry.TEACHERS) + 2 * len(registry.STUDENTS)  # smoke default: 2 seeds
    assert f"{n} to train" in out and "would run: python" in out and not (tmp_path / "runs").exists()
    per_run = 36  # s, written out: the preset-size estimate before any run finished
    one = f"{n * per_run / 60:.1f} min"
    assert f"estimated {one} one after another; about {n * per_run / 2 / 60:.1f} min with --parallel 2" in out
    assert "(no finished run yet" in out
    # from finished runs: the baseline took 30 s for its epochs; the others take that rate too
    root = tmp_path / "done"
    write_run(root, "baseline", train_time_s=30.0)
    args = ["--smoke", "--seeds", "1", "--only", "baseline", "baseline_b512", "--dry-run", "--runs_dir", str(root)]
    assert run_all.main([*args, "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "estimated 30.0 s one after another; about 15.0 s with --parallel 2 (from the finished runs" in out


def test_bad_launcher_values_are_one_line(run_all, tmp_path, capsys):
    assert run_all.main(["--smoke", "--parallel", "0", "--runs_dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "run_all.py: error: --parallel must be >= 1, got 0"
    assert run_all.main(["--smoke", "--only", "nope", "--runs_dir", str(tmp_path)]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err


def test_lock_probe_does_not_block_a_claim(tmp_path):
    """is_running probes with a shared lock released at once: a live run's exclusive lock is unaffected."""
    run_dir = runs.claim_run_dir(tmp_path, "baseline", lock=True)
    assert runs.is_running(run_dir)
    fd = os.open(run_dir / runs.LOCK_FILE, os.O_RDONLY)
    with pytest.raises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    os.close(fd)
    runs.release_lock(run_dir)
    assert not runs.is_running(run_dir)


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


def test_two_launchers_on_one_runs_folder_train_each_run_once(run_all, tmp_path, monkeypatch, capsys):
    """Two ``run_all --parallel 2`` on one ``--runs_dir`` at once: the second (started while the
    first trains its first run) waits for the first's planner lock, saying who holds it, then
    finds every run complete: each run is started once."""
    import time

    root = tmp_path / "runs"
    started: list = []
    argv = ["--smoke", "--parallel", "2", "--seeds", "1", "--runs_dir", str(root), "--only", "teacher_resnet18"]
    argv += ["teacher_deit", "--out", str(tmp_path / "R.md")]
    codes: list = []
    second = threading.Thread(target=lambda: codes.append(run_all.main(argv)))

    def outcome(command, env):
        if not second.is_alive() and not codes:
            second.start()  # the second launcher starts while this run trains
            time.sleep(2.0)
        write_run(root, _row(command))
        return 0

    monkeypatch.setattr("kdbias.launch.local.subprocess.Popen", _fake_start(outcome, started))
    codes.append(run_all.main(argv))
    second.join(timeout=600)
    assert codes == [0, 0]
    assert sorted(name for name, _ in started) == ["teacher_deit", "teacher_resnet18"]
    assert "another run_all (pid" in capsys.readouterr().err
    assert [len(list((root / name).glob("version_*"))) for name in ("teacher_deit", "teacher_resnet18")] == [1, 1]


def test_jobs_folder_that_is_a_file_is_one_line(run_all, tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    (root / runs.JOBS_DIR).write_text("")
    assert run_all.main(["--smoke", "--seeds", "1", "--runs_dir", str(root), "--only", "teacher_resnet18"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run_all.py: error: ") and "is not a folder" in err[0]
