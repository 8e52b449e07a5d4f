"""What the rows beyond the plan (registry group ``"why"``) add to a run.

- :func:`resolve_teacher` (the one teacher resolver, :mod:`kdbias.runs.teachers`): the teacher
  checkpoint of ``model.teacher: auto``, an accuracy-matched snapshot for ``exp1_matched``.
- :func:`control_teacher`: the teacher a CKA control measures a student against (built).
- :func:`why_callbacks`: a teacher run that some row matches by accuracy (``teacher_resnet18``)
  keeps weight snapshots every k epochs (:class:`~kdbias.callbacks.snapshots.SnapshotCallback`);
  students measure their fidelity to their teacher, the baseline to every teacher
  (:class:`~kdbias.callbacks.fidelity.FidelityCallback`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from kdbias import registry, runs
from kdbias.callbacks.fidelity import OWN, FidelityCallback
from kdbias.callbacks.snapshots import SnapshotCallback
from kdbias.data import DATASETS
from kdbias.runs.teachers import closest_snapshot, matched_teacher_checkpoint, resolve_teacher
from kdbias.study import EVERY_TEACHER
from kdbias.teacher import FrozenTeacher, PretrainedTeacher, RandomTeacher

__all__ = [
    "Control",
    "RANDOM_KEY",
    "SNAPSHOT_EVERY",
    "closest_snapshot",
    "control_teacher",
    "fidelity_references",
    "matched_teacher_checkpoint",
    "resolve_teacher",
    "why_callbacks",
]

#: Epochs between teacher snapshots, per preset (ResNet-18, 200 epochs: 20 snapshots of 45 MB).
SNAPSHOT_EVERY = {"paper": 10, "smoke": 1}
#: Fidelity key of the untrained, seeded ResNet-18 (``exp_random_teacher``'s teacher).
RANDOM_KEY = "random_teacher"
RANDOM_ARCH = "resnet18_cifar"

#: What ``control_teacher`` returns: the teacher, and the cells its loss trains (or ``None``).
Control = tuple[FrozenTeacher, list[tuple[int, int]] | None]


def control_teacher(other: registry.Experiment, run: runs.Run, model: Any) -> Control:
    """The teacher that experiment ``other`` distils from (a CKA control of ``run``: its runs
    folder, dataset and preset), and the cells its loss trains: the checkpoint
    :func:`resolve_teacher` names (``FileNotFoundError`` when there is none yet), or the frozen
    teacher of its preset's ``model`` configuration (``model``, as :func:`kdbias.cli.preset_config`
    parses it)."""
    dataset = str(run.dataset)
    if other.teacher is not None:
        path = runs.resolve_teacher(run.runs_dir, other, dataset, str(run.preset))
        num_classes = DATASETS[dataset].num_classes
        return FrozenTeacher.from_checkpoint(path, dataset, num_classes, family=other.teacher_family), None
    if other.module != "CKADistillModule":
        raise ValueError(f"analytics.cka_against: {other.name} has no teacher to measure against")
    kwargs = model.get("teacher_kwargs")
    kwargs = kwargs.as_dict() if hasattr(kwargs, "as_dict") else kwargs
    spec = PretrainedTeacher(model.teacher, model.teacher_pretrained, model.teacher_image_size, kwargs)
    return spec.build(dataset), [tuple(p) for p in model.layer_pairs]


def _load(run: runs.Run, key: str, num_classes: int) -> FrozenTeacher:
    dataset = str(run.dataset)
    if key == RANDOM_KEY:
        return RandomTeacher(RANDOM_ARCH).build(dataset, num_classes)
    path = runs.teacher_checkpoint(run.runs_dir, key, dataset, str(run.preset))
    return FrozenTeacher.from_checkpoint(path, dataset, num_classes)


def _has_selected_checkpoint(run: runs.Run, key: str) -> bool:
    """Whether the newest complete ``key`` run still holds its selected checkpoint (a deleted
    one makes the control "not measured" now, not a failure at test time); one that leads
    outside its run is a :class:`~kdbias.runs.RunPathError`."""
    try:
        runs.teacher_checkpoint(run.runs_dir, key, str(run.dataset), str(run.preset))
    except FileNotFoundError:
        return False
    return True


def fidelity_references(
    experiment: registry.Experiment,
    run: runs.Run,
    num_classes: int,
    teacher_run: str | None = None,
) -> tuple[dict[str, Callable[[], FrozenTeacher] | str], str | None]:
    """``({key: teacher loader or OWN}, primary key)`` of the fidelity measured for ``experiment``
    in ``run`` (its runs folder, dataset and preset; no folder needed):
    its own teacher (key: ``teacher_run`` when the run names its teacher run, else
    ``experiment.teacher``, or :data:`RANDOM_KEY`) and the controls of
    the row's ``fidelity_against`` (:mod:`kdbias.study`; ``every teacher``: every teacher row and
    the random teacher) whose teacher runs are complete (others are "not measured"). A distilling
    student without a teacher row takes the first of those as its own."""
    out: dict[str, Callable[[], FrozenTeacher] | str] = {}
    primary = None
    if experiment.role == "student" and experiment.module == "KLDistillModule":
        primary = teacher_run or experiment.teacher or RANDOM_KEY
        out[primary] = OWN
    if experiment.module == "CKADistillModule" and (teacher_run or experiment.teacher) is not None:
        primary = teacher_run or experiment.teacher
        out[primary] = OWN
    controls: list[str] = []
    for key in experiment.fidelity_against:
        every = (*registry.select(registry.GROUPS)[0], RANDOM_KEY) if key == EVERY_TEACHER else (key,)
        controls += [k for k in every if k not in controls]
    for key in controls:
        if key == RANDOM_KEY or _has_selected_checkpoint(run, key):
            out.setdefault(key, partial(_load, run, key, num_classes))
    distils = experiment.role == "student" and experiment.module != "TeacherModule"
    if primary is None and distils and controls and controls[0] in out:
        primary = controls[0]
    return out, primary


def why_callbacks(
    experiment: registry.Experiment, run: runs.Run, module: Any, teacher_run: str | None = None
) -> list[Any]:
    """Snapshots for a matched-from teacher run; fidelity for students (see the module docstring;
    ``teacher_run``: the teacher run the student names, the key of its fidelity)."""
    if experiment.role == "teacher":
        matched = any(e.teacher == experiment.name and e.teacher_matched_to for e in registry.ALL_EXPERIMENTS.values())
        every = SNAPSHOT_EVERY.get(run.preset, SNAPSHOT_EVERY["paper"])
        return [SnapshotCallback(run.snapshots, every)] if matched else []
    teachers, primary = fidelity_references(experiment, run, module.num_classes, teacher_run)
    return [FidelityCallback(teachers, primary)] if teachers else []
