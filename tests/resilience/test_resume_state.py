"""In-process crash and ``--resume``: the resumed epochs equal those of an uninterrupted run.

This is the strict form of the resume contract (optimiser, schedule, epoch, callbacks'
state, data order, augmentation stream and RNG all restored): every training loss of the
resumed epoch matches the uninterrupted run bit for bit (same process, one thread).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from resilience_helpers import TINY, read_scalars

import kdbias.experiment as experiment
from kdbias.callbacks.summary import SummaryCallback
from kdbias.recipes import BASELINE

BATCHES = 3  # per epoch; 2 epochs


class SimulatedCrash(RuntimeError):
    pass




def _crashing(epoch: int, batch: int):
    from lightning.pytorch.callbacks import Callback

    class Crash(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch_, batch_idx):
            if trainer.current_epoch == epoch and batch_idx == batch:
                raise SimulatedCrash(f"crash at epoch {epoch}, batch {batch}")

    return dataclasses.replace(
        BASELINE, build_callbacks=lambda config, dm: [*BASELINE.build_callbacks(config, dm), Crash()]
    )


def test_resumed_epoch_matches_uninterrupted_run(tmp_path, monkeypatch):
    summaries: list[SummaryCallback] = []
    datamodules = []

    class RecordingSummary(SummaryCallback):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            summaries.append(self)

    def recording_datamodule(config):
        datamodules.append(build(config))
        return datamodules[-1]

    build = experiment.build_datamodule
    monkeypatch.setattr(experiment, "SummaryCallback", RecordingSummary)
    monkeypatch.setattr(experiment, "build_datamodule", recording_datamodule)
    args = [*TINY, "--epochs", "2", "--limit-train-batches", str(BATCHES), "--drop-path", "0.5"]

    reference = BASELINE.run([*args, "--runs-dir", str(tmp_path / "a")])

    crashed = _crashing(epoch=1, batch=1)
    with pytest.raises(SimulatedCrash):
        crashed.run([*args, "--runs-dir", str(tmp_path / "b")])
    run_dir = tmp_path / "b" / "baseline" / "version_0"
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 0 and saved["global_step"] == BATCHES
    assert {"torch", "numpy", "python"} <= set(saved["callbacks"]["RNGStateCallback"])
    assert saved["CIFARDataModule"]["aug_step"] == BATCHES and "shuffle_rng" in saved["CIFARDataModule"]
    elapsed_epoch0 = saved["callbacks"]["SummaryCallback[baseline]"]["elapsed_s"]

    resumed = BASELINE.run([*args, "--runs-dir", str(tmp_path / "b"), "--resume"])
    assert resumed == run_dir
    assert not (tmp_path / "b" / "baseline" / "version_1").exists()

    # callbacks' and datamodule's state came back from the checkpoint
    assert summaries[-1].elapsed_before_s == pytest.approx(elapsed_epoch0)
    assert summaries[-1].best_epoch is not None
    assert datamodules[-1]._aug_step == 2 * BATCHES  # continued from BATCHES, not restarted at 0

    # every resumed step equals the uninterrupted run (last event per step wins)
    expected = dict(read_scalars(reference, "train/loss"))
    got = dict(read_scalars(run_dir, "train/loss"))
    assert sorted(got) == sorted(expected) == list(range(2 * BATCHES))
    assert [got[s] for s in range(BATCHES, 2 * BATCHES)] == [expected[s] for s in range(BATCHES, 2 * BATCHES)]
    assert read_scalars(run_dir, "val/acc") == read_scalars(reference, "val/acc")
    assert [s for s, _ in read_scalars(run_dir, "val/acc")] == [BATCHES - 1, 2 * BATCHES - 1]
