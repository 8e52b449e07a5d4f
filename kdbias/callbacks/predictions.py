"""Per-image predictions on the official test split, written by :class:`PredictionsCallback`
(file format: :mod:`kdbias.schema.predictions`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from kdbias import runs
from kdbias.callbacks.base import run_of
from kdbias.modules.base import ClassifierModule
from kdbias.runs import atomic_write_bytes, checkpoint_entry
from kdbias.schema.predictions import LAST_WEIGHTS, PREDICTIONS_FILE, Predictions, encode_predictions, read_predictions
from kdbias.teacher import FrozenTeacher

__all__ = ["LAST_WEIGHTS", "PREDICTIONS_FILE", "Predictions", "PredictionsCallback", "read_predictions"]


def _logits(output: Any) -> Tensor | None:
    """The class scores of a module's output: the tensor, or the first of a tuple."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output if isinstance(output, Tensor) and output.ndim == 2 else None


class PredictionsCallback(Callback):
    """Keep the predicted class of every official test image, for the student and (when
    the module holds a :class:`~kdbias.teacher.FrozenTeacher` with a head) its teacher,
    and write them to the run's ``test_predictions.npz`` (:attr:`kdbias.runs.Run.predictions` of
    ``trainer.log_dir``) at the end of each test pass.

    The outputs are taken where the module computes them (PyTorch forward hooks on the
    LightningModule and on the teacher, registered for the test pass only): no extra
    forward pass. The runner tests the last weights, then the selected checkpoint: each
    pass rewrites the file atomically (:func:`kdbias.runs.atomic_write_bytes`), so the last
    pass wins, and the file records which weights it holds (``checkpoint``, from
    ``trainer.ckpt_path``). Written by global rank 0 with one device only: under several
    devices the distributed sampler splits and pads the test set, and nothing is written
    (a warning says so).
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._student: list[Tensor] = []
        self._teacher: list[Tensor] = []
        self._rows: dict[str, list[Tensor]] = {}
        self.written: Path | None = None
        self.run: runs.Run | None = None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run = run_of(trainer)  # every rank: trainer.log_dir broadcasts

    @override
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hooks()
        self._rows = {"label": [], "pred": [], "teacher_pred": []}
        self._student.clear()
        self._teacher.clear()
        if trainer.world_size > 1:
            return
        self._handles.append(pl_module.register_forward_hook(lambda m, i, out: self._keep(self._student, out)))
        teacher = pl_module.teacher if isinstance(pl_module, ClassifierModule) else None  # held outside the tree
        if isinstance(teacher, FrozenTeacher) and teacher.has_head:
            self._handles.append(teacher.register_forward_hook(lambda m, i, out: self._keep(self._teacher, out)))

    @staticmethod
    def _keep(store: list[Tensor], output: Any) -> None:
        logits = _logits(output)
        if logits is not None:
            store.append(logits.detach().argmax(dim=1))

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
        if not self._handles:
            return
        labels = batch[1]
        student = self._student[-1] if self._student else None
        if student is None or student.shape[0] != labels.shape[0]:
            raise RuntimeError("PredictionsCallback saw no student logits for a test batch (test_step must call self)")
        self._rows["label"].append(labels.detach().cpu())
        self._rows["pred"].append(student.cpu())
        if self._teacher and self._teacher[-1].shape[0] == labels.shape[0]:
            self._rows["teacher_pred"].append(self._teacher[-1].cpu())
        self._student.clear()
        self._teacher.clear()

    @override
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        handles = bool(self._handles)
        self._remove_hooks()
        if trainer.world_size > 1:
            warnings.warn("PredictionsCallback writes nothing when testing on several devices", stacklevel=2)
            return
        if not handles or not self._rows["label"] or self.run is None or not trainer.is_global_zero:
            return
        label = torch.cat(self._rows["label"]).numpy()
        teacher = torch.cat(self._rows["teacher_pred"]).numpy() if self._rows["teacher_pred"] else None
        if teacher is not None and len(teacher) != len(label):
            teacher = None
        pred = torch.cat(self._rows["pred"]).numpy()
        ckpt = trainer.ckpt_path
        checkpoint = checkpoint_entry(ckpt) if ckpt else LAST_WEIGHTS
        predictions = Predictions(np.arange(len(label)), label, pred, pred == label, checkpoint, teacher)
        path = self.run.predictions
        atomic_write_bytes(path, encode_predictions(predictions))
        self.written = path

    @override
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def summary_items(self) -> dict[str, Any]:
        """``{"test_predictions": "test_predictions.npz"}`` once written
        (a :class:`~kdbias.schema.SummaryContributor`)."""
        return {"test_predictions": PREDICTIONS_FILE} if self.written is not None else {}
