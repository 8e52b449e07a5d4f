"""A linear probe as a teacher: a frozen pretrained backbone and a linear head trained with CE."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdbias.models import model_input_stats
from kdbias.models.input_adapter import InputAdapter
from kdbias.modules.optim import Optimization
from kdbias.modules.teacher import TeacherModule

__all__ = ["ProbeTeacherModule"]


class ProbeTeacherModule(TeacherModule):
    """Linear probe of a frozen backbone (``teacher_dinov2_probe``: DINOv2-S/14 + a linear head).

    Only the head (``model.get_classifier()``, a ``Linear(D, num_classes)`` on the CLS
    embedding) is trained; every other parameter has ``requires_grad=False`` and the backbone's
    features are computed under ``no_grad`` on every batch (the augmented training images, so
    the probe sees what a student sees; no feature cache). Images are resized on the device to
    ``arch_kwargs["img_size"]`` (the side :class:`~kdbias.teacher.FrozenTeacher` resizes to
    when the checkpoint is loaded as a teacher). Its checkpoints are TeacherModule checkpoints:
    ``model.*`` holds the backbone and the head.

    Args: as :class:`~kdbias.modules.TeacherModule`; ``arch`` defaults to ``dinov2_vits14_probe``
    and ``pretrained`` to ``"hub"`` (``None``: random backbone, offline smoke runs only).
    """

    def __init__(
        self,
        arch: str = "dinov2_vits14_probe",
        num_classes: int = 10,
        dataset: str = "cifar10",
        pretrained: str | None = "hub",
        arch_kwargs: dict[str, Any] | None = None,
        optim: Optimization = Optimization(),
        compile: bool | str = False,
    ) -> None:
        super().__init__(arch, num_classes, dataset, pretrained, arch_kwargs, optim, compile)
        self.model.requires_grad_(False)
        self.head.requires_grad_(True)
        stats = model_input_stats(arch, pretrained) or (None, None)
        size = (arch_kwargs or {}).get("img_size")
        self.input_adapter = InputAdapter(self.data_mean, self.data_std, *stats, size)

    @property
    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def trainable_modules(self) -> list[nn.Module]:
        return [self.head]

    def training_losses(self, images: torch.Tensor, targets: torch.Tensor):
        with torch.no_grad():  # the frozen backbone: no activations kept for backward
            x = self.student_input(images)
            features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        logits = self.head(features)
        return {"loss": self.cross_entropy(logits, targets)}, logits
