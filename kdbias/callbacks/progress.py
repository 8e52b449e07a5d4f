"""One plain progress line per epoch, for runs without a terminal (log files, nohup, SLURM, CI)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

__all__ = ["EpochLineProgress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``"42.0 s"``, ``"3.5 min"`` or ``"2.10 h"``."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


class EpochLineProgress(Callback):
    """Print, on global rank 0, one line per finished epoch::

        epoch 3/200  train/loss 1.234  train/loss_ce 0.987  val/acc 0.8123  412 img/s  elapsed 5.1 min  left 3.2 h

    Losses and ``val/acc`` are the latest logged values (``trainer.callback_metrics``: read
    once per epoch, after the epoch's validation); images/s counts the training images of
    the epoch on this rank over its wall-clock time (analytics included); the time left
    extrapolates the mean epoch time of this session. Lightning's progress bar is the
    interactive alternative; this callback is for output that is not a terminal.
    """

    def __init__(self) -> None:
        self._fit_start = 0.0
        self._epoch_start = 0.0
        self._images = 0
        self._epochs_done = 0

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._epochs_done = 0

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start, self._images = time.perf_counter(), 0

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += int(batch[0].shape[0])  # a shape, not a value: no device sync

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epochs_done += 1
        if trainer.is_global_zero:
            print(self.line(trainer), flush=True)

    def line(self, trainer: L.Trainer) -> str:
        now = time.perf_counter()
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        for tag in sorted(t for t in metrics if t.startswith("train/loss")) + ["val/acc"]:
            if tag in metrics:
                parts.append(f"{tag} {float(metrics[tag]):.4g}")
        epoch_s = max(now - self._epoch_start, 1e-9)
        parts.append(f"{self._images / epoch_s:.0f} img/s")
        elapsed = now - self._fit_start
        parts.append(f"elapsed {format_duration(elapsed)}")
        if trainer.max_epochs and trainer.max_epochs > 0:
            left = (trainer.max_epochs - trainer.current_epoch - 1) * elapsed / max(1, self._epochs_done)
            parts.append(f"left {format_duration(left)}")
        return "  ".join(parts)
