"""A student trained against a frozen teacher (:class:`~kdbias.teacher.FrozenTeacher`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdbias.modules.base import ClassifierModule
from kdbias.modules.optim import Optimization
from kdbias.teacher import FrozenTeacher

__all__ = ["DistillationModule"]


class DistillationModule(ClassifierModule):
    """Base of the distillation modules: a student plus a :class:`~kdbias.teacher.FrozenTeacher`.

    The teacher is the submodule ``teacher``; it is frozen (no gradients, always eval),
    never saved in or expected from this module's ``state_dict`` (checkpoints hold the
    student; the teacher is rebuilt from its source on load), left out of the optimiser,
    and listed in DDP's ``_ddp_params_and_buffers_to_ignore`` so that DDP neither buckets
    nor broadcasts it. ``teacher=None`` gives a student that evaluates and predicts but
    cannot be trained (a checkpoint reloaded without its teacher).
    """

    def __init__(
        self,
        arch: str,
        teacher: FrozenTeacher | None,
        num_classes: int,
        dataset: str,
        pretrained: str | None,
        arch_kwargs: Mapping[str, Any] | None,
        optim: Optimization | Mapping[str, Any] | None,
        compile: bool | str,
    ) -> None:
        super().__init__(arch, num_classes, dataset, pretrained, arch_kwargs, optim, compile)
        if teacher is not None:
            self.teacher = teacher
            self._ddp_params_and_buffers_to_ignore = [
                f"teacher.{name}" for name, _ in (*teacher.named_parameters(), *teacher.named_buffers())
            ]
            if compile not in (False, None):
                teacher.compile(compile)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.teacher is None:
            raise ValueError(
                f"{type(self).__name__} has no teacher and cannot be trained; pass teacher=... (a checkpoint "
                "path, or the teacher's architecture and weights)."
            )
