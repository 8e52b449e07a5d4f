"""A student trained against a frozen teacher (:class:`~kdbias.teacher.FrozenTeacher`)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

from kdbias.modules.base import ClassifierModule
from kdbias.modules.optim import Optimization
from kdbias.teacher import FrozenTeacher

__all__ = ["DistillationModule", "deferred_teacher", "teacher_deferred"]

_DEFERRED: contextvars.ContextVar[bool] = contextvars.ContextVar("kdbias_teacher_deferred", default=False)


@contextlib.contextmanager
def deferred_teacher() -> Iterator[None]:
    """Within this context, distillation modules are built without their teacher: the teacher
    arguments are kept as hyperparameters (nothing is read: no teacher checkpoint, no hub) and
    ``module.teacher`` is ``None`` until :meth:`DistillationModule.attach_teacher`."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def teacher_deferred() -> bool:
    """Whether a module built now defers its teacher (inside :func:`deferred_teacher`)."""
    return _DEFERRED.get()


class DistillationModule(ClassifierModule):
    """Base of the distillation modules: a student plus a :class:`~kdbias.teacher.FrozenTeacher`.

    The teacher is held *outside* the module tree (a plain attribute, read through the
    ``teacher`` property), so everything that walks this module's submodules leaves it
    alone by construction: ``state_dict`` and checkpoints (student only; the teacher is
    rebuilt from its source on load), the optimiser, DDP (which wraps this module and
    buckets and broadcasts only what is in its tree), the model summary and ``train()``.
    The teacher follows the device (and floating dtype) of the images it is given, and is
    moved with the module at the start of every fit, validation, test and prediction.
    ``teacher=None`` gives a student that evaluates and predicts but cannot be trained.

    **Reloading.** ``load_from_checkpoint(path)`` gives the student alone (``teacher`` is
    ``None``; nothing of the teacher is read: neither its checkpoint nor the hub) that
    evaluates and predicts; its ``hparams`` are the checkpoint's, the teacher's description
    included, and :meth:`attach_teacher` rebuilds that teacher when asked (to train on, or for
    ``val/teacher_acc``). ``load_from_checkpoint(path, teacher=...)`` builds the teacher given.
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

    @classmethod
    def build_teacher(cls, hparams: Mapping[str, Any]) -> FrozenTeacher:
        """The frozen teacher that saved hyperparameters describe (``teacher`` and the
        method's ``teacher_*``); ``ValueError`` when they name none. Override."""
        raise NotImplementedError

    def attach_teacher(self) -> FrozenTeacher:
        """Rebuild the teacher this module's ``hparams`` describe (for a student reloaded with
        ``load_from_checkpoint(path)``: the checkpoint's description), attach it (compiled
        like the student) and return it. Reads the teacher's checkpoint or weights now."""
        teacher = self.build_teacher(dict(self.hparams)).compiled(self.hparams.get("compile", False))
        self.set_teacher(teacher)
        return teacher

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool = True,
        **kwargs: Any,
    ):
        """:meth:`ClassifierModule.load_from_checkpoint`, built under :func:`deferred_teacher`
        unless ``teacher=...`` is given: the student alone, its ``hparams`` those saved (the
        teacher's description included); :meth:`attach_teacher` rebuilds that teacher."""
        with contextlib.nullcontext() if "teacher" in kwargs else deferred_teacher():
            return super().load_from_checkpoint(
                checkpoint_path,
                map_location=map_location,
                hparams_file=hparams_file,
                strict=strict,
                weights_only=weights_only,
                **kwargs,
            )

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
                "path, or the teacher's architecture and weights), or call module.attach_teacher() after "
                "load_from_checkpoint."
            )
