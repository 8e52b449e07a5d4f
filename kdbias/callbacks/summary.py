"""Write a run's final figures to ``summary.json`` (read by :mod:`kdbias.report`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

SUMMARY_FILE = "summary.json"


class SummaryCallback(Callback):
    """Track validation accuracy per epoch and write ``<log_dir>/summary.json`` at fit end.

    Keys: ``experiment``, ``dataset``, ``preset``, ``seed``, ``epochs_completed``,
    ``val_acc`` (last epoch, fraction in [0, 1]), ``best_val_acc``, ``best_epoch``
    (0-based), ``train_time_s`` (wall-clock seconds of ``fit``, summed over resumes,
    analytics included), ``analytics_time_s`` (the part spent in the analytics callbacks),
    ``teacher_acc`` (``teacher/acc`` or ``teacher/knn_acc``, else null), plus what every
    other callback with a ``summary_items() -> dict`` method reports (the analytics).
    Written on global rank 0 only; best-epoch tracking and elapsed time live in
    ``state_dict`` so a resumed run reports the whole run.
    """

    def __init__(self, experiment: str, dataset: str, preset: str, seed: int, extra: dict[str, Any] | None = None) -> None:
        self.experiment, self.dataset, self.preset, self.seed = experiment, dataset, preset, seed
        self.extra = dict(extra or {})
        self.best_val_acc: float | None = None
        self.best_epoch: int | None = None
        self.last_val_acc: float | None = None
        self.elapsed_before_s = 0.0
        self._fit_start: float | None = None

    @property
    @override
    def state_key(self) -> str:
        return f"SummaryCallback[{self.experiment}]"

    def elapsed_s(self) -> float:
        running = 0.0 if self._fit_start is None else time.perf_counter() - self._fit_start
        return self.elapsed_before_s + running

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
        if self.best_val_acc is None or acc > self.best_val_acc:
            self.best_val_acc, self.best_epoch = acc, trainer.current_epoch

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = self.summary(trainer)
        log_dir = trainer.log_dir  # a broadcast from rank 0 under DDP: every rank must read it
        if trainer.is_global_zero and log_dir is not None:
            path = Path(log_dir) / SUMMARY_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")

    def summary(self, trainer: L.Trainer) -> dict[str, Any]:
        metrics = trainer.callback_metrics
        teacher = metrics.get("teacher/acc", metrics.get("teacher/knn_acc"))
        summary: dict[str, Any] = {
            "experiment": self.experiment,
            "dataset": self.dataset,
            "preset": self.preset,
            "seed": self.seed,
            "epochs_completed": int(trainer.current_epoch),
            "val_acc": self.last_val_acc,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "train_time_s": round(self.elapsed_s(), 3),
            "teacher_acc": None if teacher is None else float(teacher),
        }
        summary.update(self.extra)
        analytics_s = 0.0
        for callback in trainer.callbacks:
            if callback is not self and hasattr(callback, "summary_items"):
                summary.update(callback.summary_items())
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
