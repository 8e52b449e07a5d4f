"""The experiment matrix of the research plan: the one list of runs.

Every run of the plan is one :class:`Experiment`: its name (``runs/<name>/``,
``experiments/<name>.py``), its report label, the LightningModule it trains, the YAML
pieces its presets are composed of, and what it depends on. The scripts in
``experiments/``, ``run_all.py``, :mod:`kdbias.report` and the benchmark all read this
module; nothing else lists the experiments.

Presets are YAML files under ``experiments/configs/`` (see :meth:`Experiment.config_files`):

- ``paper``: ``common.yaml``, ``analytics.yaml``, then the experiment's ``pieces``;
- ``smoke`` (offline CPU preset, ``--smoke``): the paper files, then ``smoke/common.yaml``,
  ``smoke/analytics.yaml`` and ``smoke/<piece>.yaml`` for each piece that has one.

Later files override earlier ones, so each number of the plan is written once, in the
piece that owns it (``student.yaml``: the student recipe; ``soft_kl.yaml``: tau and alpha).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ALL_EXPERIMENTS",
    "EXPERIMENTS",
    "Experiment",
    "GROUPS",
    "PRESETS",
    "STUDENTS",
    "TEACHERS",
    "WHY_EXPERIMENTS",
    "get",
    "select",
]

PRESETS: tuple[str, ...] = ("paper", "smoke")
#: Row groups: ``"plan"`` (the research plan's matrix) and ``"why"`` (beyond the plan: the
#: controls that say *why*, see :data:`WHY_EXPERIMENTS`).
GROUPS: tuple[str, ...] = ("plan", "why")
_SHARED = ("common", "analytics")


@dataclass(frozen=True)
class Experiment:
    """One run of the experiment matrix.

    Attributes:
        name: run name: ``runs/<name>/version_<n>/`` and ``experiments/<name>.py``.
        label: how the report names it (``"EXP-1"``).
        module: class name in :mod:`kdbias.modules` of the LightningModule it trains.
        pieces: YAML pieces (``experiments/configs/<piece>.yaml``) composed after the shared ones.
        role: ``"teacher"`` (trained once per matrix) or ``"student"`` (trained for every seed).
        teacher: the experiment whose selected checkpoint it distils from, when the config
            says ``model.teacher: auto``.
        teacher_family: timm class family (``"ResNet"``, ``"ConvNeXt"``) an automatically found
            teacher must have.
        control_of: the experiment this run is the matched control of (same batch and steps).
        depends_on: experiments whose completed runs it needs (its teacher; the teachers it
            is measured against as CKA controls).
        description: one line for ``--help`` and the report.
        group: ``"plan"`` (the research plan's rows) or ``"why"`` (beyond the plan).
        teacher_matched_to: with ``teacher``: distil from the snapshot of ``teacher``'s run whose
            held-out accuracy is closest to the held-out accuracy of this experiment's
            selected checkpoint (:func:`kdbias.runs.teachers.matched_teacher_checkpoint`).
    """

    name: str
    label: str
    module: str
    pieces: tuple[str, ...]
    role: str
    description: str
    teacher: str | None = None
    teacher_family: str | None = None
    control_of: str | None = None
    depends_on: tuple[str, ...] = ()
    group: str = "plan"
    teacher_matched_to: str | None = None

    @property
    def module_class(self) -> type:
        """The LightningModule class (imported on first use)."""
        return getattr(importlib.import_module("kdbias.modules"), self.module)

    def config_files(self, configs_dir: str | Path, preset: str = "paper") -> list[Path]:
        """The preset's YAML files, in the order they are applied (later ones win)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        root = Path(configs_dir)
        pieces = (*_SHARED, *self.pieces)
        files = [root / f"{piece}.yaml" for piece in pieces]
        if preset == "smoke":
            files += [path for path in (root / "smoke" / f"{piece}.yaml" for piece in pieces) if path.is_file()]
        return files


_MATRIX = (
    Experiment(
        "teacher_resnet18",
        "ResNet-18 teacher",
        "TeacherModule",
        ("teacher_resnet18",),
        "teacher",
        "Phase 1: ResNet-18 teacher (3x3 stride-1 stem, no max-pool), SGD + cosine, CutMix; target > 94 %.",
    ),
    Experiment(
        "teacher_convnextv2",
        "ConvNeXt V2 teacher",
        "TeacherModule",
        ("teacher_convnextv2",),
        "teacher",
        "Phase 1: ConvNeXt V2-Tiny teacher, ImageNet weights, fresh 2x2 stride-2 stem; AdamW + cosine; target > 95 %.",
    ),
    Experiment(
        "baseline",
        "Baseline",
        "TeacherModule",
        ("student", "baseline", "cka_controls"),
        "student",
        "Baseline: DeiT student (patch 4 on 32 px) with vanilla cross-entropy; CKA against every teacher.",
        depends_on=("teacher_resnet18", "teacher_convnextv2"),
    ),
    Experiment(
        "baseline_b512",
        "Baseline (b512)",
        "TeacherModule",
        ("student", "student_b512", "baseline"),
        "student",
        "Matched control of EXP-3: the baseline at EXP-3's batch size and optimiser step count.",
        control_of="exp3",
    ),
    Experiment(
        "exp1",
        "EXP-1",
        "KLDistillModule",
        ("student", "soft_kl", "exp1"),
        "student",
        "EXP-1: DeiT student distilled from the ResNet-18 teacher with soft KL.",
        teacher="teacher_resnet18",
        teacher_family="ResNet",
        depends_on=("teacher_resnet18",),
    ),
    Experiment(
        "exp2",
        "EXP-2",
        "KLDistillModule",
        ("student", "soft_kl", "exp2"),
        "student",
        "EXP-2: DeiT student distilled from the ConvNeXt V2 teacher with soft KL.",
        teacher="teacher_convnextv2",
        teacher_family="ConvNeXt",
        depends_on=("teacher_convnextv2",),
    ),
    Experiment(
        "exp3",
        "EXP-3",
        "CKADistillModule",
        ("student", "student_b512", "exp3"),
        "student",
        "EXP-3: DeiT student with structural (CKA + token) distillation from a frozen DINOv2-S/14.",
    ),
)

_WHY = (
    Experiment(
        "exp1_cka",
        "EXP-1 CKA",
        "CKADistillModule",
        ("student", "student_b512", "exp3", "exp1_cka"),
        "student",
        "Beyond the plan: EXP-3's loss (CE + CKA + token, EXP-3's lambdas and batch) from the ResNet-18 teacher; "
        "blocks paired by relative depth.",
        teacher="teacher_resnet18",
        teacher_family="ResNet",
        depends_on=("teacher_resnet18",),
        group="why",
    ),
    Experiment(
        "teacher_dinov2_probe",
        "DINOv2 probe teacher",
        "ProbeTeacherModule",
        ("teacher_dinov2_probe",),
        "teacher",
        "Beyond the plan, Phase 1: frozen DINOv2-S/14 (EXP-3's backbone and input size) + a linear head trained "
        "on the training split (a linear probe): DINOv2's teacher accuracy and logits.",
        group="why",
    ),
    Experiment(
        "exp3_kl",
        "EXP-3 KL",
        "KLDistillModule",
        ("student", "soft_kl", "exp3_kl"),
        "student",
        "Beyond the plan: soft KL (EXP-1's tau and alpha) from the linear-probed DINOv2.",
        teacher="teacher_dinov2_probe",
        teacher_family="VisionTransformer",
        depends_on=("teacher_dinov2_probe",),
        group="why",
    ),
    Experiment(
        "teacher_deit",
        "DeiT-S teacher",
        "TeacherModule",
        ("student", "teacher_deit"),
        "teacher",
        "Beyond the plan, Phase 1: a ViT teacher of the student's family (DeiT-Small, patch 4 at 32 px), the "
        "student recipe, CE.",
        group="why",
    ),
    Experiment(
        "exp_vit_kl",
        "ViT KL",
        "KLDistillModule",
        ("student", "soft_kl", "exp_vit_kl"),
        "student",
        "Beyond the plan: soft KL from the DeiT-Small teacher: KD without an inductive-bias mismatch.",
        teacher="teacher_deit",
        teacher_family="VisionTransformer",
        depends_on=("teacher_deit",),
        group="why",
    ),
    Experiment(
        "exp1_matched",
        "EXP-1 matched",
        "KLDistillModule",
        ("student", "soft_kl", "exp1_matched"),
        "student",
        "Beyond the plan: soft KL from the ResNet-18 snapshot whose held-out accuracy is closest to the DeiT-S "
        "teacher's (selection on the held-out split only).",
        teacher="teacher_resnet18",
        teacher_family="ResNet",
        depends_on=("teacher_resnet18", "teacher_deit"),
        group="why",
        teacher_matched_to="teacher_deit",
    ),
    Experiment(
        "exp_random_teacher",
        "Random teacher",
        "KLDistillModule",
        ("student", "soft_kl", "exp_random_teacher"),
        "student",
        "Beyond the plan: soft KL from an untrained, seeded ResNet-18: a teacher signal without knowledge.",
        group="why",
    ),
)

#: The research plan's rows (what the report's plan sections, the benchmark and ``run_all`` by default use).
EXPERIMENTS: dict[str, Experiment] = {experiment.name: experiment for experiment in _MATRIX}
TEACHERS: tuple[str, ...] = tuple(e.name for e in _MATRIX if e.role == "teacher")
STUDENTS: tuple[str, ...] = tuple(e.name for e in _MATRIX if e.role == "student")
#: The rows beyond the plan (group ``"why"``) and every row.
WHY_EXPERIMENTS: dict[str, Experiment] = {experiment.name: experiment for experiment in _WHY}
ALL_EXPERIMENTS: dict[str, Experiment] = {**EXPERIMENTS, **WHY_EXPERIMENTS}


def get(name: str) -> Experiment:
    """The experiment called ``name`` (any group); ``ValueError`` naming the valid ones otherwise."""
    try:
        return ALL_EXPERIMENTS[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(ALL_EXPERIMENTS)}") from None


def select(groups: str | Sequence[str] = ("plan",)) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(teachers, students)`` of the rows in ``groups`` (``"plan,why"`` or a sequence), each in
    registry order, plan rows first, with the rows they depend on (``depends_on``) from other
    groups: every teacher before any student, so every dependency is met by run order.
    ``ValueError`` for an unknown group."""
    names = [g.strip() for g in (groups.split(",") if isinstance(groups, str) else groups) if g.strip()]
    unknown = [g for g in names if g not in GROUPS]
    if unknown or not names:
        raise ValueError(f"unknown group(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(GROUPS)}")
    chosen = {e.name for e in ALL_EXPERIMENTS.values() if e.group in names}
    pending = list(chosen)
    while pending:  # rows of other groups that chosen rows need (the plan's ResNet-18 teacher for exp1_cka)
        for dependency in ALL_EXPERIMENTS[pending.pop()].depends_on:
            if dependency not in chosen:
                chosen.add(dependency)
                pending.append(dependency)
    rows = [e for e in ALL_EXPERIMENTS.values() if e.name in chosen]
    return tuple(e.name for e in rows if e.role == "teacher"), tuple(e.name for e in rows if e.role == "student")
