"""Shared machinery of the analytics callbacks: when to measure, where to log, fixed subsets.

Every analytics callback measures on fixed images (fetched once from the datamodule's
``fixed_subset``), off the hot path, on global rank 0 only, and logs through the loggers
directly (``logger.log_metrics(..., step=trainer.global_step)``) rather than
``pl_module.log``, so the other ranks need not take part.

When a measurement runs (:meth:`AnalyticsCallback.due`):

- never during the sanity check;
- in ``fit``: once per epoch ``e`` with ``(e + 1) % every_n_epochs == 0``, in
  ``on_validation_end`` of the validation that closes the epoch (after the epoch's
  ``val/*`` metrics are reduced, at the same step as ``val/acc``, and before
  ``ModelCheckpoint`` saves, so ``last.ckpt`` holds the measurement); if no validation
  closes that epoch (``check_val_every_n_epoch > 1``, no val loader, ``max_steps`` hit),
  in ``on_train_epoch_end`` instead;
- in ``validate``: at every validation end (an explicit evaluation of a checkpoint).

A schedule that cannot fire within ``max_epochs`` (``every_n_epochs > max_epochs``) measures
once at the last epoch instead (:attr:`AnalyticsCallback.at_fit_end`); the first analytics
callback of the Trainer says so at the start of ``fit``, in one warning naming them all.

Steps: values are logged at ``trainer.global_step`` (optimizer steps so far). Lightning
logs its own epoch-end ``val/*`` at its batch counter, which at an epoch's closing
validation is one lower; pair the two by epoch, not by step.

Autograd: in ``fit`` the validation hooks run under ``torch.no_grad``, in ``validate``
under ``torch.inference_mode``; callbacks that differentiate re-enable both locally.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from kdbias import runs

__all__ = ["AnalyticsCallback", "eval_mode", "run_of"]

log = logging.getLogger(__name__)


def run_of(trainer: L.Trainer) -> runs.Run | None:
    """The run whose folder is ``trainer.log_dir`` (:meth:`kdbias.runs.Run.located`: every path
    under it), or ``None`` when the Trainer has no log dir. ``trainer.log_dir`` is a broadcast
    from rank 0 under DDP: call this on every rank (in ``setup``), never on rank 0 alone."""
    log_dir = trainer.log_dir
    return None if log_dir is None else runs.Run.located(log_dir)


@contextmanager
def eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Put ``modules`` (and all their submodules) in eval mode; restore every flag on exit.

    Each submodule's own previous ``training`` flag is remembered and restored, so a
    module tree in a mixed state (a frozen part in eval inside a training model) comes
    back exactly as it was, also after an exception. ``None`` entries are ignored.
    """
    saved = [(m, m.training) for module in modules if module is not None for m in module.modules()]
    try:
        for module in modules:
            if module is not None:
                module.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


class AnalyticsCallback(Callback):
    """Base of the analytics callbacks.

    Subclasses declare their fixed subsets in ``subsets`` (``name -> (split, num_images)``),
    implement :meth:`measure` (runs on global rank 0 only, returns the scalars to log,
    and stores what :meth:`summary_items` reports in ``self.last``), and
    :meth:`summary_items`.

    Args:
        every_n_epochs: measure after epochs ``e`` with ``(e + 1) % every_n_epochs == 0``.
        subset_seed: seed of ``datamodule.fixed_subset``; kept in the checkpoint, so a
            resumed run measures on the same images.

    State (``state_dict``): ``last`` (latest values), ``subset_seed``, and the epoch and
    global step of the latest measurement.
    """

    #: measure in ``on_train_epoch_end`` when no validation closed a due epoch
    measure_without_validation = True

    def __init__(self, every_n_epochs: int = 1, subset_seed: int = 0) -> None:
        if int(every_n_epochs) < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = int(every_n_epochs)
        self.subset_seed = int(subset_seed)
        self.subsets: dict[str, tuple[str, int | None]] = {}
        self.last: dict[str, Any] = {}
        self.measured_epoch: int | None = None
        self.measured_step: int | None = None
        self.num_measurements = 0  # this process, this session (not saved)
        self.elapsed_s = 0.0  # wall-clock seconds spent measuring, summed over resumes
        self._data: dict[str, tuple[Tensor, Tensor]] = {}
        self._datamodule: Any = None
        self._normalize: Any = None
        #: The run folder the Trainer logs to (:func:`run_of`, read in ``setup``): its paths.
        self.run: runs.Run | None = None
        #: The training epoch of the weights measured outside ``fit`` (a checkpoint measured
        #: later, :mod:`kdbias.controls`); ``None``: ``trainer.current_epoch``.
        self.at_epoch: int | None = None
        #: Set at the start of ``fit`` when ``every_n_epochs`` cannot fire within ``max_epochs``:
        #: then the last epoch is due instead.
        self.at_fit_end = False
        self._batches_seen = 0  # training batches of the current epoch (on_train_batch_end)

    def epoch_of(self, trainer: L.Trainer) -> int:
        """The epoch a measurement is labelled with (:attr:`at_epoch`, else the trainer's)."""
        return trainer.current_epoch if self.at_epoch is None else self.at_epoch

    # -- identity and state -----------------------------------------------------------
    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(every_n_epochs=self.every_n_epochs, **self._key_items())

    def _key_items(self) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        """Short name for progress lines: the class, plus what tells instances apart."""
        return type(self).__name__

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "last": self.last,
            "subset_seed": self.subset_seed,
            "measured_epoch": self.measured_epoch,
            "measured_step": self.measured_step,
            "elapsed_s": self.elapsed_s,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last = dict(state_dict.get("last", {}))
        self.measured_epoch = state_dict.get("measured_epoch")
        self.measured_step = state_dict.get("measured_step")
        self.elapsed_s = float(state_dict.get("elapsed_s", 0.0))
        seed = int(state_dict.get("subset_seed", self.subset_seed))
        if seed != self.subset_seed:  # the checkpoint's images win; refetch lazily
            self.subset_seed = seed
            self._data.clear()

    def summary_items(self) -> dict[str, Any]:
        """Entries for ``summary.json`` (see :class:`~kdbias.callbacks.summary.SummaryCallback`)."""
        raise NotImplementedError

    # -- setup ------------------------------------------------------------------------
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.check_module(pl_module)
        datamodule = getattr(trainer, "datamodule", None)
        if self.subsets:
            missing = [m for m in ("fixed_subset", "normalize_images") if not hasattr(datamodule, m)]
            if datamodule is None or missing:
                what = "no datamodule was given" if datamodule is None else f"{type(datamodule).__name__} lacks "
                raise TypeError(
                    f"{type(self).__name__} measures on fixed images from the datamodule, but {what}"
                    f"{', '.join(missing) if datamodule is not None else ''}. "
                    "Pass a kdbias.CIFARDataModule: trainer.fit(module, datamodule=CIFARDataModule(...))."
                )
        self._datamodule = datamodule
        self._normalize = getattr(datamodule, "normalize_images", None)
        self.run = run_of(trainer)  # every rank: trainer.log_dir broadcasts
        if trainer.is_global_zero:
            self._fetch_subsets()

    def check_module(self, pl_module: L.LightningModule) -> None:
        """Raise a clear error if ``pl_module`` cannot be measured; override.

        The callbacks rely on the interface of :class:`~kdbias.modules.ClassifierModule`:
        ``model`` (the student network), ``student_input(images)`` and ``teacher`` (a
        :class:`~kdbias.teacher.FrozenTeacher` or ``None``).
        """

    def _fetch_subsets(self) -> None:
        for name, (split, num_images) in self.subsets.items():
            if name not in self._data:
                images, labels = self._datamodule.fixed_subset(split, num_images, seed=self.subset_seed)
                self._data[name] = (images, labels)

    def subset(self, name: str) -> tuple[Tensor, Tensor]:
        """uint8 images ``[n, 3, H, W]`` and int labels ``[n]`` of fixed subset ``name`` (CPU)."""
        self._fetch_subsets()
        return self._data[name]

    def chunks(self, name: str, batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
        """Dataset-normalised float images and labels of subset ``name`` on ``device``, in chunks."""
        images, labels = self.subset(name)
        for start in range(0, len(labels), batch_size):
            x = images[start : start + batch_size].to(device, non_blocking=True)
            y = labels[start : start + batch_size].to(device, non_blocking=True)
            yield self._normalize(x), y

    # -- scheduling -------------------------------------------------------------------
    def cannot_fire(self, trainer: L.Trainer) -> bool:
        """Whether the epoch schedule never comes due within ``max_epochs`` (callbacks with their
        own schedule or their own measurement at the end of training never say so)."""
        own = type(self).due is not AnalyticsCallback.due or type(self).on_train_end is not Callback.on_train_end
        epochs = trainer.max_epochs
        return not own and isinstance(epochs, int) and 0 < epochs < self.every_n_epochs

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mine = [c for c in trainer.callbacks if isinstance(c, AnalyticsCallback)]
        late = [c for c in mine if c.cannot_fire(trainer)]
        self.at_fit_end = self in late
        if late and mine[0] is self:
            names = ", ".join(f"{c.describe()} (every_n_epochs={c.every_n_epochs})" for c in late)
            rank_zero_warn(
                f"analytics whose schedule cannot fire within max_epochs={trainer.max_epochs}: {names}; they measure "
                "once at the end of the last epoch instead (lower every_n_epochs to measure during training)."
            )

    def due(self, trainer: L.Trainer) -> bool:
        """Whether a measurement is due now (see the module docstring)."""
        if trainer.sanity_checking:
            return False
        if trainer.state.fn == TrainerFn.VALIDATING:
            return True
        if trainer.state.fn != TrainerFn.FITTING:
            return False
        epoch = trainer.current_epoch
        last = self.at_fit_end and epoch + 1 == trainer.max_epochs
        return ((epoch + 1) % self.every_n_epochs == 0 or last) and self.measured_epoch != epoch

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batches_seen = batch_idx + 1

    def _closes_epoch(self, trainer: L.Trainer) -> bool:
        """Whether the validation now ending runs after the epoch's last training batch: the
        loader's last batch (``trainer.is_last_batch``) or the last one ``limit_train_batches``
        allows."""
        if trainer.state.fn != TrainerFn.FITTING:
            return True
        return bool(trainer.is_last_batch or self._batches_seen >= trainer.num_training_batches)

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.due(trainer) and self._closes_epoch(trainer):
            self.run_measurement(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.measure_without_validation and self.due(trainer):
            self.run_measurement(trainer, pl_module)

    def run_measurement(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Measure on rank 0, log, and record when (on every rank). A line on stdout marks
        the start and the end of each measurement (they can take minutes at paper scale)."""
        if trainer.is_global_zero:
            name = self.describe()
            log.info(f"[analytics] epoch {self.epoch_of(trainer)}: {name} ...")
            start = time.perf_counter()
            metrics = self.measure(trainer, pl_module)  # ends in host reads: the time is complete
            took = time.perf_counter() - start
            self.elapsed_s += took
            self.num_measurements += 1
            log.info(f"[analytics] epoch {self.epoch_of(trainer)}: {name} done in {took:.1f} s")
            if metrics:
                self.log_metrics(trainer, metrics)
        self.measured_epoch = trainer.current_epoch
        self.measured_step = trainer.global_step

    def measurements_left(self, trainer: L.Trainer) -> int:
        """Measurements still to come in this fit after the epoch now ending (for the time
        left in progress lines): the due epochs among the remaining ones; override for
        measurements at other times."""
        first, total = trainer.current_epoch + 1, trainer.max_epochs or 0
        due = sum(1 for epoch in range(first, total) if (epoch + 1) % self.every_n_epochs == 0)
        return due + (1 if self.at_fit_end and first < total else 0)

    @property
    def mean_duration_s(self) -> float | None:
        """Mean wall-clock seconds of this session's measurements; ``None`` before the first."""
        return self.elapsed_s / self.num_measurements if self.num_measurements else None

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Compute (global rank 0 only); update ``self.last``; return scalars to log. Override."""
        raise NotImplementedError

    # -- output -----------------------------------------------------------------------
    @staticmethod
    def log_metrics(trainer: L.Trainer, metrics: dict[str, float]) -> None:
        """Send ``metrics`` to every logger at ``trainer.global_step`` (call on rank 0)."""
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    @staticmethod
    def tensorboard_loggers(trainer: L.Trainer) -> list[TensorBoardLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]

    @property
    def log_dir(self) -> str | None:
        """``trainer.log_dir`` as read in ``setup`` (the run directory; paths: :attr:`run`)."""
        return None if self.run is None else str(self.run.folder)
