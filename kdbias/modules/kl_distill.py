"""Soft-label (Hinton) distillation from a CNN teacher: EXP-1 and EXP-2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from kdbias.losses import hard_distillation_loss, soft_kl_loss
from kdbias.modules.distill_base import DistillationModule
from kdbias.modules.teacher import TeacherModule, load_teacher_checkpoint

DISTILL_TOKENS = (None, "soft", "hard")


class KLDistillModule(DistillationModule):
    """Student trained with ``(1 - alpha) * CE + alpha * soft_kl_loss(student, teacher, tau)``.

    Args:
        student: architecture name (``deit_tiny_p4``, ``deit_small_p4``, ...).
        teacher: path of a :class:`TeacherModule` checkpoint, or a ``TeacherModule``.
        temperature: tau of the soft targets; the KD term is scaled by tau^2 (batchmean).
        alpha: weight of the KD term; ``1 - alpha`` weighs the CE against the (possibly
            CutMix/MixUp-mixed) targets.
        distill_token: ``None`` (default) or DeiT's distillation token, trained against the
            teacher's soft (``"soft"``) or arg-max (``"hard"``) labels while the class token
            learns from the CE; at evaluation the two heads' logits are averaged (timm).
        **kwargs: :class:`~kdbias.modules.base.ClassifierModule` arguments.

    The teacher sees the same augmented batch as the student, re-normalised to its own
    statistics by its input adapter, under inference mode (bf16 under bf16-mixed).
    Logs ``train/loss``, ``train/loss_ce``, ``train/loss_kd``, ``teacher/acc`` (on the
    validation split) besides the base module's tags.
    """

    def __init__(
        self,
        student: str = "deit_tiny_p4",
        teacher: str | Path | TeacherModule | None = None,
        temperature: float = 4.0,
        alpha: float = 0.5,
        distill_token: str | None = None,
        num_classes: int = 10,
        dataset: str = "cifar10",
        **kwargs: Any,
    ) -> None:
        if teacher is None:
            raise ValueError("KLDistillModule needs a teacher: a TeacherModule or the path of its checkpoint.")
        if distill_token not in DISTILL_TOKENS:
            raise ValueError(f"distill_token must be one of {DISTILL_TOKENS}, got {distill_token!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if isinstance(teacher, (str, Path)):
            teacher_module = load_teacher_checkpoint(teacher, num_classes=num_classes, dataset=dataset)
        else:
            teacher_module = teacher
            if teacher_module.num_classes != num_classes:
                raise ValueError(
                    f"The teacher predicts {teacher_module.num_classes} classes, the student {num_classes}."
                )
        super().__init__(student, teacher_module, num_classes=num_classes, dataset=dataset, **kwargs)
        self.hparams["teacher"] = str(teacher) if isinstance(teacher, (str, Path)) else None
        self.hparams["teacher_model"] = teacher_module.model_name
        if distill_token is not None:
            self.model = _with_distillation_token(self.model)
        self.teacher_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)

    @property
    def teacher_network(self) -> nn.Module:
        return self.teacher.model

    def teacher_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher.input_adapter(images)

    def training_losses(self, images: torch.Tensor, targets: torch.Tensor):
        teacher_logits = self.run_teacher(self.teacher, images)
        tau, alpha = self.hparams.temperature, self.hparams.alpha
        if self.hparams.distill_token is None:
            logits = self(images)
            ce = self.cross_entropy(logits, targets)
            kd = soft_kl_loss(logits, teacher_logits, tau)
        else:
            logits, dist_logits = self(images)
            ce = self.cross_entropy(logits, targets)
            kd = (soft_kl_loss(dist_logits, teacher_logits, tau) if self.hparams.distill_token == "soft"
                  else hard_distillation_loss(dist_logits, teacher_logits))
        loss = (1.0 - alpha) * ce + alpha * kd
        return {"loss": loss, "ce": ce, "kd": kd}, logits

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        images, labels = batch
        self.teacher_acc.update(self.run_teacher(self.teacher, images), labels)
        self.log("teacher/acc", self.teacher_acc, on_step=False, on_epoch=True)


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
