"""Quality of a teacher without a classification head: weighted k-NN accuracy of its features."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from typing_extensions import override

from kdbias.analytics.knn import knn_accuracy
from kdbias.callbacks.base import AnalyticsCallback, eval_mode

__all__ = ["TeacherKNNCallback"]


class TeacherKNNCallback(AnalyticsCallback):
    """Weighted k-NN accuracy (DINO protocol) of the frozen teacher's embedding.

    Fills the research plan's Teacher Acc cell for a teacher with no classification head
    (CKADistillModule's DINOv2). Features: ``pl_module.teacher.embedding(x)`` (the
    :class:`~kdbias.teacher.FrozenTeacher`'s pooled features) for ``num_train`` fixed
    training images and ``num_test`` fixed images of the official *test* split (the split
    the other Teacher Acc figures come from; seeded subsets, unaugmented), under
    inference mode, eval mode; :func:`~kdbias.analytics.knn.knn_accuracy` with ``k`` and
    ``temperature``. The teacher is frozen, so it is measured once: at the first validation
    end after the sanity check (or the first epoch end if validation does not run); the
    value is kept in the checkpoint, so a resumed run does not measure again.

    Logs ``teacher/knn_acc``; ``summary_items()``: ``{"teacher_knn_acc": ..., "teacher_knn_images": test images
    scored}`` once measured (``teacher_acc`` is the test accuracy of a teacher with a head: the runner's).
    """

    def __init__(
        self,
        num_train: int = 5000,
        num_test: int = 1000,
        k: int = 20,
        temperature: float = 0.07,
        batch_size: int = 256,
        subset_seed: int = 0,
    ) -> None:
        super().__init__(every_n_epochs=1, subset_seed=subset_seed)
        if min(num_train, num_test, k, batch_size) < 1 or temperature <= 0:
            raise ValueError("num_train, num_test, k and batch_size must be >= 1 and temperature > 0")
        self.num_train, self.num_test, self.k = int(num_train), int(num_test), int(k)
        self.temperature, self.batch_size = float(temperature), int(batch_size)
        self.subsets = {"train": ("train", self.num_train), "test": ("test", self.num_test)}

    def _key_items(self) -> dict[str, Any]:
        return {"num_train": self.num_train, "num_val": self.num_test, "k": self.k}  # key kept: saved states

    @override
    def check_module(self, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "teacher", None) is None:
            raise TypeError(
                f"TeacherKNNCallback measures the teacher of a DistillationModule (e.g. CKADistillModule), "
                f"got {type(pl_module).__name__}, which has no teacher."
            )

    @override
    def due(self, trainer: L.Trainer) -> bool:
        return not trainer.sanity_checking and self.measured_step is None

    @override
    def measurements_left(self, trainer: L.Trainer) -> int:
        return 0 if self.measured_step is not None else 1

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.due(trainer):  # any validation end will do: the teacher does not change
            self.run_measurement(trainer, pl_module)

    def features(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> tuple[Tensor, Tensor]:
        feats, labels = [], []
        for images, y in self.chunks(name, self.batch_size, pl_module.device):
            feats.append(pl_module.teacher.embedding(images).float())
            labels.append(y)
        return torch.cat(feats), torch.cat(labels)

    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        with (
            torch.inference_mode(),
            eval_mode(pl_module, pl_module.teacher),  # the teacher lies outside the module tree
            trainer.precision_plugin.forward_context(),
        ):
            train_feats, train_labels = self.features(trainer, pl_module, "train")
            val_feats, val_labels = self.features(trainer, pl_module, "test")
        num_classes = getattr(pl_module, "num_classes", None)
        return knn_accuracy(
            train_feats,
            train_labels,
            val_feats,
            val_labels,
            k=self.k,
            temperature=self.temperature,
            num_classes=num_classes,
        )

    @override
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        acc = self.compute(trainer, pl_module)
        self.last = {"teacher_knn_acc": acc, "teacher_knn_images": int(len(self.subset("test")[1]))}
        return {"teacher/knn_acc": acc}

    @override
    def summary_items(self) -> dict[str, Any]:
        if "teacher_knn_acc" not in self.last:  # nothing until measured
            return {}
        return {key: self.last.get(key) for key in ("teacher_knn_acc", "teacher_knn_images")}
