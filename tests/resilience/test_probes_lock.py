"""A live run holds its folder's lock: a second process that tries to resume it is refused in
one line, run_all and the lookups see it as running; once the first process dies (SIGKILL)
the OS releases the lock and the run resumes and completes in the same folder."""

from __future__ import annotations

import subprocess
import time

import pytest
from helpers import FAST, TINY_ARGS, run_experiment
from resilience_helpers import error_lines, script, script_env, smoke_args, versions

from kdbias import runs

pytestmark = pytest.mark.subprocess


def _run_all():
    from kdbias.launch import run_all

    return run_all


def _wait_for(path, process) -> None:
    deadline = time.monotonic() + 600  # a safety net against a hang, not a timing assertion
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists(), process.stdout.read() if process.poll() is not None else "no stall"


def test_a_live_run_is_never_resumed_by_another_process(tmp_path, capsys):
    root, flag = tmp_path / "runs", tmp_path / "stalled"
    stall = ["--trainer.callbacks+=helpers.StallAt", f"--trainer.callbacks.flag={flag}", "--trainer.callbacks.batch=0"]
    first = subprocess.Popen(
        [*script("baseline"), *smoke_args("baseline", root, "--trainer.max_epochs", "2", *stall)],
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(flag, first)  # epoch 0 checkpointed; training epoch 1
        run_dir = root / "baseline" / "version_0"
        assert runs.is_running(run_dir) and (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert runs.lock_owner(run_dir) == f"pid {first.pid} on {__import__('socket').gethostname()}"
        second = subprocess.run(
            [*script("baseline"), *smoke_args("baseline", root, "--trainer.max_epochs", "2", "--resume")],
            env=script_env(),
            capture_output=True,
            text=True,
        )
        lines = error_lines(second.stderr, "baseline")
        assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
        assert f"{run_dir} is being trained by another live process (pid {first.pid}" in lines[0]
        assert versions(root, "baseline") == ["version_0"] and not (run_dir / "summary.json").exists()
        # run_all: running elsewhere, never resumed; the lookups do not count it
        extra = ["--", *FAST, *TINY_ARGS["baseline"], "--trainer.max_epochs", "2"]
        args = ["--smoke", "--seeds", "1", "--only", "baseline", "--runs_dir", str(root)]
        assert _run_all().main([*args, "--dry-run", *extra]) == 0
        out = capsys.readouterr().out
        assert f"running elsewhere baseline seed 0 ({run_dir})" in out and "would run" not in out
        assert runs.latest_complete_run(root, "baseline") is None
    finally:
        first.kill()  # SIGKILL: no clean-up code runs in it
        first.wait()
    assert not runs.is_running(run_dir)  # the OS released the lock with the process
    assert run_experiment("baseline", root, "--trainer.max_epochs", "2", "--resume") == run_dir
    assert runs.is_complete(runs.read_summary(run_dir)) and versions(root, "baseline") == ["version_0"]
