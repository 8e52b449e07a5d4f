"""Fidelity of a student to teachers on the official test split, once, on the selected checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from typing_extensions import override

from kdbias.analytics.fidelity import fidelity
from kdbias.callbacks.summary import SummaryCallback
from kdbias.teacher import FrozenTeacher

__all__ = ["FidelityCallback", "OWN"]

OWN = "own"  # reference name of the module's own teacher (pl_module.teacher)
TeacherSource = Callable[[], FrozenTeacher] | str


class FidelityCallback(Callback):
    """Top-1 agreement and ``KL(teacher || student)`` at tau = 1 (nats, mean over images;
    :func:`kdbias.analytics.fidelity.fidelity`) of the student against each teacher of
    ``teachers`` (``{key: loader}``; a loader returns a :class:`FrozenTeacher`, or is
    :data:`OWN` for ``pl_module.teacher``), on every image of the test pass of the selected
    checkpoint: the pass that tests ``best.ckpt`` (the held-out ``val/acc`` checkpoint), or the
    one that tests the last weights when there is none. Other test passes are not measured.

    Writes ``summary.json`` ``fidelity: {key: {"agreement", "kl"}}``; logs
    ``fidelity/agreement`` and ``fidelity/kl`` for ``primary`` and
    ``fidelity/<key>/agreement``, ``fidelity/<key>/kl`` for every key.
    """

    def __init__(self, teachers: Mapping[str, TeacherSource], primary: str | None = None) -> None:
        self.teachers = dict(teachers)
        self.primary = primary
        self._active: dict[str, FrozenTeacher] = {}
        self._logits: dict[str, list[torch.Tensor]] = {}
        self.results: dict[str, dict[str, float]] = {}

    @staticmethod
    def selected_pass(trainer: L.Trainer) -> bool:
        """Whether this test pass evaluates the run's selected checkpoint."""
        best = next(
            (
                c.best_model_path
                for c in trainer.checkpoint_callbacks
                if isinstance(c, ModelCheckpoint) and c.monitor == "val/acc" and c.best_model_path
            ),
            None,
        )
        tested = trainer.ckpt_path
        if best:
            return tested is not None and Path(tested).resolve() == Path(best).resolve()
        return tested is None

    @override
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._active, self._logits = {}, {}
        if not self.teachers or not self.selected_pass(trainer):
            return
        for key, source in self.teachers.items():
            teacher = pl_module.teacher if source == OWN else source()
            if teacher is None or not teacher.has_head:
                continue
            self._active[key] = teacher.to(pl_module.device)
            self._logits[key] = []
        if self._active:
            self._logits["student"] = []

    @override
    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if not self._active:
            return
        images = batch[0]
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            self._logits["student"].append(pl_module(images).float())
            for key, teacher in self._active.items():
                self._logits[key].append(teacher.logits(images).float())

    @override
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active:
            return
        gathered = {k: _gather(trainer, torch.cat(v)) for k, v in self._logits.items()}
        student = gathered.pop("student")
        self.results = {key: fidelity(student, logits) for key, logits in gathered.items()}
        for key, values in self.results.items():
            for name, value in values.items():
                pl_module.log(f"fidelity/{key}/{name}", value, rank_zero_only=True)
                if key == self.primary:
                    pl_module.log(f"fidelity/{name}", value, rank_zero_only=True)
        summary = next((c for c in trainer.callbacks if isinstance(c, SummaryCallback)), None)
        if summary is not None and summary.written:
            summary.update(fidelity=self.results)
        for key in [k for k, source in self.teachers.items() if source != OWN]:
            self._active.pop(key, None)  # loaded for this pass only
        self._active, self._logits = {}, {}


def _gather(trainer: L.Trainer, logits: torch.Tensor) -> torch.Tensor:
    """Every rank's ``[n, C]`` logits as one ``[N, C]`` tensor (itself on one process)."""
    if trainer.world_size <= 1:
        return logits.cpu()
    return trainer.strategy.all_gather(logits).flatten(0, 1).cpu()
