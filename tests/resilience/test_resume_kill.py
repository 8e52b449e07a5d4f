"""SIGKILL a real ``experiments/baseline.py`` run in epoch 1, then ``--resume`` it.

The resumed run must finish the planned epochs in the same run directory, log each
epoch's validation once, and continue the callbacks' and the datamodule's state (the
strict, bitwise form of the contract is in ``test_resume_state.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import torch
from resilience_helpers import REPO, TINY, read_scalars, script, script_env

EPOCHS, BATCHES = 3, 8


def _load_when_complete(path, proc, log, timeout: float = 300.0) -> dict:
    """``torch.load`` ``path`` as soon as it exists and is fully written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before it was killed:\n{log.read_text()}"
        if path.is_file():
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # still being written
                pass
        time.sleep(0.1)
    raise AssertionError(f"no {path} after {timeout} s:\n{log.read_text()}")


def test_sigkill_in_epoch_1_then_resume_completes_same_run(tmp_path):
    args = [*TINY, "--runs-dir", str(tmp_path / "runs"), "--epochs", str(EPOCHS), "--limit-train-batches", str(BATCHES)]
    run_dir = tmp_path / "runs" / "baseline" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    log = tmp_path / "killed.log"

    with log.open("w") as out:
        proc = subprocess.Popen(script("baseline") + args, cwd=REPO, env=script_env(), stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            first = _load_when_complete(last, proc, log)
            time.sleep(0.3)  # into epoch 1's batches
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed = torch.load(last, map_location="cpu", weights_only=True)
    assert killed["epoch"] == 0 and killed["global_step"] == BATCHES, "killed after epoch 1 had finished"
    assert first["global_step"] == BATCHES
    assert {"torch", "numpy", "python"} <= set(killed["callbacks"]["RNGStateCallback"])
    assert killed["CIFARDataModule"]["aug_step"] == BATCHES
    elapsed_epoch0 = killed["callbacks"]["SummaryCallback[baseline]"]["elapsed_s"]
    assert elapsed_epoch0 > 0

    resumed = subprocess.run(script("baseline") + args + ["--resume"], cwd=REPO, env=script_env(),
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Resuming {run_dir}" in resumed.stdout

    # same run directory, planned epochs completed
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_completed"] == EPOCHS
    assert summary["train_time_s"] > elapsed_epoch0  # elapsed time continued from the checkpoint

    # each epoch validated and logged once, over both processes' event files
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2
    val_steps = [step for step, _ in read_scalars(run_dir, "val/acc")]
    assert val_steps == [BATCHES * (e + 1) - 1 for e in range(EPOCHS)]

    # optimiser, schedule, loops, datamodule and callbacks continued from epoch 0's state
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["global_step"] == EPOCHS * BATCHES
    assert final["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == EPOCHS
    assert final["CIFARDataModule"]["aug_step"] == EPOCHS * BATCHES  # 0 would restart at 0: 2 * BATCHES
    assert final["callbacks"]["SummaryCallback[baseline]"]["elapsed_s"] > elapsed_epoch0
    assert final["lr_schedulers"][0]["last_epoch"] == EPOCHS * BATCHES
    assert final["optimizer_states"][0]["state"][0]["step"] == EPOCHS * BATCHES
