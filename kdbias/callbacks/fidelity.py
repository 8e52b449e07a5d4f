"""Fidelity of a student to teachers on the official test split, once, on the selected checkpoint.

Per-image values go to ``<run>/fidelity_per_image.npz`` (:attr:`kdbias.runs.Run.fidelity`; NumPy
``.npz``, no pickled object; read with :func:`kdbias.schema.fidelity.read_fidelity_images`), so the
report's intervals carry the test set's own sampling error as its accuracy intervals do: for each
teacher key ``k``, ``agreement.<k>`` bool ``[N]`` and ``kl.<k>`` float64 ``[N]`` (nats), in the
order of the official test split (position 0..N-1). Written with one device only (as
``test_predictions.npz``); keys measured later (:mod:`kdbias.controls`) are merged into the file.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from typing_extensions import override

from kdbias import runs
from kdbias.analytics.fidelity import per_image_fidelity
from kdbias.callbacks.base import run_of
from kdbias.runs import atomic_write_bytes
from kdbias.schema import UnreadableFile
from kdbias.schema.fidelity import FIDELITY_FILE, read_fidelity_images
from kdbias.teacher import FrozenTeacher

__all__ = ["FIDELITY_FILE", "FidelityCallback", "OWN", "read_fidelity_images"]


def _write_fidelity_images(path: Path, values: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Merge ``{key: (agreement [N], kl [N])}`` into the fidelity file ``path`` (a run's
    :attr:`~kdbias.runs.Run.fidelity`)."""
    arrays: dict[str, np.ndarray] = {}
    if path.is_file():
        try:
            for key, old in read_fidelity_images(path).items():
                arrays[f"agreement.{key}"], arrays[f"kl.{key}"] = old["agreement"], old["kl"]
        except UnreadableFile:
            arrays = {}  # a torn file is replaced
    for key, (agree, kl) in values.items():
        arrays[f"agreement.{key}"] = agree.cpu().numpy().astype(bool)
        arrays[f"kl.{key}"] = kl.cpu().numpy().astype(np.float64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


OWN = "own"  # reference name of the module's own teacher (pl_module.teacher)
TeacherSource = Callable[[], FrozenTeacher] | str


class FidelityCallback(Callback):
    """Top-1 agreement and ``KL(teacher || student)`` at tau = 1 (nats, mean over images;
    :func:`kdbias.analytics.fidelity.fidelity`) of the student against each teacher of
    ``teachers`` (``{key: loader}``; a loader returns a :class:`FrozenTeacher`, or is
    :data:`OWN` for ``pl_module.teacher``), on every image of the test pass of the selected
    checkpoint: the pass that tests ``best.ckpt`` (the held-out ``val/acc`` checkpoint), or the
    one that tests the last weights when there is none. Other test passes are not measured.

    Reports ``summary.json`` ``fidelity: {key: {"agreement", "kl"}}`` (:meth:`summary_items`),
    writes the per-image values (module docstring) and logs
    ``fidelity/agreement`` and ``fidelity/kl`` for ``primary`` and
    ``fidelity/<key>/agreement``, ``fidelity/<key>/kl`` for every key.
    """

    def __init__(self, teachers: Mapping[str, TeacherSource], primary: str | None = None) -> None:
        self.teachers = dict(teachers)
        self.primary = primary
        self._active: dict[str, FrozenTeacher] = {}
        self._logits: dict[str, list[torch.Tensor]] = {}
        self._seen: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self.results: dict[str, dict[str, float]] = {}
        self.run: runs.Run | None = None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run = run_of(trainer)  # every rank: trainer.log_dir broadcasts

    def summary_items(self) -> dict[str, Any]:
        """``{"fidelity": {key: {"agreement", "kl"}}}`` once the selected checkpoint's test pass
        measured it (:class:`~kdbias.schema.SummaryContributor`: the summary pulls it after the test)."""
        return {"fidelity": self.results} if self.results else {}

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
        self._active, self._logits, self._seen = {}, {}, {}
        if not self.teachers or not self.selected_pass(trainer):
            return
        for key, source in self.teachers.items():
            teacher = pl_module.teacher if source == OWN else source()
            if teacher is None or not teacher.has_head:
                continue
            self._active[key] = teacher.to(pl_module.device)
            self._logits[key] = []
            if source == OWN:  # the module's test step runs its teacher: keep those logits
                self._handles.append(teacher.register_forward_hook(self._keeper(key)))
        if self._active:
            self._logits["student"] = []
            self._handles.append(pl_module.register_forward_hook(self._keeper("student")))

    def _keeper(self, key: str) -> Callable[..., None]:
        """A forward hook that keeps the latest ``[B, C]`` logits of a network under ``key``."""

        def keep(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            logits = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(logits, torch.Tensor) and logits.ndim == 2:
                self._seen[key] = logits.detach()

        return keep

    @override
    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        """Student logits (and the own teacher's) as the test step computed them; every other
        teacher on the same images, under the test pass's precision."""
        if not self._active:
            return
        images = batch[0]
        seen, self._seen = self._seen, {}
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            for key in ("student", *self._active):
                logits = seen.get(key)
                if logits is None or logits.shape[0] != images.shape[0]:
                    logits = pl_module(images) if key == "student" else self._active[key].logits(images)
                    self._seen = {}  # what that forward's hooks kept is not this key's
                self._logits[key].append(logits.float())

    @override
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active:
            return
        gathered = {k: _gather(trainer, torch.cat(v)) for k, v in self._logits.items()}
        student = gathered.pop("student")
        per_image = {key: per_image_fidelity(student, logits) for key, logits in gathered.items()}
        self.results = {
            k: {"agreement": float(a.double().mean()), "kl": float(kl.mean())} for k, (a, kl) in per_image.items()
        }
        if trainer.world_size == 1 and trainer.is_global_zero and self.run is not None:
            _write_fidelity_images(self.run.fidelity, per_image)
        for key, values in self.results.items():
            for name, value in values.items():
                pl_module.log(f"fidelity/{key}/{name}", value, rank_zero_only=True)
                if key == self.primary:
                    pl_module.log(f"fidelity/{name}", value, rank_zero_only=True)
        self._active, self._logits = {}, {}  # the other teachers were loaded for this pass only

    @override
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._seen = [], {}


def _gather(trainer: L.Trainer, logits: torch.Tensor) -> torch.Tensor:
    """Every rank's ``[n, C]`` logits as one ``[N, C]`` tensor (itself on one process)."""
    if trainer.world_size <= 1:
        return logits.cpu()
    return trainer.strategy.all_gather(logits).flatten(0, 1).cpu()
