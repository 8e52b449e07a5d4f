"""Read the runs: every ``summary.json`` through :func:`kdbias.schema.read_summary_file` and
:func:`kdbias.schema.validate_summary`, and each run's ``test_predictions.npz``.

No single file can stop the report: each is read only when it is a regular file (a FIFO,
a device or a symlink is skipped, never opened blocking), capped in size, parsed with any
exception caught (deep nesting, huge numbers, bad bytes), and checked field by field
(numbers finite and in range, strings from allow-lists). What is skipped or dropped gets
one :class:`ReportWarning` naming the file and why:

- a ``version_<n>`` folder without ``summary.json`` (a run not finished, or still running);
- a file that is not a regular file, too large, not UTF-8, not JSON, or not an object;
- a run whose ``status`` is not ``"complete"``, whose ``schema`` is newer than this kdbias,
  without a plain ``dataset`` / ``preset`` or an integer ``seed``, whose ``test_acc`` is not in
  [0, 1], or whose recorded ``method`` does not validate (it is never averaged);
- any other field of the wrong kind or range (dropped; the rest of the run is kept);
- a predictions file that cannot be read or checked, or that holds other weights than
  the run's selected checkpoint (the run is kept, without per-image data).

Summaries without ``schema`` (written before it existed) are read as schema 0.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from kdbias import runs as run_layout
from kdbias.schema import UnreadableFile, read_summary_file, validate_summary
from kdbias.schema.fidelity import read_fidelity_images
from kdbias.schema.predictions import LAST_WEIGHTS, Predictions, read_predictions

__all__ = ["ReportWarning", "check_summary", "load_fidelity_images", "load_predictions", "load_runs", "read_scalars"]


class ReportWarning(UserWarning):
    """A ``summary.json`` skipped, or some of its fields dropped, by :func:`load_runs`."""


def check_summary(summary: dict[str, Any], experiment: str) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """Validate one complete summary: ``(cleaned, reason_skipped, dropped_fields)``
    (:func:`kdbias.schema.validate_summary`)."""
    run, reason, dropped = validate_summary(summary, experiment)
    return (dict(run) if run is not None else None), reason, dropped


def _read_run_file(path: Path, reader: Any) -> Any:
    """``reader(path)``; ``None`` when the file is absent, or (with a warning naming why) unreadable."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        return reader(path)
    except UnreadableFile as error:
        warnings.warn(f"ignoring {path}: {error}", ReportWarning, stacklevel=3)
        return None


def load_predictions(run: dict[str, Any]) -> Predictions | None:
    """The run's per-image test predictions when they hold its selected checkpoint's
    weights; ``None`` (with a warning when a file exists but is not usable) otherwise."""
    path = _paths(run).predictions
    predictions = _read_run_file(path, read_predictions)
    if predictions is None:
        return None
    selected = run.get("selected_checkpoint")
    tested = predictions.checkpoint
    last = isinstance(selected, str) and Path(selected).name == run_layout.LAST_CKPT and tested == LAST_WEIGHTS
    if isinstance(selected, str) and tested != selected and not last:
        warnings.warn(
            f"ignoring {path}: it holds the predictions of {tested!r}, not of the selected {selected!r}",
            ReportWarning,
            stacklevel=2,
        )
        return None
    images = run.get("test_images")
    if isinstance(images, int) and images != predictions.num_images:
        warnings.warn(
            f"ignoring {path}: {predictions.num_images} images, the summary says {images}", ReportWarning, stacklevel=2
        )
        return None
    return predictions


def _experiment_dirs(root: Path) -> list[Path]:
    out = []
    for path in sorted(root.iterdir()):
        try:
            if path.is_dir() and not path.is_symlink() and not path.name.startswith("."):
                out.append(path)
        except OSError:
            continue
    return out


def load_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every usable complete run under ``runs_dir``, sorted by experiment, seed and version.

    Each is its checked summary (see the module docstring) plus ``run_dir`` (str), ``version``
    (int, from :func:`kdbias.runs.version_of`) and ``predictions`` (:class:`Predictions` or
    ``None``). One bad file never stops the others. A missing ``runs_dir`` gives ``[]``.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found: list[dict[str, Any]] = []
    for experiment_dir in _experiment_dirs(root):
        try:
            run_dirs = run_layout.run_dirs(root, experiment_dir.name)
        except OSError as error:
            warnings.warn(f"skipping {experiment_dir}: {error}", ReportWarning, stacklevel=2)
            continue
        for run_dir in run_dirs:
            try:
                run = _load_run(run_dir, experiment_dir.name)
            except Exception as error:  # one file never stops the report; the warning names it
                warnings.warn(
                    f"skipping {run_dir}: {type(error).__name__}: {str(error)[:200]}", ReportWarning, stacklevel=2
                )
                continue
            if run is not None:
                found.append(run)
    found.sort(key=lambda r: (r["experiment"], r["seed"], r["version"]))
    return found


def _paths(run: dict[str, Any]) -> run_layout.Run:
    """The :class:`~kdbias.runs.Run` of a loaded run (its files' paths)."""
    folder = Path(run["run_dir"])
    return run_layout.Run(folder.parent.parent, str(run.get("experiment")), dir=folder)


def _load_run(run_dir: Path, experiment: str) -> dict[str, Any] | None:
    path = run_layout.Run(run_dir.parent.parent, experiment, dir=run_dir).summary
    if not path.exists() and not path.is_symlink():
        warnings.warn(f"skipping {path}: missing (the run has not finished)", ReportWarning, stacklevel=3)
        return None
    try:
        summary = read_summary_file(path)
    except UnreadableFile as error:
        warnings.warn(f"skipping {path}: {error}", ReportWarning, stacklevel=3)
        return None
    run, reason, dropped = check_summary(summary, experiment)
    if run is None:
        warnings.warn(f"skipping {path}: {reason}", ReportWarning, stacklevel=3)
        return None
    if dropped:
        warnings.warn(f"{path}: dropped {', '.join(dropped)}; the rest of the run is used", ReportWarning, stacklevel=3)
    run["run_dir"] = str(run_dir)
    run["version"] = run_layout.version_of(run_dir)
    run["predictions"] = load_predictions(run)
    run["fidelity_images"] = load_fidelity_images(run)
    return run


def load_fidelity_images(run: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The run's per-image fidelity (:func:`~kdbias.callbacks.fidelity.read_fidelity_images`)
    when its image count is the run's ``test_images``; ``None`` (with a warning when a file
    exists but is not usable) otherwise."""
    path = _paths(run).fidelity
    values = _read_run_file(path, read_fidelity_images)
    if values is None:
        return None
    images, counts = run.get("test_images"), {len(v["kl"]) for v in values.values()}
    if isinstance(images, int) and counts and counts != {images}:
        warnings.warn(f"ignoring {path}: {counts.pop()} images, the summary says {images}", ReportWarning, stacklevel=2)
        return None
    return values


def read_scalars(run_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` pairs of TensorBoard scalar ``tag`` in ``run_dir``, sorted by step.

    Reads every ``events.out.tfevents.*`` file directly in ``run_dir`` (a resumed run has
    several); where files repeat a step, the later file wins. Empty when the tag or the
    files are missing; an unreadable file is skipped with a warning.
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    by_step: dict[int, float] = {}
    files = sorted(Path(run_dir).glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name))
    for path in files:
        accumulator = EventAccumulator(str(path), size_guidance={SCALARS: 0})
        try:
            accumulator.Reload()
        except Exception as error:  # a truncated file from a killed run
            warnings.warn(f"could not read {path}: {error}", ReportWarning, stacklevel=2)
            continue
        if tag not in accumulator.Tags().get("scalars", []):
            continue
        for event in accumulator.Scalars(tag):
            by_step[int(event.step)] = float(event.value)
    return sorted(by_step.items())
