"""What a command-line run adds to a Trainer: analytics settings, callbacks, checkpoints, checks.

:mod:`kdbias.cli` parses the configuration; this module turns its run-level parts into
Lightning objects and checks what Lightning would accept silently:

- :class:`Analytics`: the Phase-3 settings of a run (``analytics:`` in the presets), one
  section per callback under the callback's own argument names (:data:`ANALYTICS_CALLBACKS`);
- :func:`run_callbacks`: checkpointing (``last.ckpt`` every epoch with the training state,
  ``best.ckpt``: the weights only, by the held-out ``val/acc``), the summary, the learning
  rate (one curve per distinct schedule), the non-finite guard, the RNG state, progress lines,
  and the analytics for the module's role;
- :func:`check_trainer_settings`: ranges of the Trainer arguments;
- :func:`config_changes`: what differs between a saved configuration and a new one.
"""

from __future__ import annotations

import inspect
import logging
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from kdbias.callbacks import (
    AttentionDistanceCallback,
    CKAHeatmapCallback,
    EpochLineProgress,
    EpochMetricsCSV,
    GeneralisationGapCallback,
    HessianCallback,
    NonFiniteGuard,
    PredictionsCallback,
    RNGStateCallback,
    ScheduleMonitor,
    SummaryCallback,
    TeacherKNNCallback,
)
from kdbias.models import is_vit
from kdbias.runs import BEST_CKPT, LAST_CKPT, Run, RunCheckpoint
from kdbias.runs.config_diff import RUN_LOCAL_KEYS, config_changes, flatten
from kdbias.teacher import RANDOM_PREFIX, FrozenTeacher, teacher_spec

__all__ = [
    "ANALYTICS_CALLBACKS",
    "Analytics",
    "analytics_callbacks",
    "RESUME_SAFE_CHANGES",
    "RUN_LOCAL_KEYS",
    "allowed_changes",
    "check_run_flags",
    "check_teacher_spec",
    "check_trainer_settings",
    "config_changes",
    "flatten",
    "run_callbacks",
]

log = logging.getLogger(__name__)

#: Changes ``--resume --allow_changed KEY`` accepts (then applied to the schedule).
RESUME_SAFE_CHANGES = ("trainer.max_epochs",)


#: ``analytics.<key>`` -> the callback it configures, and the arguments the run sets itself
#: (never configured): each section's keys are exactly the callback's own arguments.
ANALYTICS_CALLBACKS: dict[str, tuple[type[Callback], tuple[str, ...]]] = {
    "attention": (AttentionDistanceCallback, ()),
    "hessian": (HessianCallback, ()),
    "cka": (CKAHeatmapCallback, ("teacher", "key", "trained_pairs")),
    "generalisation": (GeneralisationGapCallback, ()),
    "knn": (TeacherKNNCallback, ()),
}


@dataclass(frozen=True)
class Analytics:
    """Phase-3 analytics of a run, measured off the hot path on fixed images.

    Each section holds arguments of one callback, under that callback's own names; what is
    not given is the callback's default, which is the research plan's protocol (the paper
    preset names nothing else). ``Analytics()`` is what a paper run measures.

    Args:
        enabled: run the analytics at all.
        cka_against: rows of the study whose teachers the student is also measured against, as
            controls (measurement only; the baseline's preset names every distilling row).
        attention: :class:`~kdbias.callbacks.AttentionDistanceCallback` arguments (ViT students).
        hessian: :class:`~kdbias.callbacks.HessianCallback` arguments (ViT students).
        cka: :class:`~kdbias.callbacks.CKAHeatmapCallback` arguments (students with a teacher,
            and the ``cka_against`` controls).
        generalisation: :class:`~kdbias.callbacks.GeneralisationGapCallback` arguments.
        knn: :class:`~kdbias.callbacks.TeacherKNNCallback` arguments (a headless teacher).
    """

    enabled: bool = True
    cka_against: tuple[str, ...] = ()
    attention: Mapping[str, Any] = field(default_factory=dict)
    hessian: Mapping[str, Any] = field(default_factory=dict)
    cka: Mapping[str, Any] = field(default_factory=dict)
    generalisation: Mapping[str, Any] = field(default_factory=dict)
    knn: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cka_against", tuple(self.cka_against or ()))
        for key, (cls, fixed) in ANALYTICS_CALLBACKS.items():
            given = dict(getattr(self, key) or {})
            unknown = sorted(set(given) - set(inspect.signature(cls).parameters) | (set(given) & set(fixed)))
            if unknown:
                raise ValueError(f"analytics.{key}: {cls.__name__} has no argument {', '.join(unknown)}")
            try:
                cls(**given)  # the callback checks its own arguments (nothing is measured)
            except ValueError as error:
                raise ValueError(f"analytics.{key}: {error}") from None
            object.__setattr__(self, key, given)
        if int(self.cka.get("batch_size", 4)) < 4:
            raise ValueError(f"analytics.cka.batch_size must be >= 4 (unbiased HSIC), got {self.cka['batch_size']}")

    def callback(self, section: str, /, **fixed: Any) -> Callback:
        """The callback of ``section`` with its settings (and the run's ``fixed`` arguments)."""
        return ANALYTICS_CALLBACKS[section][0](**{**self.__dict__[section], **fixed})


def run_callbacks(
    *,
    module: L.LightningModule,
    run: Run,
    analytics: Analytics,
    has_validation: bool,
    progress_lines: bool,
    log_every_n_steps: int,
    control: Callable[[str], tuple[FrozenTeacher, list[tuple[int, int]] | None]],
    summary_extra: dict[str, Any],
) -> list[Callback]:
    """The callbacks of ``run`` (in its claimed folder; see the module docstring).

    ``control(key)`` returns the teacher of experiment ``key`` and the cells its loss
    trains (for CKA controls, ``analytics.cka_against``).
    """
    folder, run_dir, experiment = run.checkpoints, run.folder, run.experiment
    callbacks: list[Callback] = [
        RunCheckpoint(dirpath=folder, filename=Path(LAST_CKPT).stem, save_top_k=1, enable_version_counter=False),
        SummaryCallback(experiment, run.dataset, run.preset, run.seed, extra=summary_extra),
        ScheduleMonitor(logging_interval="step"),
        NonFiniteGuard(check_every_n_steps=log_every_n_steps),
        RNGStateCallback(),
        PredictionsCallback(),
        EpochMetricsCSV(run_dir),
    ]
    if has_validation:
        callbacks.insert(
            0,
            RunCheckpoint(  # weights and hyperparameters only: what the test pass, students and the report read
                dirpath=folder,
                filename=Path(BEST_CKPT).stem,
                monitor="val/acc",
                mode="max",
                save_top_k=1,
                save_weights_only=True,
                enable_version_counter=False,
            ),
        )
    if progress_lines:
        callbacks.append(EpochLineProgress())
    return callbacks + analytics_callbacks(analytics, module, experiment, has_validation, control)


def analytics_callbacks(
    settings: Analytics,
    module: L.LightningModule,
    experiment: str,
    has_validation: bool,
    control: Callable[[str], tuple[FrozenTeacher, list[tuple[int, int]] | None]] | None = None,
) -> list[Callback]:
    """Analytics for the module's role: every run gets the generalisation gap (when there is a
    held-out split); ViT students the attention distance and the Hessian; a student with a
    teacher its CKA heatmap (key: the experiment's name) and, for a headless teacher, the k-NN
    probe; ``cka_against`` adds one control heatmap per named experiment's teacher."""
    if not settings.enabled:
        return []
    out: list[Callback] = []
    if has_validation:
        out.append(settings.callback("generalisation"))
    if is_vit(module.model):
        out.append(settings.callback("attention"))
        out.append(settings.callback("hessian"))
    teacher = module.teacher
    if teacher is not None and is_vit(module.model):
        out.append(settings.callback("cka", key=experiment))
    if teacher is not None and not teacher.has_head:
        out.append(settings.callback("knn"))
    for key in settings.cka_against:
        if key == experiment or not is_vit(module.model):
            continue
        if control is None:
            raise ValueError(f"analytics.cka_against {key}: pass control=... (the teacher of each named experiment)")
        try:
            control_teacher, trained_pairs = control(key)
        except FileNotFoundError as missing:  # a control, not a dependency: this run goes on without it
            log.info(f"{experiment}: CKA control against the {key} teacher skipped: {missing}")
            continue
        out.append(settings.callback("cka", teacher=control_teacher, key=key, trained_pairs=trained_pairs))
    return out


# --------------------------------------------------------------------------- checks


def _range(name: str, value: Any, ok: bool, valid: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {valid}, got {value!r}")


def _limit_ok(value: Any, allow_zero: bool) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if isinstance(value, int) or (value > 1 and float(value).is_integer()):  # Lightning: 8.0 means 8 batches
        return value >= (0 if allow_zero else 1)
    return (0.0 <= value <= 1.0) if allow_zero else (0.0 < value <= 1.0)


def check_trainer_settings(trainer: Mapping[str, Any]) -> None:
    """``ValueError`` (argument, value, valid range) for Trainer settings that Lightning would
    accept but that cannot give a result: no epoch, no training batch, no logging interval; a
    ``ModelCheckpoint`` in ``trainer.callbacks`` (the run's own checkpoints are the only ones)."""
    _check_user_callbacks(trainer.get("callbacks"))
    epochs = trainer.get("max_epochs")
    _range("trainer.max_epochs", epochs, isinstance(epochs, int) and epochs >= 1, "an integer >= 1")
    steps = trainer.get("max_steps", -1)
    _range("trainer.max_steps", steps, steps == -1 or (isinstance(steps, int) and steps >= 1), "-1 (no limit) or >= 1")
    for key, zero in (("limit_train_batches", False), ("limit_val_batches", True), ("limit_test_batches", False)):
        value = trainer.get(key)
        _range(
            f"trainer.{key}",
            value,
            _limit_ok(value, zero),
            f"None, an integer >= {0 if zero else 1} (batches) or a fraction in {'[0' if zero else '(0'}, 1]",
        )
    every = trainer.get("log_every_n_steps")
    _range("trainer.log_every_n_steps", every, every is None or (isinstance(every, int) and every >= 1), ">= 1")
    accumulate = trainer.get("accumulate_grad_batches", 1)
    _range("trainer.accumulate_grad_batches", accumulate, isinstance(accumulate, int) and accumulate >= 1, ">= 1")
    clip = trainer.get("gradient_clip_val")
    _range("trainer.gradient_clip_val", clip, clip is None or (isinstance(clip, numbers.Real) and clip >= 0), ">= 0")
    every = trainer.get("check_val_every_n_epoch", 1)
    _range(
        "trainer.check_val_every_n_epoch",
        every,
        every is None or (isinstance(every, int) and not isinstance(every, bool) and every >= 1),
        "None or an integer >= 1",
    )
    interval = trainer.get("val_check_interval")
    _range(
        "trainer.val_check_interval",
        interval,
        interval is None or (_limit_ok(interval, False) and not isinstance(interval, bool)),
        "None, an integer >= 1 (batches) or a fraction in (0, 1]",
    )


def allowed_changes(given: Any) -> set[str]:
    """``--allow_changed`` as a set of keys (comma-separated or a list); ``ValueError`` for a
    key outside :data:`RESUME_SAFE_CHANGES`."""
    keys = given if isinstance(given, (list, tuple)) else str(given or "").split(",")
    allowed = {key.strip() for key in keys if key.strip()}
    unsafe = sorted(allowed - set(RESUME_SAFE_CHANGES))
    if unsafe:
        raise ValueError(f"--allow_changed accepts only {', '.join(RESUME_SAFE_CHANGES)}, got {', '.join(unsafe)}")
    return allowed


def check_run_flags(resume: bool, allow_changed: Any) -> None:
    """``--allow_changed`` only with ``--resume`` (and only safe keys)."""
    if allowed_changes(allow_changed) and not resume:
        raise ValueError("--allow_changed applies to --resume only; add --resume, or drop --allow_changed.")


def _check_user_callbacks(callbacks: Any) -> None:
    import sys

    from lightning.pytorch.callbacks import ModelCheckpoint

    for item in callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []:
        path = str(item.get("class_path", "")) if isinstance(item, Mapping) else ""
        module, _, name = path.rpartition(".")
        cls = getattr(sys.modules.get(module), name, None)  # imported by the parser already
        if isinstance(cls, type) and issubclass(cls, ModelCheckpoint):
            raise ValueError(
                f"trainer.callbacks: {name} is not needed: every run writes checkpoints/last.ckpt and best.ckpt (by "
                "the held-out val/acc) itself, and a second ModelCheckpoint cannot be saved beside them. Drop it."
            )


def check_teacher_spec(name: str, module: str, teacher: Any) -> None:
    """A teacher spec's own argument checks (nothing built): ``arch_kwargs`` that are shape
    arguments only (never weight-loading ones, never ``num_classes``). Whether a
    :class:`~kdbias.teacher.PretrainedTeacher`'s weights carry the head soft KL needs is checked by
    the runner on the weights themselves (:meth:`~kdbias.teacher.PretrainedTeacher.check_logits`)."""
    spec_like = isinstance(teacher, Mapping) and "class_path" in teacher
    if not spec_like and not (isinstance(teacher, str) and teacher.startswith(RANDOM_PREFIX)):
        return
    try:
        teacher_spec(dict(teacher) if isinstance(teacher, Mapping) else teacher)  # its own argument checks
    except TypeError as error:  # an init argument the spec does not take
        raise ValueError(f"model.teacher: {error}") from None
