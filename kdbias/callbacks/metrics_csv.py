"""``metrics.csv``: one row per finished epoch, readable without TensorBoard."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

__all__ = ["METRICS_FILE", "EpochMetricsCSV"]

METRICS_FILE = "metrics.csv"


class EpochMetricsCSV(Callback):
    """Write ``<run_dir>/metrics.csv`` on global rank 0: one row per finished training epoch.

    Columns: ``epoch`` (1-based count of finished epochs), ``step`` (optimizer steps so far),
    then every scalar of ``trainer.callback_metrics`` at the epoch's end, sorted by name: that
    epoch's ``train/acc`` (over all its training batches) and ``val/loss``, ``val/acc`` (means
    over the held-out split, measured at the epoch's end), the latest logged step's
    ``train/loss*`` (``trainer.log_every_n_steps``; what the progress line prints) and learning
    rate (``lr-<Optimizer>``), and the analytics' latest scalars. A column missing in a row is
    empty. The file is rewritten whole (atomically) after each
    epoch; rows of epochs at or after a resumed run's first epoch are replaced, so a resumed
    run's file has each epoch once.

    Args:
        run_dir: the run directory (``runs/<experiment>/version_<n>``).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / METRICS_FILE

    @staticmethod
    def row(trainer: L.Trainer) -> dict[str, str]:
        """The finished epoch's row: numbers as ``repr``-exact text (``float`` round-trips)."""
        out = {"epoch": str(trainer.current_epoch + 1), "step": str(trainer.global_step)}
        for name, value in sorted(trainer.callback_metrics.items()):
            number = float(value)  # epoch end: one host read per metric, off the hot path
            if value.numel() == 1 and math.isfinite(number):
                out[name] = repr(number)
        return out

    def read(self) -> list[dict[str, str]]:
        """Rows already on disk (none if the file is missing)."""
        if not self.path.is_file():
            return []
        with self.path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from kdbias.runs import atomic_write_text

        row = self.row(trainer)
        rows = [r for r in self.read() if r.get("epoch", "").isdigit() and int(r["epoch"]) < int(row["epoch"])]
        rows.append(row)
        columns = ["epoch", "step"] + sorted({k for r in rows for k in r} - {"epoch", "step"})
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, text.getvalue())
