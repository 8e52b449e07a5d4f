"""Soft-label (Hinton) distillation from a CNN teacher: EXP-1 and EXP-2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from kdbias.losses import hard_distillation_loss, soft_kl_loss
from kdbias.modules.base import ClassifierModule
from kdbias.modules.distill_base import DistillationModule
from kdbias.modules.optim import Optimization
from kdbias.teacher import FrozenTeacher

__all__ = ["KLDistillModule"]

DISTILL_TOKENS = (None, "soft", "hard")
RANDOM_TEACHER = "random:"  # teacher="random:resnet18_cifar": an untrained network seeded with RANDOM_TEACHER_SEED


class KLDistillModule(DistillationModule):
    """Student trained with ``(1 - alpha) * CE + alpha * soft_kl_loss(student, teacher, tau)``.

    Args:
        arch: the student network: kdbias model name (``deit_tiny_p4``, ...) or any timm model name.
        teacher: path of a :class:`~kdbias.modules.TeacherModule` checkpoint (read with
            ``weights_only=True``), ``"random:<arch>"`` (an untrained network seeded with
            :data:`~kdbias.teacher.RANDOM_TEACHER_SEED`: the random-teacher control), a
            :class:`~kdbias.teacher.FrozenTeacher`, or ``None``
            (evaluation only; see :class:`~kdbias.modules.distill_base.DistillationModule`).
        temperature: tau > 0 of the soft targets; the KD term is scaled by tau^2 (batchmean).
        alpha: weight of the KD term in [0, 1]; ``1 - alpha`` weighs the CE against the
            (possibly CutMix/MixUp-mixed) targets.
        distill_token: ``None`` (default) or DeiT's distillation token, trained against the
            teacher's soft (``"soft"``) or arg-max (``"hard"``) labels while the class token
            learns from the CE; at evaluation the two heads' logits are averaged (timm).
        num_classes, dataset, pretrained, arch_kwargs, optim, compile: as for
            :class:`~kdbias.modules.TeacherModule`.

    The teacher sees the same augmented batch as the student, re-normalised to its own
    statistics by its input adapter, under ``no_grad`` (bf16 under bf16-mixed); the loss is
    computed in float32. Logs ``train/loss``, ``train/loss_ce``, ``train/loss_kd``,
    ``val/teacher_acc`` and ``test/teacher_acc`` (the teacher on the same images) besides
    the base module's tags.
    """

    def __init__(
        self,
        arch: str = "deit_tiny_p4",
        teacher: str | None = None,
        temperature: float = 4.0,
        alpha: float = 0.5,
        distill_token: str | None = None,
        num_classes: int = 10,
        dataset: str = "cifar10",
        pretrained: str | None = None,
        arch_kwargs: dict[str, Any] | None = None,
        optim: Optimization = Optimization(),
        compile: bool | str = False,
    ) -> None:
        if distill_token not in DISTILL_TOKENS:
            raise ValueError(f"distill_token must be one of {DISTILL_TOKENS}, got {distill_token!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self._distill_token = distill_token
        super().__init__(
            arch, _teacher(teacher, dataset, num_classes), num_classes, dataset, pretrained, arch_kwargs, optim, compile
        )
        self.save_hyperparameters(ignore=["teacher"])
        self.hparams["teacher"] = str(teacher) if isinstance(teacher, (str, Path)) else None
        self.plain_hparams()
        self.teacher_val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.teacher_test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)

    def build_network(self, name: str, num_classes: int, pretrained: str | None, kwargs: dict[str, Any]) -> nn.Module:
        network = super().build_network(name, num_classes, pretrained, kwargs)
        return network if self._distill_token is None else _with_distillation_token(network)

    def training_losses(self, images: torch.Tensor, targets: torch.Tensor):
        teacher_logits = self.teacher.logits(images)
        tau, alpha = self.hparams.temperature, self.hparams.alpha
        if self.hparams.distill_token is None:
            logits = self(images)
            ce = self.cross_entropy(logits, targets)
            kd = soft_kl_loss(logits, teacher_logits, tau)
        else:
            logits, dist_logits = self(images)
            ce = self.cross_entropy(logits, targets)
            kd = (
                soft_kl_loss(dist_logits, teacher_logits, tau)
                if self.hparams.distill_token == "soft"
                else hard_distillation_loss(dist_logits, teacher_logits)
            )
        loss = (1.0 - alpha) * ce + alpha * kd
        return {"loss": loss, "ce": ce, "kd": kd}, logits

    def _teacher_accuracy(self, batch: tuple[torch.Tensor, torch.Tensor], split: str, metric: MulticlassAccuracy):
        if self.teacher is not None:
            images, labels = batch
            metric.update(self.teacher.logits(images), labels)
            self.log(f"{split}/teacher_acc", metric, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self._teacher_accuracy(batch, "val", self.teacher_val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        self._teacher_accuracy(batch, "test", self.teacher_test_acc)


def _teacher(teacher: Any, dataset: str, num_classes: int) -> FrozenTeacher | None:
    """A :class:`FrozenTeacher` from a checkpoint path or a teacher module; ``None`` stays ``None``."""
    if teacher is None or isinstance(teacher, FrozenTeacher):
        return teacher
    if isinstance(teacher, str) and teacher.startswith(RANDOM_TEACHER):  # "random:<arch>": untrained, seeded
        return FrozenTeacher.from_pretrained(teacher[len(RANDOM_TEACHER) :], None, dataset, num_classes=num_classes)
    if isinstance(teacher, (str, Path)):
        if str(teacher) == "auto":
            raise ValueError(
                "teacher='auto' is resolved by the experiment scripts (the selected checkpoint of the teacher run); "
                "pass the path of a TeacherModule checkpoint."
            )
        return FrozenTeacher.from_checkpoint(teacher, dataset=dataset, num_classes=num_classes)
    if isinstance(teacher, ClassifierModule):
        return FrozenTeacher.from_module(teacher)
    raise TypeError(
        f"teacher must be a checkpoint path, a FrozenTeacher or a TeacherModule, got {type(teacher).__name__}"
    )


def _with_distillation_token(vit: nn.Module) -> nn.Module:
    """Rebuild a timm ViT as DeiT's distilled variant (extra token and head), same config."""
    distilled = timm.create_model(
        "deit_tiny_distilled_patch16_224",
        img_size=vit.patch_embed.img_size,
        patch_size=vit.patch_embed.patch_size,
        embed_dim=vit.embed_dim,
        depth=len(vit.blocks),
        num_heads=vit.blocks[0].attn.num_heads,
        num_classes=vit.num_classes,
        drop_path_rate=vit.blocks[-1].drop_path1.drop_prob if hasattr(vit.blocks[-1].drop_path1, "drop_prob") else 0.0,
    )
    distilled.set_distilled_training(True)
    return distilled
