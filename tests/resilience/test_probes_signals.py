"""Exit statuses tell the truth: SIGTERM (SLURM's time limit) and SIGINT (Ctrl-C) during
training end with a non-zero status (143 / 130) and one line saying the checkpoint is kept;
``--resume`` then completes the same run. Only a complete run exits 0."""

from __future__ import annotations

import json
import signal

import pytest
from helpers import run_experiment
from resilience_helpers import smoke_args, versions

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def restore_sigint():
    """Lightning ignores SIGINT while it shuts down after a Ctrl-C; put pytest's handler back."""
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("name, status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_during_training_exits_non_zero_then_resume_completes(tmp_path, capsys, restore_sigint, name, status):
    from kdbias.cli import main

    runs = tmp_path / "runs"
    stop_at = ["--trainer.callbacks+=resilience_helpers.SignalAt", f"--trainer.callbacks.signal={name}"]
    args = smoke_args("baseline", runs, "--trainer.max_epochs", "2", *stop_at, "--trainer.callbacks.epoch=1")
    with pytest.raises(SystemExit) as stop:
        main("baseline", args)
    assert stop.value.code == status
    run_dir = runs / "baseline" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    err = capsys.readouterr().err
    assert f"stopped by {name} before the run completed; its checkpoint {last} is kept" in err
    assert last.is_file() and not (run_dir / "summary.json").exists()
    resumed = run_experiment("baseline", runs, "--trainer.max_epochs", "2", "--resume")
    assert resumed == run_dir and versions(runs, "baseline") == ["version_0"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs_completed"] == 2
