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
- a predictions file that cannot be read or checked, that holds other weights than
  the run's selected checkpoint, or that disagrees with the summary beside it (image
  count, labels outside the dataset's classes, accuracy further than one image from
  ``test_acc``); a fidelity file whose image count, keys, mean agreement or mean KL
  disagree with the summary (the run is kept, without per-image data). A ``.npz`` is
  refused before it is inflated when its decompressed size is over the cap.

Summaries without ``schema`` (written before it existed) are read as schema 0.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from kdbias import runs as run_layout
from kdbias.schema import UnreadableFile, read_regular_file, read_summary_file, validate_summary
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
    problem = _predictions_disagree(run, predictions)
    if problem:
        warnings.warn(f"ignoring {path}: {problem}", ReportWarning, stacklevel=2)
        return None
    return predictions


def _predictions_disagree(run: dict[str, Any], predictions: Predictions) -> str:
    """Why per-image predictions do not belong with ``run``'s summary ("" when they agree):
    a label or prediction outside the dataset's classes, or an accuracy (the mean of
    ``correct``) further than one image (1/N, a DDP-padded duplicate) from ``test_acc``."""
    classes = _num_classes(_paths(run))
    arrays = [a for a in (predictions.label, predictions.pred, predictions.teacher_pred) if a is not None]
    low, high = min(int(a.min()) for a in arrays), max(int(a.max()) for a in arrays)
    if low < 0 or (classes is not None and high >= classes):
        allowed = f"0..{classes - 1}" if classes is not None else "0 or more"
        return f"labels or predictions from {low} to {high}, outside the run's classes {allowed}"
    accuracy, stated = float(predictions.correct.mean()), run.get("test_acc")
    if isinstance(stated, (int, float)) and abs(accuracy - stated) > 1.0 / predictions.num_images + 1e-6:
        return f"its accuracy {accuracy:.4f} is not the summary's test_acc {stated:.4f} (another run's file?)"
    return ""


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
    return run_layout.Run.located(run["run_dir"])


def _load_run(run_dir: Path, experiment: str) -> dict[str, Any] | None:
    path = run_layout.Run.located(run_dir).summary
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


def _num_classes(run: run_layout.Run) -> int | None:
    """The class count of the run's network (``num_classes`` in its ``hparams.yaml``), or ``None``."""
    from kdbias.config_files import load_yaml

    path = run.hparams
    try:
        data = load_yaml(read_regular_file(path, run_layout.MAX_CONFIG_BYTES).decode("utf-8"), str(path))
    except Exception:  # absent or unreadable: the range is then checked from below only
        return None
    value = data.get("num_classes") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


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
    problem = _fidelity_disagrees(run, values)
    if problem:
        warnings.warn(f"ignoring {path}: {problem}", ReportWarning, stacklevel=2)
        return None
    return values


def _fidelity_disagrees(run: dict[str, Any], values: dict[str, dict[str, Any]]) -> str:
    """Why per-image fidelity does not belong with ``run``'s summary ("" when it agrees): a key
    the summary's ``fidelity`` does not hold, or a mean agreement further than one image (1/N)
    or a mean KL further than 1e-4 (relative) from the summary's figures."""
    summary = run.get("fidelity") if isinstance(run.get("fidelity"), dict) else {}
    for key, arrays in values.items():
        entry = summary.get(key)
        agreement, kl = entry.get("agreement") if isinstance(entry, dict) else None, (entry or {}).get("kl")
        if not isinstance(agreement, (int, float)) or not isinstance(kl, (int, float)):
            return f"the summary has no fidelity figures for {key!r}"
        n = len(arrays["agreement"])
        mean_agreement, mean_kl = float(arrays["agreement"].mean()), float(arrays["kl"].mean())
        if abs(mean_agreement - agreement) > 1.0 / n + 1e-6 or abs(mean_kl - kl) > 1e-4 * max(1.0, abs(kl)):
            return (
                f"its {key!r} agreement {mean_agreement:.4f} / KL {mean_kl:.4g} are not the summary's "
                f"{agreement:.4f} / {kl:.4g} (another run's file?)"
            )
    return ""


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
