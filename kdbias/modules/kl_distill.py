"""Soft-label (Hinton) distillation from a CNN teacher: EXP-1 and EXP-2."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from kdbias.losses import hard_distillation_loss, soft_kl_loss
from kdbias.modules.distill_base import DistillationModule, teacher_deferred
from kdbias.modules.optim import Optimization
from kdbias.schema import DISTILL_TOKENS
from kdbias.teacher import (
    CheckpointTeacher,
    FrozenTeacher,
    PretrainedTeacher,
    RandomTeacher,
    TeacherSpec,
    teacher_spec,
)

__all__ = ["KLDistillModule"]


class KLDistillModule(DistillationModule):
    """Student trained with ``(1 - alpha) * CE + alpha * soft_kl_loss(student, teacher, tau)``.

    Args:
        arch: the student network: kdbias model name (``deit_tiny_p4``, ...) or any timm model name.
        teacher: a spec, :class:`~kdbias.teacher.CheckpointTeacher` (a TeacherModule
            checkpoint, read with ``weights_only=True``), :class:`~kdbias.teacher.PretrainedTeacher`
            or :class:`~kdbias.teacher.RandomTeacher` (an untrained seeded network: the
            random-teacher control), given as ``class_path``/``init_args`` on the command line; the shorthand of a
            checkpoint path (or ``auto``, which the experiment scripts resolve); a ready
            :class:`~kdbias.teacher.FrozenTeacher` or trained TeacherModule; or ``None``
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
    ``val/teacher_acc`` (once: the first validation of the process) and ``test/teacher_acc``
    (the teacher on the same images) besides the base module's tags.
    """

    def __init__(
        self,
        arch: str = "deit_tiny_p4",
        teacher: str | CheckpointTeacher | PretrainedTeacher | RandomTeacher | None = None,
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
        KLDistillModule.check_arguments(distill_token=distill_token, alpha=alpha, temperature=temperature)
        self._distill_token = distill_token
        spec = teacher_spec(teacher)
        if teacher_deferred():  # load_from_checkpoint: the student alone (attach_teacher builds it)
            frozen = None
        else:
            frozen = spec.build(dataset, num_classes) if isinstance(spec, TeacherSpec) else spec
        super().__init__(arch, frozen, num_classes, dataset, pretrained, arch_kwargs, optim, compile)
        self.save_hyperparameters(ignore=["teacher"])
        self.hparams["teacher"] = _teacher_hparam(teacher, spec)
        self.plain_hparams()
        self.teacher_val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self._teacher_val_measured = False  # see validation_step
        self.teacher_test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)

    @classmethod
    def check_arguments(cls, **arguments: Any) -> None:
        super().check_arguments(**arguments)
        token, alpha = arguments.get("distill_token"), arguments.get("alpha", 0.5)
        temperature = arguments.get("temperature", 1.0)
        if token not in DISTILL_TOKENS:
            raise ValueError(f"distill_token must be one of {DISTILL_TOKENS}, got {token!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")

    def method_record(self) -> dict[str, Any]:
        hp = self.hparams
        return {
            "loss": "soft_kl",
            "ce_weight": 1.0 - hp.alpha,
            "temperature": hp.temperature,
            "alpha": hp.alpha,
            "distill_token": hp.distill_token,
        }

    @classmethod
    def build_teacher(cls, hparams: Mapping[str, Any]) -> FrozenTeacher:
        """The teacher of the ``teacher`` hyperparameter (a checkpoint path or a spec's config)."""
        spec = teacher_spec(hparams.get("teacher"))
        if spec is None:
            raise ValueError(
                "this student's hyperparameters name no teacher (it was given as an object, or none); attach one "
                "with module.set_teacher(FrozenTeacher.from_checkpoint(path, dataset, num_classes))."
            )
        return spec.build(hparams["dataset"], hparams["num_classes"]) if isinstance(spec, TeacherSpec) else spec

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
            metric.update(self.teacher.logits(self.dataset_normalised(images)), labels)
            self.log(f"{split}/teacher_acc", metric, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Also ``val/teacher_acc``, in the first validation of a process only: the teacher is
        frozen and the held-out images fixed, so its accuracy is measured (and logged) once."""
        super().validation_step(batch, batch_idx)
        if not self._teacher_val_measured:
            self._teacher_accuracy(batch, "val", self.teacher_val_acc)

    def on_validation_epoch_end(self) -> None:
        trainer = self.attached_trainer()
        if trainer is not None and not trainer.sanity_checking:
            self._teacher_val_measured = True

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        self._teacher_accuracy(batch, "test", self.teacher_test_acc)


def _teacher_hparam(given: Any, spec: Any) -> str | dict[str, Any] | None:
    """The teacher as a plain hyperparameter: the path given, a spec's config, else ``None``."""
    if isinstance(given, (str, Path)):
        return str(given)
    return spec.as_config() if isinstance(spec, TeacherSpec) else None


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
