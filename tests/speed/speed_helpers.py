"""Shared helpers of the speed tests (a uniquely named module: ``from speed_helpers import ...``).

``experiments/`` is not an installed package: the repository root goes on ``sys.path`` so
that ``import experiments.benchmark`` works as it does for ``python -m experiments.benchmark``
run from the checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.benchmark.experiment import (  # noqa: E402
    Built,
    Plan,
    build,
    enlarge_train_split,
    matrix,
    run_overrides,
    teacher_checkpoint,
)
from experiments.benchmark.measure import HostReadCounter  # noqa: E402

GPU_CHECK = ROOT / "experiments" / "benchmark" / "gpu_check.sh"


def spec_of(name: str):
    return next(spec for spec in matrix() if spec.name == name)


def real_trainer(plan: Plan, run: str, max_steps: int, **extra: Any) -> Built:
    """The experiment's real Trainer (KDBiasCLI, every callback; analytics off), tiny, with
    ``max_steps`` steps inside one epoch; ``extra``: more ``dotted.key=value`` overrides."""
    spec = spec_of(run)
    teachers = {}
    if spec.experiment in ("exp1", "exp2"):
        name = "teacher_resnet18" if spec.experiment == "exp1" else "teacher_convnextv2"
        teachers[name] = teacher_checkpoint(name, plan, plan.runs_dir.parent / "teachers")
    overrides = {**run_overrides(spec, plan, max_steps, teachers=teachers), **extra}
    built = build(spec, plan, overrides)
    enlarge_train_split(built.datamodule, (max_steps + 2) * built.datamodule.batch_size)
    return built


class PerStepReads(Callback):
    """Host reads per training step, for steps ``first .. last`` (0-based batch indices).

    A step's window runs from its ``on_train_batch_start`` to the next one: the step, its
    callbacks, Lightning's metric and LR updates, and the fetch and on-device augmentation of
    the next batch. ``logging`` says whether the module logged in that step (its own rule,
    :meth:`ClassifierModule.logging_step`, at the same ``global_step``).
    """

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.counter = HostReadCounter()
        self.steps: list[dict[str, Any]] = []
        self._seen = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.steps:
            self.steps[-1]["reads"] = self.counter.total - self._seen
            self.steps[-1]["sites"] = dict(self.counter.sites)
        self._seen = self.counter.total
        if batch_idx == self.first:
            self.counter.start()
        if batch_idx > self.last:
            self.counter.stop()
            return
        if self.counter.active:
            self.steps.append({"batch": batch_idx, "logging": pl_module.logging_step(), "reads": None})

    def on_train_end(self, trainer, pl_module) -> None:
        self.counter.stop()
