"""The one teacher resolver: which checkpoint ``model.teacher: auto`` means for an experiment.

The runner (``auto`` before a run starts), the planner (the configuration a run would get),
the CKA controls and the rows beyond the plan all call :func:`resolve_teacher`: the selected
checkpoint of the newest complete teacher run (:func:`~kdbias.teacher_checkpoint`), or,
for an experiment with ``teacher_matched_to`` (``exp1_matched``), the teacher snapshot whose
held-out accuracy is closest to the reference teacher's (:func:`matched_teacher_checkpoint`).
Only held-out accuracies are read; the official test split never chooses a teacher.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from kdbias.runs.files import SUMMARY_FILE, read_summary
from kdbias.runs.layout import CHECKPOINT_DIR
from kdbias.runs.lookup import latest_complete_run, teacher_checkpoint
from kdbias.runs.paths import file_in_run
from kdbias.schema.snapshots import SNAPSHOT_DIR, SNAPSHOT_INDEX, read_snapshots

if TYPE_CHECKING:
    from kdbias.registry import Experiment

__all__ = ["closest_snapshot", "matched_teacher_checkpoint", "resolve_teacher"]


def closest_snapshot(candidates: Mapping[str, float], target: float) -> str:
    """The key of ``candidates`` (``{name: held-out accuracy}``) closest to ``target``; ties go to
    the first in sorted order (snapshot names sort by epoch)."""
    if not candidates:
        raise ValueError("no candidate checkpoints to match")
    return min(sorted(candidates), key=lambda k: abs(candidates[k] - target))


def matched_teacher_checkpoint(runs_dir: str | Path, experiment: Experiment, dataset: str, preset: str) -> Path:
    """The checkpoint of ``experiment.teacher``'s newest complete run (its snapshots and its
    selected checkpoint) whose held-out ``val/acc`` is closest to the ``best_val_acc`` of the
    newest complete ``experiment.teacher_matched_to`` run. Only held-out accuracies are read."""
    reference = experiment.teacher_matched_to
    assert reference is not None and experiment.teacher is not None
    ref_dir = latest_complete_run(runs_dir, reference, dataset=dataset, preset=preset)
    target = (read_summary(ref_dir) or {}).get("best_val_acc") if ref_dir is not None else None
    teacher_dir = latest_complete_run(runs_dir, experiment.teacher, dataset=dataset, preset=preset)
    flags = " --smoke" if preset == "smoke" else ""
    if not _fraction(target) or teacher_dir is None:
        missing = reference if not _fraction(target) else experiment.teacher
        raise FileNotFoundError(
            f"{experiment.name} needs a complete {missing} run with a held-out split on {dataset!r} ({preset} "
            f"preset) under {runs_dir}; train it first with `python experiments/{missing}.py{flags}`."
        )
    folder = teacher_dir / CHECKPOINT_DIR / SNAPSHOT_DIR
    index = folder / SNAPSHOT_INDEX
    candidates = {  # every file resolved inside the teacher run (RunPathError naming index.json otherwise)
        str(folder / name): float(info["val_acc"])
        for name, info in read_snapshots(folder).items()
        if file_in_run(teacher_dir, f"{CHECKPOINT_DIR}/{SNAPSHOT_DIR}/{name}", index, missing_ok=True)
    }
    summary = read_summary(teacher_dir) or {}
    selected, best = summary.get("selected_checkpoint"), summary.get("best_val_acc")
    if isinstance(selected, str) and _fraction(best):
        if file_in_run(teacher_dir, selected, teacher_dir / SUMMARY_FILE, missing_ok=True):
            candidates[str(teacher_dir / selected)] = float(best)
    if not candidates:
        raise FileNotFoundError(
            f"the {experiment.teacher} run {teacher_dir} has no checkpoint with a held-out accuracy; retrain it "
            f"with a held-out split (`python experiments/{experiment.teacher}.py{flags}`)."
        )
    return Path(closest_snapshot(candidates, float(target)))


def _fraction(value: object) -> bool:
    """Whether ``value`` is an accuracy: a finite number in [0, 1] (not a bool, not NaN)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= value <= 1.0


def resolve_teacher(
    runs_dir: str | Path, experiment: Experiment, dataset: str, preset: str, teacher_run: str | None = None
) -> Path:
    """The teacher checkpoint ``model.teacher: auto`` means for ``experiment`` (module docstring), or
    with ``teacher_run`` (``--model.teacher run:NAME``) the selected checkpoint of the newest complete
    run ``NAME`` (a teacher run of any experiment, e.g. ``experiments/teacher.py --name NAME``)."""
    if teacher_run is not None:
        return teacher_checkpoint(runs_dir, teacher_run, dataset, preset)
    if experiment.teacher_matched_to is not None:
        return matched_teacher_checkpoint(runs_dir, experiment, dataset, preset)
    assert experiment.teacher is not None
    return teacher_checkpoint(runs_dir, experiment.teacher, dataset, preset)
