"""Supervised training of any :func:`kdbias.models.build_model` classifier."""

from __future__ import annotations

from typing import Any

import torch

from kdbias.modules.base import ClassifierModule
from kdbias.modules.optim import Optimization

__all__ = ["TeacherModule"]


class TeacherModule(ClassifierModule):
    """Cross-entropy training: the CNN teachers and the vanilla-CE DeiT baseline.

    Loss: mean CE over the batch (optionally label-smoothed) against int labels or the
    mixed soft targets that :class:`kdbias.CIFARDataModule` returns with CutMix/MixUp.
    See :class:`~kdbias.modules.base.ClassifierModule` for the logged tags.

    Args:
        arch: the network: a kdbias model name (``resnet18_cifar``, ``convnextv2_tiny_cifar``,
            ``deit_tiny_p4``, ...) or any timm model name.
        num_classes: classes of the head.
        dataset: dataset whose statistics the batches are normalised with.
        pretrained: ``None`` (random init), ``"hub"`` or a local weights file.
        arch_kwargs: extra timm arguments (``drop_path_rate``, ``img_size``, ``patch_size``, ...).
        optim: optimiser and schedule (:class:`~kdbias.modules.optim.Optimization`).
        compile: ``torch.compile`` the network's forward (``True``, or a backend name).

    Example::

        teacher = TeacherModule("resnet18_cifar", num_classes=10, dataset="cifar10",
                                optim=Optimization("sgd", lr=0.1, weight_decay=5e-4))
    """

    def __init__(
        self,
        arch: str = "resnet18_cifar",
        num_classes: int = 10,
        dataset: str = "cifar10",
        pretrained: str | None = None,
        arch_kwargs: dict[str, Any] | None = None,
        optim: Optimization = Optimization(),
        compile: bool | str = False,
    ) -> None:
        super().__init__(arch, num_classes, dataset, pretrained, arch_kwargs, optim, compile)
        self.save_hyperparameters()
        self.plain_hparams()

    def training_losses(self, images: torch.Tensor, targets: torch.Tensor):
        logits = self(images)
        return {"loss": self.cross_entropy(logits, targets)}, logits
