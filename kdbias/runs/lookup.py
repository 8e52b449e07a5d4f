"""Finding runs: the newest complete or resumable run of an experiment with a seed, dataset,
preset and (optionally) configuration; the teacher a student distils from.

A run counts as the one asked for only when its saved ``config.yaml`` matches: the same
seed, dataset and preset and, when ``config`` is given, no difference in the configuration
apart from seeds and run-local keys (:func:`config_differences`). A run held by a live
process (:func:`kdbias.runs.lock.is_running`) is never *complete*; a file that cannot be
read makes its run ignored with a :class:`RunsWarning` naming the file and why.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from kdbias.runs.config_diff import config_changes
from kdbias.runs.files import CONFIG_FILE, SUMMARY_FILE, RunsWarning, read_config_checked, read_summary_checked
from kdbias.runs.layout import has_checkpoint, run_dirs
from kdbias.runs.lock import is_running
from kdbias.runs.paths import file_in_run

__all__ = [
    "config_differences",
    "config_value",
    "is_complete",
    "latest_complete_run",
    "matching_runs",
    "resumable_run",
    "teacher_checkpoint",
]

_SEED_KEYS = ("seed_everything", "data.seed")


def config_value(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; ``default`` where a level is missing."""
    value: Any = config
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


def is_complete(summary: dict[str, Any] | None) -> bool:
    """A finished run: trained for at least one epoch and tested (``status == "complete"``)."""
    return isinstance(summary, dict) and summary.get("status") == "complete"


def _teacher_tail(value: Any) -> Any:
    """A teacher checkpoint path as ``<experiment>/version_<n>/checkpoints/<file>`` (where
    the runs folder is does not matter: a moved folder keeps its teacher)."""
    if isinstance(value, str) and "/version_" in value:
        return "/".join(Path(value).parts[-4:])
    return value


def config_differences(saved: dict[str, Any], expected: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved, expected)}`` for every setting that differs, seeds and run-local
    keys (:data:`kdbias.runs.config_diff.RUN_LOCAL_KEYS`) aside; ``model.teacher`` compared by its
    path inside the runs folder, and not at all while ``expected`` still says ``auto``."""
    changes = config_changes(saved, expected)
    out = {}
    for key, (a, b) in changes.items():
        if key in _SEED_KEYS:
            continue
        if key == "model.teacher" and (b in (None, "auto") or _teacher_tail(a) == _teacher_tail(b)):
            continue
        out[key] = (a, b)
    return out


def _ignore(run_dir: Path, name: str, why: str) -> None:
    warnings.warn(f"ignoring {run_dir}: its {name} {why}", RunsWarning, stacklevel=3)


def matching_runs(
    runs_dir: str | Path,
    experiment: str,
    seed: int | None = None,
    dataset: str | None = None,
    preset: str | None = None,
) -> list[tuple[Path, dict[str, Any], dict[str, Any] | None]]:
    """``(run_dir, config, summary)`` of every readable run of ``experiment`` with that seed,
    dataset and preset (``None``: any), newest first. Unreadable files: a warning, then on."""
    out = []
    for run_dir in run_dirs(runs_dir, experiment):
        config, why = read_config_checked(run_dir)
        if why:
            _ignore(run_dir, CONFIG_FILE, why)
            continue
        config = config or {}
        found = (config.get("seed_everything"), config_value(config, "data.dataset"), config.get("preset"))
        if not all(w is None or w == f for w, f in zip((seed, dataset, preset), found)):
            continue
        summary, why = read_summary_checked(run_dir)
        if why:
            _ignore(run_dir, SUMMARY_FILE, why)
            continue
        out.append((run_dir, config, summary))
    return out


def _same(config: dict[str, Any], expected: dict[str, Any] | None) -> bool:
    return expected is None or not config_differences(config, expected)


def latest_complete_run(
    runs_dir: str | Path,
    experiment: str,
    seed: int | None = None,
    dataset: str | None = None,
    preset: str | None = None,
    config: dict[str, Any] | None = None,
) -> Path | None:
    """Newest complete, not running run of ``experiment`` with that seed, dataset and preset
    (``None``: any) and, when ``config`` is given, that configuration."""
    for run_dir, saved, summary in matching_runs(runs_dir, experiment, seed, dataset, preset):
        if is_complete(summary) and not is_running(run_dir) and _same(saved, config):
            return run_dir
    return None


def resumable_run(
    runs_dir: str | Path,
    experiment: str,
    seed: int,
    dataset: str,
    preset: str,
    config: dict[str, Any] | None = None,
) -> Path | None:
    """Newest unfinished run (a checkpoint, no complete summary) with that seed, dataset,
    preset and (when given) configuration. It may be running: see :func:`is_running`."""
    for run_dir, saved, summary in matching_runs(runs_dir, experiment, seed, dataset, preset):
        if not is_complete(summary) and has_checkpoint(run_dir) and _same(saved, config):
            return run_dir
    return None


def teacher_checkpoint(runs_dir: str | Path, experiment: str, dataset: str, preset: str) -> Path:
    """The selected checkpoint (``summary["selected_checkpoint"]``) of the newest complete
    ``experiment`` run on ``dataset`` with ``preset``.

    Raises ``FileNotFoundError`` naming the command that trains such a teacher (also when
    the selected checkpoint was deleted) and :class:`~kdbias.runs.paths.RunPathError` when
    ``selected_checkpoint`` leads outside that run or is not a regular file.
    """
    run_dir = latest_complete_run(runs_dir, experiment, dataset=dataset, preset=preset)
    selected = (read_summary_checked(run_dir)[0] or {}).get("selected_checkpoint") if run_dir is not None else None
    if run_dir is not None and selected is not None:
        found = file_in_run(run_dir, selected, run_dir / SUMMARY_FILE, missing_ok=True)
        if found is not None:
            return run_dir / str(selected)
        raise FileNotFoundError(
            f"the newest complete {experiment} run {run_dir} has lost its selected checkpoint {selected} (named in "
            f"its {SUMMARY_FILE}); restore it, or retrain with `python experiments/{experiment}.py"
            f"{' --smoke' if preset == 'smoke' else ''}`."
        )
    flags = " --smoke" if preset == "smoke" else ""
    if dataset not in ("cifar10", "digits"):
        flags += f" --data.dataset {dataset}"
    raise FileNotFoundError(
        f"no complete {experiment} run on {dataset!r} ({preset} preset) under {Path(runs_dir) / experiment}. "
        f"Train it first with `python experiments/{experiment}.py{flags}`, or name a teacher checkpoint with "
        "--model.teacher PATH/TO/checkpoints/best.ckpt."
    )
