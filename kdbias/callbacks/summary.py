"""Write a run's final figures to ``summary.json`` (read by :mod:`kdbias.report`)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from kdbias.callbacks.base import AnalyticsCallback, run_of
from kdbias.runs import atomic_write_json, merge_items
from kdbias.schema import SCHEMA_VERSION, SummaryContributor

__all__ = ["SummaryCallback", "merge_items"]


class SummaryCallback(Callback):
    """Track the held-out validation accuracy per epoch and write ``<log_dir>/summary.json``.

    The record is :class:`kdbias.schema.Summary` (version ``schema``). Keys written at fit
    end: ``schema`` (:data:`~kdbias.schema.SCHEMA_VERSION`), ``experiment``, ``dataset``,
    ``preset``, ``seed``, ``status``
    (``"trained"``; the experiment runner sets ``"complete"`` once the test split is
    evaluated, see :meth:`update`), ``epochs_completed``, ``val_acc`` (last epoch, held-out
    split, fraction in [0, 1]), ``val_images`` (held-out images of the last validation
    pass: the count actually evaluated), ``best_val_acc``, ``best_epoch`` (0-based), ``train_time_s``
    (wall-clock seconds of ``fit``, summed over resumes, analytics included),
    ``analytics_time_s`` (the part spent in the analytics callbacks),
    ``student_init_sha256`` (the module's, when it has one), plus ``extra`` and what every callback that is a
    :class:`~kdbias.schema.SummaryContributor` reports (the analytics). :meth:`update` (the runner,
    after the test) adds ``test_images`` (images of the latest test pass) and the contributors'
    items again (the test predictions file is written during the test).

    Written on global rank 0 only, atomically (a temporary file renamed). Best-epoch
    tracking and elapsed time live in ``state_dict`` so a resumed run reports the whole run.
    """

    def __init__(
        self, experiment: str, dataset: str, preset: str, seed: int, extra: dict[str, Any] | None = None
    ) -> None:
        self.experiment, self.dataset, self.preset, self.seed = experiment, dataset, preset, seed
        self.extra = dict(extra or {})
        self.best_val_acc: float | None = None
        self.best_epoch: int | None = None
        self.last_val_acc: float | None = None
        self.elapsed_before_s = 0.0
        self._fit_start: float | None = None
        self._path: Path | None = None
        self._callbacks: list[Any] = []
        self.val_images = 0
        self.test_images = 0
        self._counting = 0
        self.written: dict[str, Any] = {}

    @property
    @override
    def state_key(self) -> str:
        return f"SummaryCallback[{self.experiment}]"

    def elapsed_s(self) -> float:
        running = 0.0 if self._fit_start is None else time.perf_counter() - self._fit_start
        return self.elapsed_before_s + running

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run = run_of(trainer)  # a broadcast from rank 0 under DDP: every rank must read it
        self._path = None if run is None or not trainer.is_global_zero else run.summary
        self._callbacks = [c for c in trainer.callbacks if c is not self]

    @override
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._counting = 0

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
        self._counting += int(batch[1].shape[0])

    @override
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._counting = 0

    @override
    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._counting += int(batch[1].shape[0])

    @override
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test_images = self._counting * trainer.world_size

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the epoch's metrics are reduced (on_validation_epoch_end is too early).
        if trainer.sanity_checking or "val/acc" not in trainer.callback_metrics:
            return
        acc = float(trainer.callback_metrics["val/acc"])
        self.val_images = self._counting * trainer.world_size
        self.last_val_acc = acc
        if math.isfinite(acc) and (self.best_val_acc is None or acc > self.best_val_acc):
            self.best_val_acc, self.best_epoch = acc, trainer.current_epoch

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.written = self.summary(trainer, pl_module)
        self._write()
        self._fit_start, self.elapsed_before_s = None, self.elapsed_s()

    def update(self, **items: Any) -> dict[str, Any]:
        """Add ``items``, ``test_images`` and the contributors' items that the fit-end summary
        lacked (the test predictions file) to the written summary and rewrite it (rank 0);
        returns the summary."""
        for callback in self._callbacks:  # only what fit end did not have: a test with ckpt_path restores
            if isinstance(callback, SummaryContributor):  # the callbacks' states of that (older) checkpoint
                new = {k: v for k, v in callback.summary_items().items() if self.written.get(k) is None}
                merge_items(self.written, {k: v for k, v in new.items() if v is not None})
        if self.test_images:
            self.written["test_images"] = self.test_images
        merge_items(self.written, items)
        self._write()
        return self.written

    def _write(self) -> None:
        if self._path is not None and self.written:
            atomic_write_json(self._path, self.written)

    def summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "experiment": self.experiment,
            "dataset": self.dataset,
            "preset": self.preset,
            "seed": self.seed,
            "status": "trained",
            "epochs_completed": int(trainer.current_epoch),
            "val_acc": self.last_val_acc,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "val_images": self.val_images,
            "train_time_s": round(self.elapsed_s(), 3),
            "student_init_sha256": getattr(pl_module, "student_init_sha256", None),
        }
        merge_items(summary, self.extra)
        analytics_s = 0.0
        for callback in trainer.callbacks:
            if callback is not self and isinstance(callback, SummaryContributor):
                merge_items(summary, callback.summary_items())
            if isinstance(callback, AnalyticsCallback):
                analytics_s += callback.elapsed_s
        summary["analytics_time_s"] = round(analytics_s, 3)
        return summary

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "last_val_acc": self.last_val_acc,
            "elapsed_s": self.elapsed_s(),
            "val_images": self.val_images,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_val_acc = state_dict["best_val_acc"]
        self.best_epoch = state_dict["best_epoch"]
        self.last_val_acc = state_dict["last_val_acc"]
        self.elapsed_before_s = state_dict["elapsed_s"]
        self.val_images = int(state_dict.get("val_images", 0))
