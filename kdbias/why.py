"""What the rows beyond the plan (registry group ``"why"``) add to a run.

- :func:`resolve_teacher`: the teacher checkpoint of ``model.teacher: auto``: the selected
  checkpoint of the teacher run (:func:`kdbias.runs.teacher_checkpoint`), or, for an
  experiment with ``teacher_matched_to`` (``exp1_matched``), the teacher snapshot whose
  held-out accuracy is closest to the reference teacher's (:func:`matched_teacher_checkpoint`).
- :func:`why_callbacks`: a teacher run that some row matches by accuracy (``teacher_resnet18``)
  keeps weight snapshots every k epochs (:class:`~kdbias.callbacks.snapshots.SnapshotCallback`);
  students measure their fidelity to their teacher, the baseline to every teacher
  (:class:`~kdbias.callbacks.fidelity.FidelityCallback`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from kdbias import registry, runs
from kdbias.callbacks.fidelity import OWN, FidelityCallback
from kdbias.callbacks.snapshots import SNAPSHOT_DIR, SNAPSHOT_INDEX, SnapshotCallback, read_snapshots
from kdbias.teacher import FrozenTeacher, RandomTeacher

__all__ = [
    "RANDOM_KEY",
    "SNAPSHOT_EVERY",
    "closest_snapshot",
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
#: Fidelity references besides a student's own teacher: the baseline against every teacher (the
#: control), EXP-3 (headless DINOv2) and its matched control against the linear-probed DINOv2
#: (same backbone).
CONTROL_REFERENCES = {
    "baseline": "every teacher",
    "baseline_b512": ("teacher_dinov2_probe",),  # EXP-3's matched control, against EXP-3's backbone
    "exp3": ("teacher_dinov2_probe",),
}


def closest_snapshot(candidates: Mapping[str, float], target: float) -> str:
    """The key of ``candidates`` (``{name: held-out accuracy}``) closest to ``target``; ties go to
    the first in sorted order (snapshot names sort by epoch)."""
    if not candidates:
        raise ValueError("no candidate checkpoints to match")
    return min(sorted(candidates), key=lambda k: abs(candidates[k] - target))


def matched_teacher_checkpoint(
    runs_dir: str | Path, experiment: registry.Experiment, dataset: str, preset: str
) -> Path:
    """The checkpoint of ``experiment.teacher``'s newest complete run (its snapshots and its
    selected checkpoint) whose held-out ``val/acc`` is closest to the ``best_val_acc`` of the
    newest complete ``experiment.teacher_matched_to`` run. Only held-out accuracies are read."""
    reference = experiment.teacher_matched_to
    assert reference is not None and experiment.teacher is not None
    ref_dir = runs.latest_complete_run(runs_dir, reference, dataset=dataset, preset=preset)
    target = (runs.read_summary(ref_dir) or {}).get("best_val_acc") if ref_dir is not None else None
    teacher_dir = runs.latest_complete_run(runs_dir, experiment.teacher, dataset=dataset, preset=preset)
    flags = " --smoke" if preset == "smoke" else ""
    if not _fraction(target) or teacher_dir is None:
        missing = reference if not _fraction(target) else experiment.teacher
        raise FileNotFoundError(
            f"{experiment.name} needs a complete {missing} run with a held-out split on {dataset!r} ({preset} "
            f"preset) under {runs_dir}; train it first with `python experiments/{missing}.py{flags}`."
        )
    folder = teacher_dir / runs.CHECKPOINT_DIR / SNAPSHOT_DIR
    index = folder / SNAPSHOT_INDEX
    candidates = {  # every file resolved inside the teacher run (RunPathError naming index.json otherwise)
        str(folder / name): float(info["val_acc"])
        for name, info in read_snapshots(folder).items()
        if runs.file_in_run(teacher_dir, f"{runs.CHECKPOINT_DIR}/{SNAPSHOT_DIR}/{name}", index, missing_ok=True)
    }
    summary = runs.read_summary(teacher_dir) or {}
    selected, best = summary.get("selected_checkpoint"), summary.get("best_val_acc")
    if isinstance(selected, str) and _fraction(best):
        if runs.file_in_run(teacher_dir, selected, teacher_dir / runs.SUMMARY_FILE, missing_ok=True):
            candidates[str(teacher_dir / selected)] = float(best)
    if not candidates:
        raise FileNotFoundError(
            f"the {experiment.teacher} run {teacher_dir} has no checkpoint with a held-out accuracy; retrain it "
            f"with a held-out split (`python experiments/{experiment.teacher}.py{flags}`)."
        )
    return Path(closest_snapshot(candidates, float(target)))


def _fraction(value: Any) -> bool:
    """Whether ``value`` is an accuracy: a finite number in [0, 1] (not a bool, not NaN)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= value <= 1.0


def resolve_teacher(runs_dir: str | Path, experiment: registry.Experiment, dataset: str, preset: str) -> Path:
    """The teacher checkpoint ``model.teacher: auto`` means for ``experiment`` (module docstring)."""
    if experiment.teacher_matched_to is not None:
        return matched_teacher_checkpoint(runs_dir, experiment, dataset, preset)
    assert experiment.teacher is not None
    return runs.teacher_checkpoint(runs_dir, experiment.teacher, dataset, preset)


def _load(runs_dir: Path, key: str, dataset: str, preset: str, num_classes: int) -> FrozenTeacher:
    if key == RANDOM_KEY:
        return RandomTeacher(RANDOM_ARCH).build(dataset, num_classes)
    return FrozenTeacher.from_checkpoint(runs.teacher_checkpoint(runs_dir, key, dataset, preset), dataset, num_classes)


def _has_selected_checkpoint(runs_dir: str | Path, key: str, dataset: str, preset: str) -> bool:
    """Whether the newest complete ``key`` run still holds its selected checkpoint (a deleted
    one makes the control "not measured" now, not a failure at test time); one that leads
    outside its run is a :class:`~kdbias.runs.RunPathError`."""
    try:
        runs.teacher_checkpoint(runs_dir, key, dataset, preset)
    except FileNotFoundError:
        return False
    return True


def fidelity_references(
    experiment: registry.Experiment, runs_dir: str | Path, dataset: str, preset: str, num_classes: int
) -> tuple[dict[str, Callable[[], FrozenTeacher] | str], str | None]:
    """``({key: teacher loader or OWN}, primary key)`` of the fidelity measured for ``experiment``:
    its own teacher (key: ``experiment.teacher``, or :data:`RANDOM_KEY`) and the controls of
    :data:`CONTROL_REFERENCES` whose teacher runs are complete (others are "not measured")."""
    out: dict[str, Callable[[], FrozenTeacher] | str] = {}
    primary = None
    if experiment.role == "student" and experiment.module == "KLDistillModule":
        primary = experiment.teacher or RANDOM_KEY
        out[primary] = OWN
    if experiment.module == "CKADistillModule" and experiment.teacher is not None:
        primary = experiment.teacher
        out[primary] = OWN
    controls = CONTROL_REFERENCES.get(experiment.name, ())
    if controls == "every teacher":
        controls = (*registry.select(registry.GROUPS)[0], RANDOM_KEY)
    for key in controls:
        if key == RANDOM_KEY or _has_selected_checkpoint(runs_dir, key, dataset, preset):
            out.setdefault(key, partial(_load, Path(runs_dir), key, dataset, preset, num_classes))
    if primary is None and experiment.name == "exp3" and "teacher_dinov2_probe" in out:
        primary = "teacher_dinov2_probe"
    return out, primary


def why_callbacks(
    experiment: registry.Experiment, run_dir: Path, runs_dir: str | Path, dataset: str, preset: str, module: Any
) -> list[Any]:
    """Snapshots for a matched-from teacher run; fidelity for students (see the module docstring)."""
    if experiment.role == "teacher":
        matched = any(e.teacher == experiment.name and e.teacher_matched_to for e in registry.ALL_EXPERIMENTS.values())
        every = SNAPSHOT_EVERY.get(preset, SNAPSHOT_EVERY["paper"])
        return [SnapshotCallback(run_dir / runs.CHECKPOINT_DIR / SNAPSHOT_DIR, every)] if matched else []
    teachers, primary = fidelity_references(experiment, runs_dir, dataset, preset, module.num_classes)
    return [FidelityCallback(teachers, primary)] if teachers else []
