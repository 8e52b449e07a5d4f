"""Teacher snapshots every k epochs with their held-out accuracy (for accuracy-matched teachers)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from kdbias.runs import atomic_write_json
from kdbias.schema.snapshots import SNAPSHOT_DIR, SNAPSHOT_INDEX, read_snapshots

__all__ = ["SNAPSHOT_DIR", "SNAPSHOT_INDEX", "SnapshotCallback", "read_snapshots"]


class SnapshotCallback(Callback):
    """Save ``<dirpath>/epoch<NNN>.ckpt`` (weights and hyperparameters, no optimiser state) every
    ``every_n_epochs`` epochs (and at the last epoch) after that epoch's validation, and record
    ``{file: {"epoch", "val_acc"}}`` in ``<dirpath>/index.json`` (``val_acc``: the held-out
    ``val/acc`` of those weights, a fraction).
    The official test split is never read. Nothing is saved without a held-out split."""

    def __init__(self, dirpath: str | Path, every_n_epochs: int) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val/acc" not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        name = f"epoch{epoch:03d}.ckpt"
        trainer.save_checkpoint(self.dirpath / name, weights_only=True)  # the network and hparams: a teacher
        if trainer.is_global_zero:
            index = read_snapshots(self.dirpath)
            index[name] = {"epoch": int(epoch), "val_acc": float(trainer.callback_metrics["val/acc"])}
            atomic_write_json(self.dirpath / SNAPSHOT_INDEX, index)
