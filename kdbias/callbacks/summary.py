"""Write a run's final figures to ``summary.json`` (read by :mod:`kdbias.report`)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from kdbias.runs import SUMMARY_FILE, atomic_write_json

__all__ = ["SummaryCallback", "merge_items"]


def merge_items(summary: dict[str, Any], items: dict[str, Any]) -> None:
    """``summary.update(items)``, merging (not replacing) values that are dicts on both sides
    (several CKA callbacks each report one entry of ``summary["cka"]``)."""
    for key, value in items.items():
        if isinstance(value, dict) and isinstance(summary.get(key), dict):
            summary[key] = {**summary[key], **value}
        else:
            summary[key] = value


class SummaryCallback(Callback):
    """Track the held-out validation accuracy per epoch and write ``<log_dir>/summary.json``.

    Keys written at fit end: ``experiment``, ``dataset``, ``preset``, ``seed``, ``status``
    (``"trained"``; the experiment runner sets ``"complete"`` once the test split is
    evaluated, see :meth:`update`), ``epochs_completed``, ``val_acc`` (last epoch, held-out
    split, fraction in [0, 1]), ``best_val_acc``, ``best_epoch`` (0-based), ``train_time_s``
    (wall-clock seconds of ``fit``, summed over resumes, analytics included),
    ``analytics_time_s`` (the part spent in the analytics callbacks),
    ``student_init_sha256`` (the module's, when it has one), ``teacher_acc`` (the k-NN
    accuracy of a headless teacher from :class:`~kdbias.callbacks.TeacherKNNCallback`; else
    null until the runner records the teacher's test accuracy), plus ``extra`` and what every callback with a
    ``summary_items() -> dict`` method reports (the analytics).

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
        log_dir = trainer.log_dir  # a broadcast from rank 0 under DDP: every rank must read it
        self._path = None if log_dir is None or not trainer.is_global_zero else Path(log_dir) / SUMMARY_FILE

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the epoch's metrics are reduced (on_validation_epoch_end is too early).
        if trainer.sanity_checking or "val/acc" not in trainer.callback_metrics:
            return
        acc = float(trainer.callback_metrics["val/acc"])
        self.last_val_acc = acc
        if math.isfinite(acc) and (self.best_val_acc is None or acc > self.best_val_acc):
            self.best_val_acc, self.best_epoch = acc, trainer.current_epoch

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.written = self.summary(trainer, pl_module)
        self._write()
        self._fit_start, self.elapsed_before_s = None, self.elapsed_s()

    def update(self, **items: Any) -> dict[str, Any]:
        """Add ``items`` to the written summary and rewrite it (rank 0); returns the summary."""
        merge_items(self.written, items)
        self._write()
        return self.written

    def _write(self) -> None:
        if self._path is not None and self.written:
            atomic_write_json(self._path, self.written)

    def summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "experiment": self.experiment,
            "dataset": self.dataset,
            "preset": self.preset,
            "seed": self.seed,
            "status": "trained",
            "epochs_completed": int(trainer.current_epoch),
            "val_acc": self.last_val_acc,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "train_time_s": round(self.elapsed_s(), 3),
            "student_init_sha256": getattr(pl_module, "student_init_sha256", None),
            "teacher_acc": None,
        }
        merge_items(summary, self.extra)
        analytics_s = 0.0
        for callback in trainer.callbacks:
            if callback is not self and hasattr(callback, "summary_items"):
                merge_items(summary, callback.summary_items())
                analytics_s += getattr(callback, "elapsed_s", 0.0)
        summary["analytics_time_s"] = round(analytics_s, 3)
        return summary

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "last_val_acc": self.last_val_acc,
            "elapsed_s": self.elapsed_s(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_val_acc = state_dict["best_val_acc"]
        self.best_epoch = state_dict["best_epoch"]
        self.last_val_acc = state_dict["last_val_acc"]
        self.elapsed_before_s = state_dict["elapsed_s"]
