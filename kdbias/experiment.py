"""What a command-line run adds to a Trainer: analytics settings, callbacks, checkpoints, checks.

:mod:`kdbias.cli` parses the configuration; this module turns its run-level parts into
Lightning objects and checks what Lightning would accept silently:

- :class:`Analytics`: the Phase-3 settings of a run (``analytics:`` in the presets);
- :func:`run_callbacks`: checkpointing (``last.ckpt`` every epoch, ``best.ckpt`` by the
  held-out ``val/acc``), the summary, the learning-rate monitor, the non-finite guard, the
  RNG state, progress lines, and the analytics for the module's role;
- :func:`check_trainer_settings`: ranges of the Trainer arguments;
- :func:`config_changes`: what differs between a saved configuration and a new one.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint

from kdbias.callbacks import (
    AttentionDistanceCallback,
    CKAHeatmapCallback,
    EpochLineProgress,
    GeneralisationGapCallback,
    HessianCallback,
    NonFiniteGuard,
    PredictionsCallback,
    RNGStateCallback,
    SummaryCallback,
    TeacherKNNCallback,
)
from kdbias.models import is_vit
from kdbias.runs import BEST_CKPT, CHECKPOINT_DIR, LAST_CKPT
from kdbias.teacher import FrozenTeacher

__all__ = [
    "Analytics",
    "RESUME_SAFE_CHANGES",
    "RUN_LOCAL_KEYS",
    "check_trainer_settings",
    "config_changes",
    "flatten",
    "run_callbacks",
]

#: Configuration keys that say where and how a run executes, not what it computes: a
#: change is never an error on ``--resume`` and they are left out of a run's signature.
RUN_LOCAL_KEYS = (
    "resume",
    "allow_changed",
    "runs_dir",
    "data.num_workers",
    "data.pin_memory",
    "data.data_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.plugins",
    "trainer.benchmark",
    "config",
)
#: Changes ``--resume --allow_changed KEY`` accepts (then applied to the schedule).
RESUME_SAFE_CHANGES = ("trainer.max_epochs",)


@dataclass(frozen=True)
class Analytics:
    """Phase-3 analytics of a run, measured off the hot path on fixed images.

    Every ``*_every`` counts epochs; ``*_images`` count fixed images (held-out split for
    attention and CKA, unaugmented training images for the Hessian and the generalisation
    gap). See :mod:`kdbias.callbacks` for what each measures.

    Args:
        enabled: run the analytics at all.
        attn_every, attn_images: mean attention distance (ViT students).
        hessian_every, hessian_images, hessian_max_iter: Hessian trace (Hutchinson probes)
            and top eigenvalue (power iterations) of the student's CE; also at fit end.
        cka_every, cka_batches, cka_batch_size: CKA heatmaps, student blocks x teacher blocks.
        cka_against: experiments whose teachers the student is also measured against, as
            controls (measurement only), e.g. ``["exp1", "exp2", "exp3"]`` for the baseline.
        gen_gap_every, gen_gap_images: train-minus-held-out accuracy in eval mode.
        knn_train, knn_test: images of the weighted k-NN probe of a headless teacher.
    """

    enabled: bool
    attn_every: int
    attn_images: int
    hessian_every: int
    hessian_images: int
    hessian_max_iter: int
    cka_every: int
    cka_batches: int
    cka_batch_size: int
    gen_gap_every: int
    gen_gap_images: int
    knn_train: int
    knn_test: int
    cka_against: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ValueError(f"analytics.{field.name} must be >= 1, got {value}")
        if self.cka_batch_size < 4:
            raise ValueError(f"analytics.cka_batch_size must be >= 4 (unbiased HSIC), got {self.cka_batch_size}")


def run_callbacks(
    *,
    module: L.LightningModule,
    run_dir: Path,
    experiment: str,
    dataset: str,
    preset: str,
    seed: int,
    analytics: Analytics,
    has_validation: bool,
    progress_lines: bool,
    log_every_n_steps: int,
    control: Callable[[str], tuple[FrozenTeacher, list[tuple[int, int]] | None]],
    summary_extra: dict[str, Any],
) -> list[Callback]:
    """The callbacks of one experiment run (see the module docstring).

    ``control(key)`` returns the teacher of experiment ``key`` and the cells its loss
    trains (for CKA controls, ``analytics.cka_against``).
    """
    folder = run_dir / CHECKPOINT_DIR
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=folder, filename=Path(LAST_CKPT).stem, save_top_k=1, enable_version_counter=False),
        SummaryCallback(experiment, dataset, preset, seed, extra=summary_extra),
        LearningRateMonitor(logging_interval="step"),
        NonFiniteGuard(check_every_n_steps=log_every_n_steps),
        RNGStateCallback(),
        PredictionsCallback(),
    ]
    if has_validation:
        callbacks.insert(
            0,
            ModelCheckpoint(
                dirpath=folder,
                filename=Path(BEST_CKPT).stem,
                monitor="val/acc",
                mode="max",
                save_top_k=1,
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
    control: Callable[[str], tuple[FrozenTeacher, list[tuple[int, int]] | None]],
) -> list[Callback]:
    """Analytics for the module's role: every run gets the generalisation gap (when there is a
    held-out split); ViT students the attention distance and the Hessian; a student with a
    teacher its CKA heatmap (key: the experiment's name) and, for a headless teacher, the k-NN
    probe; ``cka_against`` adds one control heatmap per named experiment's teacher."""
    if not settings.enabled:
        return []
    out: list[Callback] = []
    if has_validation:
        out.append(GeneralisationGapCallback(settings.gen_gap_every, settings.gen_gap_images))
    if is_vit(module.model):
        out.append(AttentionDistanceCallback(settings.attn_every, settings.attn_images))
        out.append(HessianCallback(settings.hessian_every, settings.hessian_images, max_iter=settings.hessian_max_iter))
    cka = dict(every_n_epochs=settings.cka_every, num_batches=settings.cka_batches, batch_size=settings.cka_batch_size)
    teacher = getattr(module, "teacher", None)
    if teacher is not None and is_vit(module.model):
        out.append(CKAHeatmapCallback(key=experiment, **cka))
    if teacher is not None and not teacher.has_head:
        out.append(TeacherKNNCallback(num_train=settings.knn_train, num_val=settings.knn_test))
    for key in settings.cka_against:
        if key == experiment or not is_vit(module.model):
            continue
        control_teacher, trained_pairs = control(key)
        out.append(CKAHeatmapCallback(teacher=control_teacher, key=key, trained_pairs=trained_pairs, **cka))
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
    accept but that cannot give a result: no epoch, no training batch, no logging interval."""
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


# --------------------------------------------------------------------------- configurations


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and other values are leaves)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _local(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in RUN_LOCAL_KEYS)


def config_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two configurations, ``{key: (saved, new)}``,
    run-local keys (:data:`RUN_LOCAL_KEYS`) left out."""
    a, b = flatten(saved), flatten(new)
    changed = {}
    for key in sorted(set(a) | set(b)):
        if not _local(key) and _plain(a.get(key)) != _plain(b.get(key)):
            changed[key] = (a.get(key), b.get(key))
    return changed


def _plain(value: Any) -> Any:
    """Tuples as lists, so that YAML round trips compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def signature_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration without run-local keys and seeds: what runs averaged into one
    report cell must share."""
    flat = flatten(config)
    return {
        k: _plain(v) for k, v in sorted(flat.items()) if not _local(k) and k not in ("seed_everything", "data.seed")
    }
