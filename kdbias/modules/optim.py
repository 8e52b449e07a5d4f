"""Optimisation settings shared by every kdbias LightningModule, and the optimiser they build."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from kdbias.modules.schedule import WarmupCosine

__all__ = ["Optimization", "build_optimizer"]


@dataclass(frozen=True)
class Optimization:
    """Optimiser and learning-rate schedule of a run (the research plan's student recipe by default).

    Args:
        optimizer: ``"adamw"`` (decoupled weight decay) or ``"sgd"`` (Nesterov momentum).
        lr: peak learning rate, reached after the warm-up (> 0).
        weight_decay: AdamW's decoupled decay or SGD's L2 coefficient (>= 0); never applied
            to norms, biases, position embeddings or class tokens.
        momentum: SGD momentum in [0, 1).
        warmup_epochs: linear warm-up length in epochs (>= 0, fractions allowed).
        min_lr_ratio: final learning rate as a fraction of ``lr`` at the end of the cosine, in [0, 1].
        label_smoothing: label smoothing of the cross-entropy, in [0, 1).
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_epochs: float = 5.0
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        checks = (
            (self.optimizer in ("adamw", "sgd"), "optimizer", "'adamw' or 'sgd'"),
            (self.lr > 0, "lr", "> 0"),
            (self.weight_decay >= 0, "weight_decay", ">= 0"),
            (0 <= self.momentum < 1, "momentum", "in [0, 1)"),
            (self.warmup_epochs >= 0, "warmup_epochs", ">= 0"),
            (0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "in [0, 1]"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)"),
        )
        for ok, name, valid in checks:
            if not ok:
                raise ValueError(f"optim.{name} must be {valid}, got {getattr(self, name)!r}")

    @classmethod
    def of(cls, value: Optimization | Mapping[str, Any] | None) -> Optimization:
        """An ``Optimization`` from itself, a mapping of its fields (a checkpoint's
        hyperparameters) or ``None`` (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls(**value)
        raise TypeError(f"optim must be an Optimization or a dict of its fields, got {type(value).__name__}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_optimizer(
    settings: Optimization, modules: list[nn.Module], total_steps: int, max_epochs: int, fused: bool = False
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser over ``modules`` and its per-step schedule (linear warm-up, cosine decay).

    ``total_steps``: optimiser steps of the whole run; the warm-up lasts
    ``total_steps * warmup_epochs / max_epochs`` steps.
    """
    groups = []
    for module in modules:
        skip = module.no_weight_decay() if hasattr(module, "no_weight_decay") else ()
        groups += param_groups_weight_decay(module, settings.weight_decay, no_weight_decay_list=skip)
    extra = {"fused": True} if fused else {}
    if settings.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=settings.lr, momentum=settings.momentum, nesterov=settings.momentum > 0, **extra
        )
    else:
        optimizer = torch.optim.AdamW(groups, lr=settings.lr, **extra)
    total_steps = max(1, int(total_steps))
    warmup_steps = int(total_steps * settings.warmup_epochs / max(1, max_epochs))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(warmup_steps, total_steps, settings.min_lr_ratio)
    )
    return optimizer, schedule
