"""SIGKILL a real ``experiments/baseline.py`` run in epoch 1, then ``--resume`` it.

The killed process is stopped at a known point (``helpers.StallAt`` writes a flag file at
epoch 1, batch 1 and waits; the test then sends SIGKILL), so nothing of epoch 1 reached a
checkpoint. The resumed run must finish the planned epochs in the same run directory, log
each epoch's validation once, and continue the optimiser's, schedule's, loops', callbacks'
and datamodule's state (the strict, bitwise form is ``test_resume_state.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from helpers import read_scalars
from resilience_helpers import REPO, load, script, script_env, smoke_args, versions

EPOCHS, BATCHES = 3, 6


@pytest.mark.subprocess
def test_sigkill_in_epoch_1_then_resume_completes_the_same_run(tmp_path):
    runs = tmp_path / "runs"
    args = smoke_args(
        "baseline",
        runs,
        "--trainer.max_epochs",
        str(EPOCHS),
        "--trainer.limit_train_batches",
        str(BATCHES),
        "--trainer.log_every_n_steps",
        "1",
    )
    flag, log = tmp_path / "stalled", tmp_path / "killed.log"
    stall = [
        "--trainer.callbacks+=helpers.StallAt",
        f"--trainer.callbacks.flag={flag}",
        "--trainer.callbacks.epoch=1",
        "--trainer.callbacks.batch=1",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            script("baseline") + args + stall, cwd=REPO, env=script_env(), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 300
            while not flag.exists():
                assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before epoch 1:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no epoch 1 after 300 s:\n{log.read_text()}"
                time.sleep(0.1)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert flag.read_text().split() == ["1", "1", str(BATCHES + 1)]  # epoch 1, batch 1, one step into it

    run_dir = runs / "baseline" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    killed = load(last)
    assert killed["epoch"] == 0 and killed["global_step"] == BATCHES
    assert {"torch", "numpy", "python"} <= set(killed["callbacks"]["RNGStateCallback"])
    assert killed["CIFARDataModule"]["aug_step"] == BATCHES
    elapsed_epoch0 = killed["callbacks"]["SummaryCallback[baseline]"]["elapsed_s"]
    assert elapsed_epoch0 > 0
    assert not (run_dir / "summary.json").exists()

    resumed = subprocess.run(
        script("baseline") + args + ["--resume"],
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Resuming {run_dir} from {last}" in resumed.stdout

    # same run directory, planned epochs completed
    assert versions(runs, "baseline") == ["version_0"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs_completed"] == EPOCHS
    assert summary["train_time_s"] > elapsed_epoch0  # elapsed time continued from the checkpoint

    # each epoch validated and logged once, over both processes' event files
    assert [step for step, _ in read_scalars(run_dir, "val/acc")] == [BATCHES * (e + 1) - 1 for e in range(EPOCHS)]
    train_steps = sorted({step for step, _ in read_scalars(run_dir, "train/loss")})
    assert train_steps == list(range(EPOCHS * BATCHES))

    # optimiser, schedule, loops, datamodule and callbacks continued from epoch 0's state
    final = load(last)
    assert (final["epoch"], final["global_step"]) == (EPOCHS - 1, EPOCHS * BATCHES)
    assert final["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == EPOCHS
    assert final["CIFARDataModule"]["aug_step"] == EPOCHS * BATCHES  # restarted at 0 it would be 2 * BATCHES
    assert final["callbacks"]["SummaryCallback[baseline]"]["elapsed_s"] > elapsed_epoch0
    assert final["lr_schedulers"][0]["last_epoch"] == EPOCHS * BATCHES
    assert final["optimizer_states"][0]["state"][0]["step"] == EPOCHS * BATCHES
