"""Generalisation gap: the student on fixed training images versus the validation split."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from typing_extensions import override

from kdbias.callbacks.base import AnalyticsCallback, eval_mode

__all__ = ["GeneralisationGapCallback"]


class GeneralisationGapCallback(AnalyticsCallback):
    """Train-versus-validation gap of accuracy and cross-entropy, measured as validation is.

    Train side: ``pl_module(images)`` on ``num_images`` fixed training images (seeded
    subset, *unaugmented*, no CutMix), in eval mode and under the validation step's
    precision context, chunks of ``batch_size``: accuracy and mean CE over the subset.
    Validation side: the epoch's reduced ``val/acc`` and ``val/loss`` from
    ``trainer.callback_metrics`` (hence ``on_validation_end``: in
    ``on_validation_epoch_end`` they are not reduced yet). No validation, no measurement.

    Logs ``gen_gap/acc`` = train acc - val acc, ``gen_gap/loss`` = val loss - train loss
    (both positive when the model fits its training data better), ``gen_gap/train_acc``
    and ``gen_gap/train_loss``. ``summary_items()``: ``gen_gap_acc``, ``gen_gap_loss``.
    """

    measure_without_validation = False  # the gap needs the epoch's val metrics

    def __init__(
        self, every_n_epochs: int = 5, num_images: int = 2048, batch_size: int = 256, subset_seed: int = 0
    ) -> None:
        super().__init__(every_n_epochs, subset_seed)
        if num_images < 1 or batch_size < 1:
            raise ValueError(f"num_images and batch_size must be >= 1, got {num_images} and {batch_size}")
        self.num_images, self.batch_size = int(num_images), int(batch_size)
        self.subsets = {"train": ("train", self.num_images)}

    def _key_items(self) -> dict[str, Any]:
        return {"num_images": self.num_images}

    @torch.no_grad()
    def train_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[float, float]:
        """``(accuracy, mean CE)`` of ``pl_module`` on the fixed training images."""
        correct = torch.zeros((), dtype=torch.float64, device=pl_module.device)
        loss = torch.zeros((), dtype=torch.float64, device=pl_module.device)
        total = 0
        with eval_mode(pl_module), trainer.precision_plugin.val_step_context():
            for images, labels in self.chunks("train", self.batch_size, pl_module.device):
                logits = pl_module(images).float()
                loss += F.cross_entropy(logits, labels, reduction="sum").double()
                correct += (logits.argmax(dim=-1) == labels).sum()
                total += labels.shape[0]
        return (correct / total).item(), (loss / total).item()

    @override
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        metrics = trainer.callback_metrics
        if "val/acc" not in metrics or "val/loss" not in metrics:
            return {}
        val_acc, val_loss = float(metrics["val/acc"]), float(metrics["val/loss"])
        train_acc, train_loss = self.train_metrics(trainer, pl_module)
        gap_acc, gap_loss = train_acc - val_acc, val_loss - train_loss
        self.last = {"gen_gap_acc": gap_acc, "gen_gap_loss": gap_loss}
        return {
            "gen_gap/acc": gap_acc,
            "gen_gap/loss": gap_loss,
            "gen_gap/train_acc": train_acc,
            "gen_gap/train_loss": train_loss,
        }

    @override
    def summary_items(self) -> dict[str, Any]:
        return {"gen_gap_acc": self.last.get("gen_gap_acc"), "gen_gap_loss": self.last.get("gen_gap_loss")}
