"""Learning-rate curves: one per distinct schedule, not one per optimiser parameter group."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from typing_extensions import override

__all__ = ["ScheduleMonitor", "schedule_curves"]

#: Schedulers whose per-group multiplier is a function (``lr_lambdas``): groups with the same
#: base learning rate and the same function object follow the same schedule.
_FUNCTION_SCHEDULERS = (torch.optim.lr_scheduler.LambdaLR, torch.optim.lr_scheduler.MultiplicativeLR)


def schedule_curves(trainer: L.Trainer) -> dict[str, tuple[torch.optim.Optimizer, int]]:
    """``{tag: (optimizer, group index)}``: one parameter group per distinct schedule.

    Two groups of one optimiser are one schedule when they provably follow the same
    learning rates: under a ``LambdaLR``/``MultiplicativeLR``, the same base learning rate and
    the same multiplier function (kdbias's modules: one ``WarmupCosine`` for every group);
    without a scheduler, the same (constant) learning rate. Under any other scheduler each
    group is its own curve. Tags follow :class:`~lightning.pytorch.callbacks.LearningRateMonitor`:
    ``lr-<Optimizer>`` (or the scheduler configuration's ``name``; ``-1``, ``-2`` for repeats),
    with ``/<group name or pg<i>>`` (1-based index of the curve's first group) only when the
    optimiser has several curves.
    """
    schedulers = {id(config.scheduler.optimizer): config for config in trainer.lr_scheduler_configs}
    seen: Counter[str] = Counter()
    out: dict[str, tuple[torch.optim.Optimizer, int]] = {}
    for optimizer in trainer.optimizers:
        config = schedulers.get(id(optimizer))
        name = config.name if config is not None and config.name else f"lr-{type(optimizer).__name__}"
        seen[name] += 1
        name = name if seen[name] == 1 else f"{name}-{seen[name] - 1}"
        scheduler = config.scheduler if config is not None else None
        firsts: dict[Any, int] = {}
        for index, group in enumerate(optimizer.param_groups):
            firsts.setdefault(_schedule_key(scheduler, group, index), index)
        for index in firsts.values():
            group = optimizer.param_groups[index]
            tag = name if len(firsts) == 1 else f"{name}/{group.get('name', f'pg{index + 1}')}"
            out[tag] = (optimizer, index)
    return out


def _schedule_key(scheduler: Any, group: dict[str, Any], index: int) -> Any:
    if scheduler is None:
        return ("constant", group["lr"])
    if isinstance(scheduler, _FUNCTION_SCHEDULERS):
        return (scheduler.base_lrs[index], id(scheduler.lr_lambdas[index]))
    return ("own", index)


class ScheduleMonitor(LearningRateMonitor):
    """:class:`~lightning.pytorch.callbacks.LearningRateMonitor` with one curve per distinct
    schedule (:func:`schedule_curves`), in every logger, at ``trainer.global_step``.

    Why a subclass: LearningRateMonitor logs every parameter group (``lr-AdamW/pg1``,
    ``/pg2``, ...) and has no option to merge groups (it refuses groups with the same
    ``name``); kdbias's optimiser splits each trainable module into a decayed and an
    undecayed group that share one schedule, so the plain monitor draws 2-4 identical curves.
    The subclass keeps the parent's argument check, its "no logger" error, its tag names and
    its ``trainer.callback_metrics`` entries (so ``metrics.csv`` has the learning rate too), and
    replaces the two logging hooks. Momentum and weight decay are not logged (they are
    constant in kdbias's optimisers).

    Args:
        logging_interval: ``"step"``: on logging steps (``trainer.log_every_n_steps``), before
            the step (the learning rate the step uses); ``"epoch"``: at each epoch's start.
    """

    def __init__(self, logging_interval: Literal["step", "epoch"] = "step") -> None:
        if logging_interval not in ("step", "epoch"):
            raise ValueError(f"ScheduleMonitor: logging_interval must be 'step' or 'epoch', got {logging_interval!r}")
        super().__init__(logging_interval=logging_interval)

    def learning_rates(self, trainer: L.Trainer) -> dict[str, float]:
        """``{tag: learning rate}`` now, one entry per distinct schedule."""
        return {tag: float(opt.param_groups[i]["lr"]) for tag, (opt, i) in schedule_curves(trainer).items()}

    def _log(self, trainer: L.Trainer) -> None:
        rates = self.learning_rates(trainer)
        device = trainer.strategy.root_device
        trainer.callback_metrics.update({tag: torch.tensor(value, device=device) for tag, value in rates.items()})
        for logger in trainer.loggers:
            logger.log_metrics(rates, step=trainer.global_step)

    @override
    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        logging_step = (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0  # Lightning's rule
        if self.logging_interval == "step" and (logging_step or trainer.should_stop):
            self._log(trainer)

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self.logging_interval == "epoch":
            self._log(trainer)
