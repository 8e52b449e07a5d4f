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

    The teacher is held *outside* the module tree (a plain attribute, read through the
    ``teacher`` property), so everything that walks this module's submodules leaves it
    alone by construction: ``state_dict`` and checkpoints (student only; the teacher is
    rebuilt from its source on load), the optimiser, DDP (which wraps this module and
    buckets and broadcasts only what is in its tree), the model summary and ``train()``.
    The teacher follows the device (and floating dtype) of the images it is given, and is
    moved with the module at the start of every fit, validation, test and prediction.
    ``teacher=None`` gives a student that evaluates and predicts but cannot be trained (a
    checkpoint reloaded without its teacher).
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
        self._frozen: tuple[FrozenTeacher, ...] = () if teacher is None else (teacher.compiled(compile),)

    @property
    def teacher(self) -> FrozenTeacher | None:
        """The frozen teacher, or ``None``."""
        return self._frozen[0] if self._frozen else None

    def set_teacher(self, teacher: FrozenTeacher | None) -> None:
        """Attach (or, with ``None``, detach) the frozen teacher, e.g. after ``load_from_checkpoint``."""
        self._frozen = () if teacher is None else (teacher,)

    def _move_teacher(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)

    def on_fit_start(self) -> None:
        self._move_teacher()

    def on_validation_start(self) -> None:
        self._move_teacher()

    def on_test_start(self) -> None:
        self._move_teacher()

    def on_predict_start(self) -> None:
        self._move_teacher()

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.teacher is None:
            raise ValueError(
                f"{type(self).__name__} has no teacher and cannot be trained; pass teacher=... (a checkpoint "
                "path, or the teacher's architecture and weights)."
            )
