"""Teacher snapshots every k epochs with their held-out accuracy (for accuracy-matched teachers)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from kdbias.runs import RunPathError, atomic_write_json, read_regular

__all__ = ["SNAPSHOT_DIR", "SNAPSHOT_INDEX", "SnapshotCallback", "read_snapshots"]

SNAPSHOT_DIR = "snapshots"  # under the run's checkpoints/
SNAPSHOT_INDEX = "index.json"
#: Size cap of ``index.json`` (a few hundred bytes per snapshot).
MAX_INDEX_BYTES = 1024 * 1024
_SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9_.=-]{1,200}\.ckpt")


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


def read_snapshots(dirpath: str | Path) -> dict[str, dict[str, Any]]:
    """The snapshot index ``{file: {"epoch", "val_acc"}}`` of ``dirpath`` ({} when there is none).

    Validated: a regular file of at most :data:`MAX_INDEX_BYTES`, a JSON object whose keys are
    plain ``.ckpt`` file names (no folders) and whose entries hold an integer ``epoch >= 0``
    and a finite ``val_acc`` in [0, 1]. Anything else is a :class:`~kdbias.runs.RunPathError`
    naming ``index.json`` (one line; a NaN accuracy would otherwise win every match)."""
    path = Path(dirpath) / SNAPSHOT_INDEX
    try:
        data = json.loads(read_regular(path, MAX_INDEX_BYTES).decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, RecursionError) as error:  # UnreadableFile, JSON, UTF-8, a 5,000-digit integer
        reason = " ".join(str(error).split())[:200]
        raise RunPathError(
            f"{path} cannot be read ({type(error).__name__}: {reason}); delete it (its snapshots are then not "
            "offered) or retrain the teacher run."
        ) from None
    if not isinstance(data, dict):
        raise RunPathError(f"{path} holds a JSON {type(data).__name__}, not an object; delete it or retrain.")
    for name, info in data.items():
        epoch = info.get("epoch") if isinstance(info, dict) else None
        acc = info.get("val_acc") if isinstance(info, dict) else None
        problem = (
            "is not a plain .ckpt file name in the snapshot folder"
            if not _SNAPSHOT_NAME.fullmatch(name)
            else "has no integer epoch >= 0"
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0
            else "has no finite val_acc in [0, 1]"
            if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not (0.0 <= acc <= 1.0)
            else ""
        )
        if problem:
            raise RunPathError(f"{path}: entry {name[:100]!r} {problem}; delete the file or retrain the teacher run.")
    return data
