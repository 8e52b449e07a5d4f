"""No torn leftovers: folders that a kill left without a complete checkpoint are removed by the
next run's claim, temp files of interrupted writes are removed at start and on resume, and
run_all and the lookups never count a temp file as a checkpoint."""

from __future__ import annotations

import subprocess
import time

import pytest
from helpers import run_experiment
from resilience_helpers import interrupted_run, script, script_env, smoke_args, temporary_files, versions

from kdbias import runs


def _torn(root, name: str, version: int, with_checkpoint: bool = False):
    """A folder as SIGKILL during the first checkpoint write leaves it (46 MB temp files in real life)."""
    run_dir = root / name / f"version_{version}"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed_everything: 0\npreset: smoke\ndata: {dataset: digits}\n")
    (run_dir / "events.out.tfevents.1.host.1.0").write_bytes(b"\0" * 16)
    (run_dir / "checkpoints" / f".best.ckpt.k{version}x.tmp").write_bytes(b"\0" * 4096)
    if with_checkpoint:
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return run_dir


def test_kills_during_the_first_checkpoint_write_leave_nothing_for_good(tmp_path):
    root = tmp_path / "runs"
    first, second = _torn(root, "baseline", 0), _torn(root, "baseline", 1)
    keep = root / "baseline" / "version_2"
    keep.mkdir()
    (keep / "notes.txt").write_text("not written by kdbias: never removed")
    # nothing counts a temp file as a checkpoint
    assert not runs.has_checkpoint(first) and runs.resumable_run(root, "baseline", 0, "digits", "smoke") is None
    run_dir = run_experiment("baseline", root)
    assert run_dir.name == "version_3" and not first.exists() and not second.exists()
    assert (keep / "notes.txt").is_file() and not (keep / runs.LOCK_FILE).exists()
    assert temporary_files(root) == []


def test_temp_files_are_removed_on_resume_and_beside_a_finished_run(tmp_path):
    root = tmp_path / "runs"
    crashed = interrupted_run("baseline", root, epochs=2, crash_epoch=1)
    leftover = crashed / "checkpoints" / ".last.ckpt.abcd.tmp"
    leftover.write_bytes(b"\0" * 1024)
    assert run_experiment("baseline", root, "--trainer.max_epochs", "2", "--resume") == crashed
    assert not leftover.exists() and temporary_files(crashed) == []
    # a finished run with torn temp files: the next run of the experiment cleans them
    for i in range(3):
        (crashed / "checkpoints" / f".best.ckpt.{i}.tmp").write_bytes(b"\0" * 1024)
    assert run_experiment("baseline", root).name == "version_1"
    assert temporary_files(crashed) == [] and runs.is_complete(runs.read_summary(crashed))


@pytest.mark.subprocess
def test_sigkill_before_the_first_checkpoint_then_a_new_run(tmp_path):
    root, flag = tmp_path / "runs", tmp_path / "stalled"
    stall = ["--trainer.callbacks+=helpers.StallAt", f"--trainer.callbacks.flag={flag}", "--trainer.callbacks.epoch=0"]
    process = subprocess.Popen(
        [*script("baseline"), *smoke_args("baseline", root, *stall)],
        env=script_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600  # a safety net against a hang, not a timing assertion
    while not flag.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.kill()
    process.wait()
    torn = root / "baseline" / "version_0"
    assert flag.exists() and torn.is_dir() and not runs.has_checkpoint(torn) and not runs.is_running(torn)
    killed_events = sorted(p.name for p in torn.glob("events.out.tfevents.*"))
    assert killed_events
    # nothing to resume: a new run, whose claim first removes the torn folder (its number is free again)
    assert run_experiment("baseline", root, "--resume") == torn
    assert versions(root, "baseline") == ["version_0"] and runs.is_complete(runs.read_summary(torn))
    assert not set(killed_events) & {p.name for p in torn.glob("events.out.tfevents.*")}
