"""Read the runs: every ``summary.json`` through :mod:`kdbias.runs`, checked field by field.

What is skipped (one :class:`ReportWarning` per file, naming the file and why):

- a ``version_<n>`` folder without ``summary.json`` (a run not finished, or still running);
- a file that cannot be read, is not UTF-8, is not JSON, or holds JSON that is not an object;
- a run whose ``status`` is not ``"complete"`` (not tested yet);
- a run without a text ``dataset`` / ``preset`` or an integer ``seed`` (it cannot be placed
  in a table or paired with another run);
- a run whose ``test_acc`` (the accuracy the report is about) is present but is not a finite
  number in [0, 1].

What is dropped, the rest of the run being kept (one warning per file listing the fields):
any other accuracy (``val_acc``, ``best_val_acc``, ``test_acc_last``, ``teacher_acc``,
``teacher.test_acc``) that is not a finite number in [0, 1]; ``gen_gap_acc`` outside
[-1, 1]; any other number that is not finite (or negative where it cannot be: times,
epochs, standard errors, residuals); a layer of ``attn_dist`` / ``attn_dist_heads`` or a
figure of ``cka`` that is not finite; a ``method``, ``teacher`` or ``cka`` that is not an
object. So a ``val_acc`` of 5.0 never prints as 500 %.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from kdbias import runs as run_layout
from kdbias.report.stats import finite

__all__ = ["ReportWarning", "check_summary", "load_runs", "read_scalars"]


class ReportWarning(UserWarning):
    """A ``summary.json`` skipped, or some of its fields dropped, by :func:`load_runs`."""


FRACTIONS = ("val_acc", "best_val_acc", "test_acc_last", "teacher_acc")
NON_NEGATIVE = (
    "epochs_completed",
    "best_epoch",
    "train_time_s",
    "analytics_time_s",
    "hessian_trace_stderr",
    "hessian_trace_probes",
    "hessian_top_eig_residual",
)
NUMBERS = ("hessian_trace", "hessian_top_eig", "gen_gap_loss")  # any sign: val loss - train loss may be < 0
CKA_FIGURES = ("diag", "off_diag", "contrast", "trained", "untrained_contrast", "untrained_diag")


def _why_unreadable(path: Path) -> str:
    """Why :func:`kdbias.runs.read_summary` returned ``None`` for an existing file (for the warning)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not UTF-8 text (byte {error.start})"
    try:
        data = json.loads(text)
    except ValueError as error:
        return f"not valid JSON ({error})"
    return f"not a JSON object (a JSON {type(data).__name__})"


def _check_number(value: Any, low: float | None, high: float | None) -> str | None:
    """Why ``value`` is not acceptable (``None`` when it is a finite number in range)."""
    number = finite(value)
    if number is None:
        return "not a finite number"
    if (low is not None and number < low) or (high is not None and number > high):
        if low is not None and high is not None:
            return f"outside [{low:g}, {high:g}]"
        return "negative"
    return None


def check_summary(summary: dict[str, Any], experiment: str) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """Validate one complete summary: ``(cleaned, reason_skipped, dropped_fields)``.

    ``cleaned`` is ``None`` when the run is skipped (``reason_skipped`` says why); else a
    copy with the bad fields removed, each listed in ``dropped_fields`` as ``"key=value (why)"``.
    """
    if not run_layout.is_complete(summary):
        return None, f"status {summary.get('status')!r}, not 'complete' (the run has not been tested)", []
    run = dict(summary)
    named = run.get("experiment")
    if named is not None and named != experiment:
        return None, f"its experiment {named!r} is not the folder's {experiment!r}", []
    run["experiment"] = experiment
    for key in ("dataset", "preset"):
        if not isinstance(run.get(key), str) or not run[key]:
            return None, f"no {key} (got {run.get(key)!r})", []
    seed = run.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        return None, f"no integer seed (got {seed!r}): it cannot be paired with another run", []
    if run.get("test_acc") is not None and (why := _check_number(run["test_acc"], 0.0, 1.0)):
        return None, f"test_acc={run['test_acc']!r} is {why}: the accuracy itself is bad", []

    dropped: list[str] = []

    def drop(container: dict[str, Any], key: str, label: str, why: str) -> None:
        dropped.append(f"{label}={container[key]!r} ({why})")
        del container[key]

    def check(container: dict[str, Any], key: str, label: str, low: float | None, high: float | None) -> None:
        if container.get(key) is not None and (why := _check_number(container[key], low, high)):
            drop(container, key, label, why)

    for key in FRACTIONS:
        check(run, key, key, 0.0, 1.0)
    check(run, "gen_gap_acc", "gen_gap_acc", -1.0, 1.0)
    for key in NON_NEGATIVE:
        check(run, key, key, 0.0, None)
    for key in NUMBERS:
        check(run, key, key, None, None)
    for key in ("method", "teacher", "cka", "attn_dist", "attn_dist_heads"):
        if run.get(key) is not None and not isinstance(run[key], dict):
            drop(run, key, key, "not a JSON object")
    if isinstance(run.get("method"), dict):
        run["method"] = dict(run["method"])
    if isinstance(run.get("teacher"), dict):
        run["teacher"] = dict(run["teacher"])
        check(run["teacher"], "test_acc", "teacher.test_acc", 0.0, 1.0)
    if isinstance(run.get("attn_dist"), dict):
        run["attn_dist"] = dict(run["attn_dist"])
        for layer in list(run["attn_dist"]):
            check(run["attn_dist"], layer, f"attn_dist.{layer}", 0.0, None)
    if isinstance(run.get("attn_dist_heads"), dict):
        heads = {}
        for layer, values in run["attn_dist_heads"].items():
            if isinstance(values, list) and all(finite(v) is not None for v in values):
                heads[layer] = values
            else:
                dropped.append(f"attn_dist_heads.{layer} (not a list of finite numbers)")
        run["attn_dist_heads"] = heads
    if isinstance(run.get("cka"), dict):
        cka = {}
        for key, entry in run["cka"].items():
            if not isinstance(entry, dict):
                dropped.append(f"cka.{key} (not a JSON object)")
                continue
            entry = dict(entry)
            for figure in CKA_FIGURES:
                check(entry, figure, f"cka.{key}.{figure}", None, None)
            cka[key] = entry
        run["cka"] = cka
    return run, None, dropped


def load_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every usable complete run under ``runs_dir``, sorted by experiment, seed and version.

    Each is its checked ``summary.json`` (see the module docstring for what is skipped or
    dropped, always with a :class:`ReportWarning`) plus ``run_dir`` (str) and ``version``
    (int, from :func:`kdbias.runs.version_of`). Folders are found with
    :func:`kdbias.runs.run_dirs`, files read with :func:`kdbias.runs.read_summary`; one bad
    file never stops the others. A missing ``runs_dir`` gives ``[]``.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found: list[dict[str, Any]] = []
    for experiment_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for run_dir in run_layout.run_dirs(root, experiment_dir.name):
            path = run_dir / run_layout.SUMMARY_FILE
            summary = run_layout.read_summary(run_dir)
            if summary is None:
                why = _why_unreadable(path) if path.exists() else "missing (the run has not finished)"
                warnings.warn(f"skipping {path}: {why}", ReportWarning, stacklevel=2)
                continue
            run, reason, dropped = check_summary(summary, experiment_dir.name)
            if run is None:
                warnings.warn(f"skipping {path}: {reason}", ReportWarning, stacklevel=2)
                continue
            if dropped:
                warnings.warn(
                    f"{path}: dropped {', '.join(dropped)}; the rest of the run is used", ReportWarning, stacklevel=2
                )
            run["run_dir"] = str(run_dir)
            run["version"] = run_layout.version_of(run_dir)
            found.append(run)
    found.sort(key=lambda r: (r["experiment"], r["seed"], r["version"]))
    return found


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
