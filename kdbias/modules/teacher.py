"""Supervised training of any :func:`kdbias.models.build_model` classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdbias.modules.base import ClassifierModule


class TeacherModule(ClassifierModule):
    """Cross-entropy training: the CNN teachers and the vanilla-CE DeiT baseline.

    Loss: mean CE over the batch (optionally label-smoothed) against int labels or the
    mixed soft targets that :class:`kdbias.CIFARDataModule` returns with CutMix/MixUp.
    See :class:`~kdbias.modules.base.ClassifierModule` for the arguments and logged tags.

    Example::

        teacher = TeacherModule("resnet18_cifar", num_classes=10, optimizer="sgd", lr=0.1,
                                weight_decay=5e-4, dataset="cifar10")
    """

    def __init__(self, model: str = "resnet18_cifar", num_classes: int = 10, **kwargs: Any) -> None:
        super().__init__(model=model, num_classes=num_classes, **kwargs)

    def training_losses(self, images: torch.Tensor, targets: torch.Tensor):
        logits = self(images)
        return {"loss": self.cross_entropy(logits, targets)}, logits


def load_teacher_checkpoint(path: str | Path, num_classes: int | None = None, dataset: str | None = None) -> TeacherModule:
    """Load a :class:`TeacherModule` checkpoint as a frozen teacher (eval mode, no grads).

    Raises a ``FileNotFoundError`` for a missing file and a ``ValueError`` naming the cause
    and the fix for an unreadable file, a checkpoint of another kind of module, or a teacher
    trained for another number of classes or on another dataset.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Teacher checkpoint not found: {path}. Train a teacher first (e.g. "
            "`python experiments/teacher_resnet18.py`, add --smoke offline) or pass --teacher-ckpt "
            "with the path of its checkpoints/best.ckpt."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # pickle, zip and EOF errors all mean the same thing here
        raise ValueError(
            f"Teacher checkpoint {path} could not be read ({type(error).__name__}: {error}); it is corrupt "
            "or truncated. Point --teacher-ckpt at a complete best.ckpt/last.ckpt, or re-run the teacher."
        ) from error
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "state_dict" not in checkpoint or "model" not in hparams:
        raise ValueError(
            f"{path} is not a TeacherModule checkpoint (no hyper_parameters/state_dict). Pass the "
            "checkpoints/best.ckpt written by an experiments/teacher_*.py run."
        )
    if num_classes is not None and hparams["num_classes"] != num_classes:
        raise ValueError(
            f"Teacher checkpoint {path} predicts {hparams['num_classes']} classes but the student's dataset "
            f"has {num_classes}. Use a teacher trained on the same dataset (--dataset {hparams.get('dataset')})."
        )
    if dataset is not None and hparams.get("dataset") not in (None, dataset):
        raise ValueError(
            f"Teacher checkpoint {path} was trained on {hparams['dataset']!r}, the student runs on {dataset!r}. "
            "Train the teacher on the same dataset or pass a matching --teacher-ckpt."
        )
    init = {k: v for k, v in hparams.items() if k not in ("pretrained", "compile", "teacher")}
    teacher = TeacherModule(**init, pretrained=None, compile=False)
    teacher.load_state_dict(checkpoint["state_dict"])
    return freeze(teacher)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter; returns ``module``."""
    module.eval()
    module.requires_grad_(False)
    return module
