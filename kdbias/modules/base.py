"""Shared wiring of every kdbias LightningModule: model, optimiser, schedule, metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from kdbias.data import dataset_stats
from kdbias.models import build_model, is_vit, model_input_stats
from kdbias.modules.input_adapter import InputAdapter
from kdbias.modules.schedule import WarmupCosine

OPTIMIZERS = ("sgd", "adamw")


def hard_labels(targets: torch.Tensor) -> torch.Tensor:
    """Class indices ``[B]`` from int labels ``[B]`` or mixed (CutMix/MixUp) targets ``[B, C]``."""
    return targets.argmax(dim=-1) if targets.ndim == 2 else targets


class ClassifierModule(L.LightningModule):
    """A classifier built by :func:`kdbias.models.build_model`, trained by subclasses.

    Subclasses implement :meth:`training_losses`; this class owns the model, the input
    re-normalisation, the optimiser (SGD or AdamW, no weight decay on norms, biases and
    position embeddings), the per-step schedule (linear warm-up, cosine decay) and the
    accuracy metrics. Batches are ``(images, targets)``: images ``[B, 3, H, W]`` normalised
    with the dataset's statistics, targets int ``[B]`` or mixed soft targets ``[B, C]``.

    Logged: ``train/loss``, ``train/loss_<part>`` for every loss component, ``train/acc``
    (against the dominant class of mixed targets), ``val/loss``, ``val/acc``.
    """

    def __init__(
        self,
        model: str = "deit_tiny_p4",
        num_classes: int = 10,
        dataset: str = "cifar10",
        pretrained: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: str = "adamw",
        lr: float = 5e-4,
        weight_decay: float = 0.05,
        momentum: float = 0.9,
        warmup_epochs: float = 5.0,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.0,
        compile: bool = False,
    ) -> None:
        """See the class docstring; ``compile=True`` compiles the model's forward in place
        (``nn.Module.compile``: state-dict keys unchanged)."""
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}.")
        # Collected from the whole __init__ chain, so subclasses' arguments land here too;
        # a teacher passed as a module is not a hyperparameter (its checkpoint path is).
        self.save_hyperparameters(ignore=["teacher", "teacher_module"])
        self.model_name = model
        self.num_classes = num_classes
        self.model = build_model(model, num_classes=num_classes, pretrained=pretrained, **(model_kwargs or {}))
        data_mean, data_std = dataset_stats(dataset)
        self.data_mean: Sequence[float] = data_mean
        self.data_std: Sequence[float] = data_std
        model_stats = model_input_stats(model) or (None, None)
        self.input_adapter = InputAdapter(data_mean, data_std, *model_stats)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.last_losses: dict[str, torch.Tensor] = {}
        # NHWC convolutions are faster on tensor cores; transformers gain nothing from it.
        self.channels_last = not is_vit(self.model)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile:
            self.model.compile()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for dataset-normalised ``images``."""
        x = self.input_adapter(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    # -- training -------------------------------------------------------------------
    def training_losses(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Return ``({"loss": total, part: value, ...}, student logits)``; override."""
        raise NotImplementedError

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean CE over the batch against int or soft targets, with label smoothing, fp32."""
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.hparams.get("label_smoothing", 0.0))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses, logits = self.training_losses(images, targets)
        total = losses["loss"]
        self.last_losses = {name: value.detach() for name, value in losses.items()}  # read by NonFiniteGuard
        self.train_acc.update(logits.detach(), hard_labels(targets))
        if self.logging_step():
            for name, value in losses.items():
                self.log("train/loss" if name == "loss" else f"train/loss_{name}", value.detach(),
                         on_step=True, on_epoch=False)
        return total

    def logging_step(self) -> bool:
        """Whether this step's scalars reach the logger (``log_every_n_steps``): each
        ``self.log`` costs host time, so steps that would not be written skip it."""
        trainer = self._trainer
        every = trainer.log_every_n_steps if trainer is not None else 1
        return (self.global_step + 1) % max(1, every) == 0  # Lightning's own rule

    def on_train_epoch_end(self) -> None:
        self.log("train/acc", self.train_acc.compute(), sync_dist=False)
        self.train_acc.reset()

    # -- validation -----------------------------------------------------------------
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_acc.update(logits, labels)
        loss = F.cross_entropy(logits.float(), labels)
        self.log("val/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=labels.shape[0])
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True)

    # -- optimisation ---------------------------------------------------------------
    def trainable_modules(self) -> list[nn.Module]:
        """Modules whose parameters the optimiser updates (the student; extra heads in subclasses)."""
        return [self.model]

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = []
        for module in self.trainable_modules():
            skip = module.no_weight_decay() if hasattr(module, "no_weight_decay") else ()
            groups += param_groups_weight_decay(module, hp.weight_decay, no_weight_decay_list=skip)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=True, **fused)
        else:
            optimizer = torch.optim.AdamW(groups, lr=hp.lr, **fused)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        max_epochs = max(1, self.trainer.max_epochs or 1)
        warmup_steps = int(total_steps * hp.warmup_epochs / max_epochs)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, WarmupCosine(warmup_steps, total_steps, hp.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
