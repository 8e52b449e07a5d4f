"""One plain progress line per epoch, for runs without a terminal (log files, nohup, SLURM, CI)."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from kdbias.callbacks.base import AnalyticsCallback
from kdbias.console import format_duration

__all__ = ["EpochLineProgress", "format_duration"]

log = logging.getLogger(__name__)


class EpochLineProgress(Callback):
    """Print, on global rank 0, one line per finished epoch::

        epoch 3/200  train/loss 1.234  val/acc 0.8123  412 img/s  elapsed 5.1 min  left 3.2 h

    Losses and ``val/acc`` are the latest logged values (``trainer.callback_metrics``: read
    once per epoch, after the epoch's validation); images/s counts the training images of
    the epoch on this rank over its wall-clock time (analytics included). The time left is
    the sum of what is still to come in this process:

    - the remaining epochs at the mean epoch time of this session *without* its analytics;
    - every analytics measurement still due (:meth:`AnalyticsCallback.measurements_left`)
      at that callback's mean measured duration; one never timed yet is named instead;
    - ``test_passes`` passes over the test split after training, at the held-out split's
      measured seconds per image.

    Lightning's progress bar is the interactive alternative; this callback is for output
    that is not a terminal (or one too narrow to draw a bar).

    Args:
        test_passes: test-split evaluations after ``fit`` (the experiment runner tests the
            last weights and the selected checkpoint: 2), >= 0.
    """

    def __init__(self, test_passes: int = 2) -> None:
        if int(test_passes) < 0:
            raise ValueError(f"test_passes must be >= 0, got {test_passes}")
        self.test_passes = int(test_passes)
        self._fit_start = 0.0
        self._epoch_start = 0.0
        self._images = 0
        self._epochs_done = 0
        self._training_s = 0.0  # epoch wall time minus analytics, summed over this session
        self._analytics_at_start = 0.0
        self._val_start = 0.0
        self._val_s = 0.0  # fit-time validation (sanity check excluded): seconds and images
        self._val_images = 0

    @staticmethod
    def _analytics(trainer: L.Trainer) -> list[AnalyticsCallback]:
        return [c for c in trainer.callbacks if isinstance(c, AnalyticsCallback)]

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._epochs_done, self._training_s, self._val_s, self._val_images = 0, 0.0, 0.0, 0

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start, self._images = time.perf_counter(), 0
        self._analytics_at_start = sum(c.elapsed_s for c in self._analytics(trainer))

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += int(batch[0].shape[0])  # a shape, not a value: no device sync

    @override
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    @override
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._val_images += int(batch[0].shape[0])

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_s += time.perf_counter() - self._val_start

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epochs_done += 1
        analytics_s = sum(c.elapsed_s for c in self._analytics(trainer)) - self._analytics_at_start
        self._training_s += max(0.0, time.perf_counter() - self._epoch_start - analytics_s)
        if trainer.is_global_zero:
            log.info(self.line(trainer))

    def _test_images(self, trainer: L.Trainer) -> int:
        total = int(getattr(trainer.datamodule, "num_test", 0) or 0)
        limit = trainer.limit_test_batches
        batch = int(getattr(trainer.datamodule, "val_batch_size", 0) or 0)
        if isinstance(limit, int) and batch:
            return min(total, limit * batch)
        return int(total * float(limit if limit is not None else 1.0))

    def time_left(self, trainer: L.Trainer) -> tuple[float, list[str]]:
        """Seconds still to come (see the class docstring) and the analytics not yet timed."""
        epochs_left = max(0, (trainer.max_epochs or 0) - trainer.current_epoch - 1)
        left = epochs_left * self._training_s / max(1, self._epochs_done)
        untimed = []
        for callback in self._analytics(trainer):
            count = callback.measurements_left(trainer)
            if count and callback.mean_duration_s is None:
                untimed.append(callback.describe())
            elif count:
                left += count * callback.mean_duration_s
        if self._val_images:
            left += self.test_passes * self._test_images(trainer) * self._val_s / self._val_images
        return left, untimed

    def line(self, trainer: L.Trainer) -> str:
        now = time.perf_counter()
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        for tag in sorted(t for t in metrics if t.startswith("train/loss")) + ["val/acc"]:
            if tag in metrics:
                parts.append(f"{tag} {float(metrics[tag]):.4g}")
        epoch_s = max(now - self._epoch_start, 1e-9)
        parts.append(f"{self._images / epoch_s:.0f} img/s")
        parts.append(f"elapsed {format_duration(now - self._fit_start)}")
        if trainer.max_epochs and trainer.max_epochs > 0:
            left, untimed = self.time_left(trainer)
            parts.append(
                f"left {format_duration(left)}" + (f" (+ {', '.join(untimed)}, not yet timed)" if untimed else "")
            )
        return "  ".join(parts)
