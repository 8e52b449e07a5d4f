"""A study as data: its rows (runs) and its declared comparisons, read from a YAML file.

A study file (the plan's matrix and the why rows ship as ``kdbias/studies/plan.yaml`` and
``why.yaml``; ``run_all --study FILE`` runs a user's own)::

    study: my_study                      # the study's name
    description: one line
    group: mine                          # default group of its rows and hypotheses
    include: [plan]                      # shipped studies (or files, relative to this one) whose rows it uses
    rows:
      - name: exp1_t4                    # runs/<name>/version_<n>/
        label: EXP-1 τ=4                 # how the report names it
        module: kdbias.modules.KLDistillModule
        pieces: [student, soft_kl, exp1] # presets: configs/<piece>.yaml (smoke: configs/smoke/<piece>.yaml)
        overrides: {model.temperature: 4.0}   # applied after the pieces, before the command line
        role: student                    # or teacher (trained once per matrix)
        teacher: teacher_resnet18        # the row whose selected checkpoint model.teacher: auto names
        teacher_family: ResNet
        description: one line for --help and the report
    hypotheses:
      - key: t4_over_exp1
        question: Does τ = 4 beat τ = 2?
        contrast: {exp1_t4: 1, exp1: -1}  # Δ = Σ weight · test accuracy, image by image, paired by seed
        claim: ">"                        # ">", ">=", "<" or "<=": Δ <claim> threshold
        threshold: 0.0                    # fraction (0.03 = +3 pp)
        confirmatory: false               # corrected with the study's other confirmatory ones (Holm)
    fidelity: {baseline: [teacher_x]}     # teachers a row (an included one too) is also measured against
    report: {...}                         # the report's declared sections (kdbias.report reads them)

Presets are looked up first in ``configs/`` beside the study file, then in the shipped presets
(:data:`SHIPPED_CONFIGS`). A file is read bounded (size, aliases, depth; :mod:`kdbias.config_files`)
and checked whole before anything is imported: unknown keys, names no row declares, a module
outside ``kdbias.``/``lightning.pytorch.`` or a dependency cycle are one :class:`StudyError` naming
the file and the fix (:func:`kdbias.study_files.load_study`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLAIMS",
    "DEFAULT_STUDY",
    "EVERY_TEACHER",
    "NAME_PATTERN",
    "Experiment",
    "Hypothesis",
    "PRESETS",
    "ROLES",
    "SHIPPED",
    "SHIPPED_CONFIGS",
    "Study",
    "StudyError",
    "study_path",
]

#: The shipped studies and presets (package data).
SHIPPED = Path(__file__).resolve().parent / "studies"
SHIPPED_CONFIGS = SHIPPED / "configs"
#: The study every command uses when none is named: the plan's matrix and the why rows
#: (``why.yaml`` includes ``plan.yaml``).
DEFAULT_STUDY = "why"
PRESETS: tuple[str, ...] = ("paper", "smoke")
ROLES = ("teacher", "student")
CLAIMS = (">", ">=", "<", "<=")
_SHARED = ("common", "analytics")
#: A row, group or study name: a folder name (lower-case letters, digits and ``_``).
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
EVERY_TEACHER = "every teacher"


class StudyError(ValueError):
    """A study file that cannot be used: the message names the file, the entry and the fix."""


@dataclass(frozen=True)
class Experiment:
    """One row of a study: one run per seed (a student) or per matrix (a teacher).

    Attributes:
        name: run name: ``runs/<name>/version_<n>/`` (and ``experiments/<name>.py`` for shipped rows).
        label: how the report names it (``"EXP-1"``).
        module_path: class path of the LightningModule it trains (``kdbias.modules.KLDistillModule``).
        pieces: preset pieces (``configs/<piece>.yaml``) composed after the shared ones.
        role: ``"teacher"`` (trained once per matrix) or ``"student"`` (trained for every seed).
        description: one line for ``--help`` and the report.
        teacher: the row whose selected checkpoint it distils from (``model.teacher: auto``).
        teacher_family: timm class family (``"ResNet"``) an automatically found teacher must have.
        control_of: the row this one is the matched control of (same batch and steps).
        depends_on: rows whose completed runs it needs (its teacher; teachers measured against).
        group: the row group (``run_all --groups``).
        teacher_matched_to: with ``teacher``: distil from the snapshot of ``teacher``'s run whose
            held-out accuracy is closest to that of this row's selected checkpoint.
        overrides: ``((dotted key, value), ...)`` applied after the pieces, before the command line.
        target: a teacher's qualification target (test accuracy, fraction), or ``None``.
        reference: the study's reference student (vanilla CE: the control of every Δ and of CKA).
        fidelity_against: teacher rows (or ``"random_teacher"``) whose agreement this student is
            measured against besides its own teacher (controls); ``("every teacher",)``: all of them.
            A distilling student without a teacher row reports the first as its own teacher's.
        compared_with: rows its report section compares it with besides the reference.
        configs_dirs: where its pieces are looked up, first first.
    """

    name: str
    label: str
    module_path: str
    pieces: tuple[str, ...]
    role: str
    description: str
    teacher: str | None = None
    teacher_family: str | None = None
    control_of: str | None = None
    depends_on: tuple[str, ...] = ()
    group: str = "plan"
    teacher_matched_to: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    target: float | None = None
    reference: bool = False
    fidelity_against: tuple[str, ...] = ()
    compared_with: tuple[str, ...] = ()
    configs_dirs: tuple[Path, ...] = field(default=(SHIPPED_CONFIGS,), compare=False, repr=False)

    @property
    def module(self) -> str:
        """The LightningModule's class name (``"KLDistillModule"``)."""
        return self.module_path.rsplit(".", 1)[-1]

    @property
    def module_class(self) -> type:
        """The LightningModule class (imported on first use)."""
        module, _, name = self.module_path.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def piece(self, relative: str) -> Path:
        """The first ``configs_dirs / relative`` that exists (else the first one, for the error)."""
        for root in self.configs_dirs:
            if (root / relative).is_file():
                return root / relative
        return self.configs_dirs[0] / relative

    def config_files(self, preset: str = "paper") -> list[Path]:
        """The preset's YAML files, in the order they are applied (later ones win): ``paper``:
        ``common``, ``analytics``, then the row's pieces; ``smoke``: those, then ``smoke/<piece>``
        for each piece that has one."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        pieces = (*_SHARED, *self.pieces)
        files = [self.piece(f"{piece}.yaml") for piece in pieces]
        if preset == "smoke":
            files += [path for path in (self.piece(f"smoke/{piece}.yaml") for piece in pieces) if path.is_file()]
        return files

    def override_args(self) -> list[str]:
        """``overrides`` as command-line arguments (``--model.temperature=4.0``), values as JSON."""
        import json

        return [f"--{key}={json.dumps(value)}" for key, value in self.overrides]


@dataclass(frozen=True)
class Hypothesis:
    """A comparison the study declares before it sees data: a contrast of rows' test accuracy and
    the claim about it.

    Attributes:
        key: short identifier (the report's anchor).
        question: the question in plain words.
        contrast: ``((row, weight), ...)``: ``Δ = Σ weight · acc(row)``, image by image on the same
            test images, paired by seed (a pair is ``((a, 1), (b, -1))``).
        claim: one of :data:`CLAIMS`: ``Δ <claim> threshold``.
        threshold: fraction (``0.03`` = +3 pp).
        confirmatory: corrected together with the study's other confirmatory hypotheses (Holm);
            ``False``: exploratory (uncorrected, labelled so).
        group: the row group whose runs it needs.
        matched: for a comparison at matched teacher accuracy, the two rows whose teachers' held-out
            accuracies must be shown equivalent (TOST) before a verdict is given.
    """

    key: str
    question: str
    contrast: tuple[tuple[str, float], ...]
    claim: str = ">"
    threshold: float = 0.0
    confirmatory: bool = False
    group: str = "plan"
    matched: tuple[str, str] | None = None

    @property
    def experiments(self) -> tuple[str, ...]:
        """The rows of the contrast, in order."""
        return tuple(name for name, _ in self.contrast)


@dataclass(frozen=True)
class Study:
    """A study: its rows in run order of declaration (included studies' first), its groups, its
    declared hypotheses and the report's declared sections (``report``: ``(file, mapping)`` per file, plain data)."""

    name: str
    description: str
    rows: tuple[Experiment, ...]
    hypotheses: tuple[Hypothesis, ...]
    groups: tuple[str, ...]
    own_groups: tuple[str, ...] = ()
    report: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    source: Path | None = None

    def row(self, name: str) -> Experiment:
        """The row called ``name``; ``ValueError`` naming the valid ones otherwise."""
        for row in self.rows:
            if row.name == name:
                return row
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(r.name for r in self.rows)}")


def study_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """The file of study ``name``: a shipped study's name (``"plan"``) or a path (relative to
    ``relative_to``, the including file's folder)."""
    text = str(name)
    if NAME_PATTERN.fullmatch(text) and (SHIPPED / f"{text}.yaml").is_file():
        return SHIPPED / f"{text}.yaml"
    path = Path(text).expanduser()
    return path if path.is_absolute() or relative_to is None else relative_to / path
