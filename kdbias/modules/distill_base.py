"""A student trained against a frozen teacher that is never part of the student's state."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from kdbias.modules.base import ClassifierModule
from kdbias.modules.teacher import freeze


class DistillationModule(ClassifierModule):
    """Base of the distillation modules: holds the frozen teacher.

    The teacher is kept outside the module tree on purpose: it is absent from
    ``parameters()`` (so from the optimiser and DDP's gradient buckets), from
    ``state_dict()`` (checkpoints hold the student only; the teacher is rebuilt from
    its checkpoint path or hub id on resume), and from ``train()``, which Lightning calls
    on the whole module after every validation loop — so it stays in eval mode for the
    whole fit. Device and dtype moves (``.to``, ``.cuda``) still reach it through ``_apply``.
    """

    def __init__(self, student: str, teacher_module: nn.Module, **kwargs: Any) -> None:
        super().__init__(model=student, **kwargs)
        object.__setattr__(self, "_teacher", freeze(teacher_module))
        if kwargs.get("compile"):
            self.teacher_network.compile()

    @property
    def teacher(self) -> nn.Module:
        return self._teacher

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - torch's signature
        super()._apply(fn, recurse)
        if "_teacher" in self.__dict__:
            self._teacher._apply(fn, recurse)
        return self

    def on_fit_start(self) -> None:
        self._teacher.eval()

    def on_train_epoch_start(self) -> None:
        self._teacher.eval()

    @property
    def teacher_network(self) -> nn.Module:
        """The teacher's timm network (what :mod:`kdbias.models` taps); override."""
        raise NotImplementedError

    def teacher_input(self, images: torch.Tensor) -> torch.Tensor:
        """Dataset-normalised ``images`` as the teacher network expects them; override."""
        raise NotImplementedError

    def student_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.input_adapter(images)

    def run_teacher(self, fn, *args: Any) -> Any:
        """``fn(*args)`` under inference mode; outputs cloned into ordinary tensors.

        Inference tensors cannot be saved for the student's backward pass, hence the
        clone (cheap next to the teacher's forward).
        """
        with torch.inference_mode():
            out = fn(*args)
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, out)
