"""A run's life, top-down: check -> plan (teacher, resume) -> claim and build -> data -> fit -> test -> summary.

:class:`kdbias.cli.KDBiasCLI` parses the configuration (jsonargparse merges the preset files)
and calls, in order:

1. :func:`plan_run` (before anything is instantiated): :func:`check_config` refuses every
   value that cannot work (Trainer settings, module and DataModule arguments, layer indices
   and the teacher's input size on meta-device networks, resume flags, analytics); then the
   teacher is resolved (:func:`kdbias.runs.resolve_teacher`) and ``--resume`` planned;
2. :func:`build_trainer` (the module and the DataModule are built by then): the run
   directory is claimed (or the resumed one reused), the Trainer assembled with the run's
   logger, atomic checkpoints and callbacks, the resolved configuration written;
3. :func:`prepare_data`: the dataset is read (a bad file is still an input error here);
4. :func:`train`: ``seed_everything(seed)`` again right before ``fit`` (the training
   stream does not depend on what construction drew); ``trainer.fit`` (resuming from the
   verified checkpoint with ``weights_only=True``); ``trainer.test`` on the official test
   split with the last weights (logged as ``test_last/*``), then with the selected
   checkpoint (``best.ckpt`` by the held-out ``val/acc``, logged as ``test/*``; without a
   held-out split the last weights are the selected ones, logged as both); ``summary.json``
   completed and TensorBoard's HPARAMS entry written (:mod:`kdbias.logs`: what is logged, to
   which loggers, in one events file); the complete run's ``last.ckpt`` drops its optimiser
   moments (:func:`kdbias.runs.compact_finished_checkpoint`: a complete run is never resumed).

A run that fails before its first checkpoint removes its directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import CheckpointIO

from kdbias import logs, registry, runs, why
from kdbias.callbacks import SummaryCallback
from kdbias.data import CIFARDataModule
from kdbias.errors import InputError
from kdbias.experiment import (
    Analytics,
    allowed_changes,
    check_run_flags,
    check_teacher_spec,
    check_trainer_settings,
    run_callbacks,
)
from kdbias.resume import plan_resume
from kdbias.runs.config_diff import signature_config
from kdbias.schema import SELECTION_BEST, SELECTION_LAST
from kdbias.teacher import FrozenTeacher, PretrainedTeacher, teacher_spec

__all__ = [
    "ENV_RUN_DIR",
    "Finished",
    "RunPlan",
    "build_trainer",
    "check_config",
    "config_signature",
    "plan_run",
    "prepare_data",
    "train",
]

log = logging.getLogger(__name__)

#: Set by global rank 0 to its run directory; DDP processes that Lightning starts inherit it.
ENV_RUN_DIR = "KDBIAS_RUN_DIR"
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "JSM_NAMESPACE_RANK")
#: ``--model.teacher run:NAME``: the teacher run called NAME (``runs/NAME/``).
RUN_PREFIX = "run:"
Control = Callable[[str], tuple[FrozenTeacher, list[tuple[int, int]] | None]]


class Finished(Exception):
    """``--resume`` found the run already complete: nothing to train."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


@dataclass
class RunPlan:
    """What a run is before anything is built. ``config_text``/``config_data``: the resolved configuration
    (``config.yaml``'s YAML, parsed); ``teacher_family``: the family an auto-found teacher must have;
    ``run_dir``/``ckpt_path``: set when resuming; ``teacher_run``: the ``run:NAME`` a student names."""

    experiment: registry.Experiment
    runs_dir: Path
    seed: int
    dataset: str
    preset: str
    analytics: Analytics
    config_text: str
    config_data: dict[str, Any] = field(default_factory=dict)
    teacher_family: str | None = None
    run_dir: Path | None = None
    ckpt_path: Path | None = None
    teacher_run: str | None = None

    @property
    def run(self) -> runs.Run:
        """The run this plan trains (its folder once claimed or resumed)."""
        return runs.Run(self.runs_dir, self.experiment.name, self.dataset, self.preset, self.seed, self.run_dir)

    def describe(self) -> str:
        return self.run.describe()


def _rank_zero() -> bool:
    """Whether this process is (or will be) global rank 0, from the launchers' variables."""
    return all(os.environ.get(name, "0") in ("", "0") for name in _RANK_VARIABLES)


def _plain(value: Any) -> Any:
    return value.as_dict() if isinstance(value, Namespace) else value


# -- 1. check and plan -------------------------------------------------------------------
def check_config(experiment: registry.Experiment, config: Namespace) -> Analytics:
    """``ValueError`` for any value of ``config`` that cannot work, before anything is built,
    looked up or read; returns the analytics settings."""
    check_trainer_settings(_plain(config.trainer))
    check_run_flags(bool(config.resume), config.allow_changed)
    CIFARDataModule(**_plain(config.data))  # checks its arguments; reads nothing
    model = _plain(config.model)
    teacher = model.get("teacher")
    check_teacher_spec(experiment.name, experiment.module, teacher)
    if isinstance(teacher, Mapping) and "init_args" in teacher:  # a spec: its arch stands for the shape checks
        spec = teacher_spec(dict(teacher))
        if isinstance(spec, PretrainedTeacher) and getattr(experiment.module_class, "distils_logits", False):
            spec.check_logits(model.get("num_classes", 0))  # a headless teacher, refused before anything is built
        model = {**model, "teacher": None}
    experiment.module_class.check_arguments(**model)
    experiment.module_class.check_batch_size(config.data.batch_size, **model)
    return Analytics(**_plain(config.analytics))


def plan_run(experiment: registry.Experiment, config: Namespace, dump: Callable[[Namespace], str]) -> RunPlan:
    """Check ``config`` (:func:`check_config`), resolve ``teacher: auto`` and plan ``--resume``;
    ``dump``: the parser's YAML dump of a configuration (what ``config.yaml`` holds)."""
    import yaml

    analytics = check_config(experiment, config)
    plan = RunPlan(
        experiment=experiment,
        runs_dir=Path(config.runs_dir),
        seed=int(config.seed_everything),
        dataset=config.data.dataset,
        preset=config.preset,
        analytics=analytics,
        config_text="",
    )
    _resolve_teacher(plan, config.model)
    plan.config_text = dump(config)
    plan.config_data = yaml.safe_load(plan.config_text) or {}
    if config.resume:
        found = plan_resume(plan.runs_dir, experiment.name, plan.seed, plan.dataset, plan.preset, plan.config_data)
        if found.finished is not None:
            raise Finished(found.finished)
        if found.run_dir is None and allowed_changes(config.allow_changed):
            raise ValueError(
                f"--allow_changed: there is no run of {plan.describe()} under {plan.runs_dir} to resume; "
                "drop --allow_changed (and --resume) to start a new run."
            )
        if found.run_dir is not None:
            found.check_changes(plan.config_data, config.allow_changed, config.trainer.max_epochs)
            if _rank_zero():
                runs.hold_lock(found.run_dir)  # RunningElsewhere (one line) when another process trains it
            plan.run_dir, plan.ckpt_path = found.run_dir, found.checkpoint
        found.announce()
    return plan


def _resolve_teacher(plan: RunPlan, model: Namespace) -> None:
    """``teacher: auto`` (also as ``CheckpointTeacher(path="auto")``) or ``run:NAME`` -> the checkpoint
    path (:func:`kdbias.runs.resolve_teacher`)."""
    experiment, teacher = plan.experiment, model.get("teacher")
    spec = isinstance(teacher, Namespace) and str(teacher.get("class_path", "")).endswith("CheckpointTeacher")
    path = teacher.init_args.get("path", "auto") if spec else teacher
    if isinstance(path, str) and path.startswith(RUN_PREFIX):
        plan.teacher_run = path[len(RUN_PREFIX) :]
        if not plan.teacher_run or plan.teacher_run != Path(plan.teacher_run).name:
            raise ValueError(f"--model.teacher {path}: name a teacher run, e.g. run:my_r34 (runs/my_r34/)")
    elif experiment.teacher is None or path not in (None, "auto"):
        return
    else:
        plan.teacher_family = experiment.teacher_family
    found = str(runs.resolve_teacher(plan.runs_dir, experiment, plan.dataset, plan.preset, plan.teacher_run))
    if spec:
        teacher.init_args.path = found
    else:
        model.teacher = found


# -- 2. claim and build --------------------------------------------------------------------
def build_trainer(
    plan: RunPlan,
    trainer_class: type[L.Trainer],
    config: dict[str, Any],
    module: L.LightningModule,
    datamodule: CIFARDataModule,
    control: Control,
) -> L.Trainer:
    """The Trainer of ``plan`` in its claimed run directory; ``config``: the Trainer's
    arguments as parsed (user callbacks, loggers and plugins kept); ``control(key)``: the
    teacher of experiment ``key`` and the cells its loss trains (CKA controls)."""
    teacher = module.teacher
    if plan.teacher_family is not None and teacher is not None and teacher.family != plan.teacher_family:
        name = plan.experiment.name
        raise runs.CheckpointError(
            f"the teacher found for {name} ({teacher.source}) is a {teacher.family} ({teacher.name}); {name} "
            f"distils from a {plan.teacher_family}. Name the teacher explicitly with --model.teacher PATH if you "
            "mean it."
        )
    leader = _rank_zero()
    if leader and teacher is not None:
        how = " (auto: the selected checkpoint of the newest complete teacher run)" if plan.teacher_family else ""
        where = "with random weights" if teacher.source == "random" else f"from {teacher.source}"
        log.info(
            f"{plan.experiment.name}: teacher {teacher.name} {where}{how}; frozen: eval mode, no gradients, not "
            "in the student's checkpoints"
        )
    if plan.run_dir is None:
        fallback = Path(os.environ.get(ENV_RUN_DIR, plan.runs_dir / plan.experiment.name / "version_pending"))
        plan.run_dir = runs.claim_run_dir(plan.runs_dir, plan.experiment.name, lock=True) if leader else fallback
    if leader:
        os.environ[ENV_RUN_DIR] = str(plan.run_dir)
    try:
        trainer = _trainer(plan, trainer_class, dict(config), module, datamodule, control)
        if leader:
            runs.atomic_write_text(plan.run.config, plan.config_text)
    except BaseException:
        _discard(plan)
        raise
    return trainer


def _discard(plan: RunPlan) -> None:
    if _rank_zero() and plan.ckpt_path is None and plan.run_dir is not None:
        runs.discard_if_unstarted(plan.run_dir)


def _trainer(plan: RunPlan, trainer_class, config: dict[str, Any], module, datamodule, control: Control) -> L.Trainer:
    import sys

    progress = config.get("enable_progress_bar")
    if progress is None:  # a bar needs a terminal with a width (zero in some containers and CI): else plain lines
        progress = sys.stderr.isatty() and shutil.get_terminal_size(fallback=(0, 0)).columns > 0
    progress = bool(progress)
    callbacks = run_callbacks(
        module=module,
        run=plan.run,
        analytics=plan.analytics,
        has_validation=datamodule.has_validation,
        progress_lines=not progress,
        log_every_n_steps=config.get("log_every_n_steps") or 50,
        control=control,
        summary_extra={},
    ) + why.why_callbacks(plan.experiment, plan.run, module, plan.teacher_run)
    user = config.get("callbacks") or []
    plugins = config.get("plugins") or []
    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(runs.AtomicCheckpointIO())
    loggers = logs.run_loggers(plan.runs_dir, plan.experiment.name, plan.run_dir.name, config.get("logger"))
    if not datamodule.has_validation:
        config["limit_val_batches"] = 0
    config.update(
        logger=loggers,
        callbacks=[*(user if isinstance(user, list) else [user]), *callbacks],
        plugins=plugins,
        enable_progress_bar=progress,
        default_root_dir=str(plan.run_dir),
    )
    trainer = trainer_class(**config)
    summary = next(c for c in trainer.callbacks if isinstance(c, SummaryCallback))
    summary.extra.update(_record(plan, module, datamodule, trainer))
    return trainer


def _record(plan: RunPlan, module: L.LightningModule, datamodule: Any, trainer: L.Trainer) -> dict[str, Any]:
    """What the report reads besides the figures: label, role, method and its parameters
    (the module's own :meth:`~kdbias.modules.ClassifierModule.method_record`)."""
    method = {
        **module.method_record(),
        "arch": module.hparams.get("arch"),
        "batch_size": datamodule.batch_size,
        "global_batch_size": datamodule.batch_size * trainer.world_size * trainer.accumulate_grad_batches,
        "epochs": trainer.max_epochs,
        "holdout": datamodule.num_val if datamodule.has_validation else 0,
        "precision": str(trainer.precision),
        "mix": datamodule.mix,  # CutMix / Mixup of the training batches (None: none)
    }
    teacher = module.teacher
    return {
        "label": plan.experiment.label,
        "role": plan.experiment.role,
        "control_of": plan.experiment.control_of,
        "method": method,
        "config_signature": config_signature(plan.config_data),
        "teacher": None
        if teacher is None
        else {"name": teacher.name, "family": teacher.family, "source": teacher.source},
    }


# -- 3. data, 4. fit, test, summary ----------------------------------------------------------
def prepare_data(plan: RunPlan, datamodule: CIFARDataModule) -> None:
    """Read the dataset before training starts (a missing or corrupt file is input, not a bug)."""
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except BaseException:
        _discard(plan)
        raise


def train(plan: RunPlan, trainer: L.Trainer, module: L.LightningModule, datamodule: CIFARDataModule) -> Path:
    """Fit, test (last weights, then the selected checkpoint; once when they are the same
    weights), complete the summary; the run directory."""
    L.seed_everything(plan.seed, workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and later
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=plan.ckpt_path, weights_only=True)
    except BaseException:
        _discard(plan)
        runs.release_lock(plan.run_dir)
        raise
    if trainer.interrupted:
        raise KeyboardInterrupt
    if trainer.current_epoch < 1:
        raise InputError(f"{plan.describe()} completed no epoch; check trainer.max_epochs and the data.")
    summary = next(c for c in trainer.callbacks if isinstance(c, SummaryCallback))
    best = next(
        (
            c.best_model_path
            for c in trainer.checkpoint_callbacks
            if isinstance(c, ModelCheckpoint) and c.monitor == "val/acc" and c.best_model_path
        ),
        None,
    )
    if best and not _holds_last_weights(best, trainer):  # the last weights first: testing best.ckpt loads it
        last = logs.test_pass(trainer, module, datamodule, None, (logs.TEST_LAST,))
        selected = logs.test_pass(trainer, module, datamodule, best, (logs.TEST,))
    else:  # one set of weights (no best.ckpt, or it was saved at the last step): tested once
        selected = last = logs.test_pass(trainer, module, datamodule, best, (logs.TEST, logs.TEST_LAST))
    items: dict[str, Any] = {
        "status": "complete",
        "test_acc": selected.get("test/acc"),
        "test_loss": selected.get("test/loss"),
        "test_acc_last": last.get("test/acc"),
        "selected_checkpoint": runs.checkpoint_entry(best or runs.LAST_CKPT),
        "selection": SELECTION_BEST if best else SELECTION_LAST,
    }
    items["teacher_acc"] = selected.get("test/teacher_acc")  # its one writer (null: no teacher, or no head)
    written = summary.update(**items)
    if trainer.is_global_zero and plan.run.last_ckpt.is_file():  # complete: never resumed, so no optimiser moments
        runs.compact_finished_checkpoint(plan.run.last_ckpt)
    if trainer.is_global_zero:
        logs.log_hparams(trainer, module, datamodule, written)
    logs.close_loggers(trainer)
    if trainer.is_global_zero:
        log.info(f"Run directory: {plan.run_dir}  (summary: {plan.run.summary}; tensorboard --logdir {plan.runs_dir})")
    runs.release_lock(plan.run_dir)
    return plan.run_dir


def _holds_last_weights(path: str, trainer: L.Trainer) -> bool:
    """Whether checkpoint ``path`` was saved after the fit's last optimiser step (its weights
    are the ones in memory): then the last and the selected weights are one test pass."""
    return runs.load_checkpoint(path).get("global_step") == trainer.global_step


def config_signature(config: dict[str, Any]) -> str:
    """SHA-256 (hex, 16 characters) of the configuration without seeds and run-local keys."""
    text = json.dumps(signature_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
