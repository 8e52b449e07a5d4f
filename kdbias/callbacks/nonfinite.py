"""Stop a run on a NaN/Inf loss before it overwrites the last finite checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from kdbias.errors import NonFiniteLossError

_NONE = -(2**62)  # "no bad step" in the packed state (steps are stored negated; see _packed)


class NonFiniteGuard(Callback):
    """Raise :class:`NonFiniteLossError` when any loss component becomes non-finite.

    Reads ``pl_module.last_losses`` (``{"loss": total, part: value}``, detached, set by
    every kdbias training step). To keep the hot loop free of host syncs, each step only
    folds the check into two device tensors (the first bad step and which components were
    bad, the batch counter itself a device tensor, so no scalar is built on the host per
    step); the host reads them every ``check_every_n_steps`` steps, when a validation
    starts, and at the end of every training epoch. The validation that closes an epoch
    (and the analytics at its end) thus never runs on non-finite weights, and
    :class:`~lightning.pytorch.callbacks.ModelCheckpoint` (which Lightning always runs
    last, at the train epoch's end or the validation's) never saves them: the last finite
    ``last.ckpt`` is kept, and ``--resume`` continues from it.

    The message names the training batch of this fit at which the bad loss was computed,
    counted from the ``trainer.global_step`` the fit started at (with gradient accumulation,
    batches outrun optimiser steps by that factor). Under DDP the check is reduced
    over the ranks (one all-reduce per check), so every rank stops at the same point and
    the message names the earliest bad step and every bad component on any rank.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = max(1, int(check_every_n_steps))
        self._names: list[str] = []
        self._first_bad_step: torch.Tensor | None = None
        self._bad_components: torch.Tensor | None = None
        self._batch: torch.Tensor | None = None  # device counter: the batch being checked

    def _reset(self, device: torch.device, names: list[str]) -> None:
        """Allocate the device state once (the only host-to-device copies this callback makes)."""
        self._names = names
        self._first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self._bad_components = torch.zeros(len(names), dtype=torch.bool, device=device)

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._batch is None:  # once per fit: the batch counter starts at this batch's step
            self._batch = torch.full((), trainer.global_step, dtype=torch.long, device=pl_module.device)

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        losses: dict[str, torch.Tensor] = getattr(pl_module, "last_losses", None) or {}
        if not losses:
            return
        names = sorted(losses)
        if self._first_bad_step is None or names != self._names:
            self._reset(pl_module.device, names)
        bad = torch.stack([~torch.isfinite(losses[name].detach().float()).all() for name in names])
        newly = bad.any() & (self._first_bad_step < 0)
        self._first_bad_step = torch.where(newly, self._batch, self._first_bad_step)
        self._bad_components = torch.where(newly, bad, self._bad_components)
        self._batch.add_(1)
        if (trainer.global_step % self.check_every_n_steps) == 0:
            self.check(trainer)

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.check(trainer)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def _packed(self, trainer: L.Trainer) -> torch.Tensor:
        """``[-first_bad_step (or _NONE), bad flags...]``, max-reduced over the ranks."""
        assert self._first_bad_step is not None and self._bad_components is not None
        step = torch.where(
            self._first_bad_step >= 0, -self._first_bad_step, torch.full_like(self._first_bad_step, _NONE)
        )
        packed = torch.cat([step.reshape(1), self._bad_components.long()])
        if trainer.world_size > 1:
            packed = trainer.strategy.reduce(packed, reduce_op="max")
        return packed

    def check(self, trainer: L.Trainer) -> None:
        """Raise if a non-finite loss was seen (one host sync; one all-reduce under DDP)."""
        if self._first_bad_step is None:
            return
        packed = self._packed(trainer).tolist()
        if packed[0] == _NONE:
            return
        step = -packed[0]
        parts = [name for name, bad in zip(self._names, packed[1:]) if bad]
        named = ", ".join("total loss" if p == "loss" else f"loss component {p!r}" for p in parts)
        saved = [c.last_model_path or c.best_model_path for c in trainer.checkpoint_callbacks]
        saved = [path for path in saved if path and Path(path).is_file()]
        checkpoint = max(saved, key=lambda path: Path(path).stat().st_mtime) if saved else None
        if checkpoint:
            kept, then = f"The last finite checkpoint is kept at {checkpoint}.", "then continue with --resume"
        else:
            kept, then = "No checkpoint was written yet.", "then start the run again"
        raise NonFiniteLossError(
            f"Non-finite {named} at training batch {step} (epoch {trainer.current_epoch}). {kept} "
            "Lower the learning rate, check the inputs and the teacher, or train in fp32 "
            f"(--trainer.precision 32-true); {then}."
        )
