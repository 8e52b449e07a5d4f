"""The study being run: its rows (experiments) and declared hypotheses, read from a study file.

Rows and hypotheses are data (:mod:`kdbias.study`): the research plan's matrix and the rows beyond
it ship as ``kdbias/studies/plan.yaml`` and ``why.yaml`` with their presets (package data); a
user's own study is a YAML file of the same format, activated with :func:`activate` (``run_all
--study FILE``, ``python -m kdbias.run --study FILE``, ``python -m kdbias.report --study FILE``).
Every command, the report and the benchmark read the rows from here; nothing else lists them.

Presets are YAML pieces (:meth:`kdbias.study.Experiment.config_files`): ``paper``: ``common.yaml``,
``analytics.yaml``, then the row's pieces; ``smoke`` (offline CPU preset, ``--smoke``): the paper
files, then ``smoke/<piece>.yaml`` for each piece that has one. Later files override earlier ones,
so each number of the plan is written once, in the piece that owns it.

Module attributes (rebound by :func:`activate`): :data:`EXPERIMENTS` (the first group's rows: the
plan's matrix), :data:`WHY_EXPERIMENTS` (every other group's rows), :data:`ALL_EXPERIMENTS`,
:data:`TEACHERS` / :data:`STUDENTS` (of the first group), :data:`GROUPS`, :data:`HYPOTHESES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kdbias.study import DEFAULT_STUDY, PRESETS, Experiment, Hypothesis, Study, StudyError, study_path
from kdbias.study_files import load_study

__all__ = [
    "ALL_EXPERIMENTS",
    "EXPERIMENTS",
    "Experiment",
    "GROUPS",
    "HYPOTHESES",
    "Hypothesis",
    "PRESETS",
    "STUDENTS",
    "DEFAULT_STUDY",
    "Study",
    "StudyError",
    "TEACHERS",
    "WHY_EXPERIMENTS",
    "activate",
    "active",
    "get",
    "hypotheses",
    "reference",
    "select",
    "study_args",
]

_ACTIVE: Study
EXPERIMENTS: dict[str, Experiment]
WHY_EXPERIMENTS: dict[str, Experiment]
ALL_EXPERIMENTS: dict[str, Experiment]
TEACHERS: tuple[str, ...]
STUDENTS: tuple[str, ...]
GROUPS: tuple[str, ...]
HYPOTHESES: tuple[Hypothesis, ...]


def activate(study: Study | str | Path = DEFAULT_STUDY) -> Study:
    """Make ``study`` (a :class:`~kdbias.study.Study`, a shipped study's name or a file) the one
    every command of this process reads; returns it. :class:`~kdbias.study.StudyError` for a bad file."""
    global _ACTIVE, EXPERIMENTS, WHY_EXPERIMENTS, ALL_EXPERIMENTS, TEACHERS, STUDENTS, GROUPS, HYPOTHESES
    chosen = study if isinstance(study, Study) else load_study(study)
    first = chosen.groups[0] if chosen.groups else ""
    _ACTIVE = chosen
    EXPERIMENTS = {row.name: row for row in chosen.rows if row.group == first}
    WHY_EXPERIMENTS = {row.name: row for row in chosen.rows if row.group != first}
    ALL_EXPERIMENTS = {**EXPERIMENTS, **WHY_EXPERIMENTS}
    TEACHERS = tuple(e.name for e in EXPERIMENTS.values() if e.role == "teacher")
    STUDENTS = tuple(e.name for e in EXPERIMENTS.values() if e.role == "student")
    GROUPS = chosen.groups
    HYPOTHESES = chosen.hypotheses
    return chosen


def active() -> Study:
    """The study this process runs (:func:`activate`; the shipped plan and why rows by default)."""
    return _ACTIVE


def study_args() -> list[str]:
    """``["--study", FILE]`` that makes another process run the active study (``[]`` for the
    shipped default): what launchers add to every command they start."""
    source = _ACTIVE.source
    return [] if source == study_path(DEFAULT_STUDY).resolve() else ["--study", str(source)]


def reference() -> str | None:
    """The study's reference student (``reference: true``: vanilla CE, the control of every Δ), if any."""
    return next((e.name for e in ALL_EXPERIMENTS.values() if e.reference), None)


def hypotheses(groups: Sequence[str] | None = None) -> tuple[Hypothesis, ...]:
    """The declared hypotheses of ``groups`` (default: all), in declaration order."""
    return tuple(h for h in HYPOTHESES if groups is None or h.group in groups)


def get(name: str) -> Experiment:
    """The row called ``name`` (any group); ``ValueError`` naming the valid ones otherwise."""
    try:
        return ALL_EXPERIMENTS[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(ALL_EXPERIMENTS)}") from None


def select(groups: str | Sequence[str] | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(teachers, students)`` of the rows in ``groups`` (``"plan,why"``, a sequence, or ``None``:
    the first group), each in declaration order, with the rows they depend on (``depends_on``,
    ``teacher``) from other groups: every teacher before any student, so every dependency is met
    by run order. ``ValueError`` for an unknown group."""
    if groups is None:
        groups = GROUPS[:1]
    names = [g.strip() for g in (groups.split(",") if isinstance(groups, str) else groups) if g.strip()]
    unknown = [g for g in names if g not in GROUPS]
    if unknown or not names:
        raise ValueError(f"unknown group(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(GROUPS)}")
    chosen = {e.name for e in ALL_EXPERIMENTS.values() if e.group in names}
    pending = list(chosen)
    while pending:  # rows of other groups that chosen rows need (the plan's ResNet-18 teacher for exp1_cka)
        row = ALL_EXPERIMENTS[pending.pop()]
        for dependency in (*row.depends_on, *([row.teacher] if row.teacher else [])):
            if dependency not in chosen:
                chosen.add(dependency)
                pending.append(dependency)
    rows = [e for e in ALL_EXPERIMENTS.values() if e.name in chosen]
    return tuple(e.name for e in rows if e.role == "teacher"), tuple(e.name for e in rows if e.role == "student")


activate()
