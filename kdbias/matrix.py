"""What ``experiments/run_all.py`` must do: skip, resume or run each run of the matrix.

The decision is a pure function of the files under the runs directory, so it is unit
tested on fixture directories without training anything:

- **skip**: a completed run exists, i.e. a ``summary.json`` whose ``experiment``,
  ``seed``, ``dataset`` and ``preset`` match;
- **resume**: no completed run, but a run directory with ``checkpoints/last.ckpt`` and
  no ``summary.json`` whose ``hparams.yaml`` config has the same seed, dataset and
  preset (the run that ``--resume`` continues);
- **run**: anything else.

Teachers are trained once (seed ``teacher_seed``); students for every seed, seed-major
(seed 0's baseline, exp1, exp2, exp3, then seed 1's, ...), after both teachers, so a
partial matrix already holds complete comparisons.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdbias.runs import saved_config

__all__ = [
    "STUDENTS",
    "TEACHERS",
    "PlannedRun",
    "completed_run",
    "plan_matrix",
    "resumable_run_dir",
]

TEACHERS: tuple[str, ...] = ("teacher_resnet18", "teacher_convnextv2")
STUDENTS: tuple[str, ...] = ("baseline", "exp1", "exp2", "exp3")
SMOKE_DATASET = "digits"
PAPER_DATASET = "cifar10"


def _version(run_dir: Path) -> int:
    suffix = run_dir.name.rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def _run_dirs(runs_dir: Path, experiment: str) -> list[Path]:
    """``<runs_dir>/<experiment>/version_<n>`` directories, newest (highest n) first."""
    root = Path(runs_dir) / experiment
    if not root.is_dir():
        return []
    dirs = [p for p in root.glob("version_*") if p.is_dir()]
    return sorted(dirs, key=_version, reverse=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _matches(values: dict[str, Any], experiment: str | None, seed: int, dataset: str, preset: str) -> bool:
    if experiment is not None and values.get("experiment", experiment) != experiment:
        return False
    return values.get("seed") == seed and values.get("dataset") == dataset and values.get("preset") == preset


def completed_run(runs_dir: str | Path, experiment: str, seed: int, dataset: str, preset: str) -> Path | None:
    """Latest run dir of ``experiment`` whose ``summary.json`` matches seed, dataset and preset."""
    for run_dir in _run_dirs(Path(runs_dir), experiment):
        summary = _read_json(run_dir / "summary.json")
        if summary is not None and _matches(summary, experiment, seed, dataset, preset):
            return run_dir
    return None


def resumable_run_dir(runs_dir: str | Path, experiment: str, seed: int, dataset: str, preset: str) -> Path | None:
    """Latest interrupted run: ``last.ckpt``, no ``summary.json``, same seed, dataset and preset."""
    for run_dir in _run_dirs(Path(runs_dir), experiment):
        if not (run_dir / "checkpoints" / "last.ckpt").is_file() or (run_dir / "summary.json").exists():
            continue
        if _matches(saved_config(run_dir), None, seed, dataset, preset):
            return run_dir
    return None


@dataclass(frozen=True)
class PlannedRun:
    """One run of the matrix and what to do about it.

    ``action`` is ``"skip"`` (``run_dir`` = the completed run), ``"resume"``
    (``run_dir`` = the interrupted run ``--resume`` continues) or ``"run"``.
    ``argv`` are the arguments of ``experiments/<experiment>.py``.
    """

    experiment: str
    seed: int
    action: str
    run_dir: Path | None = None
    argv: tuple[str, ...] = field(default_factory=tuple)

    def script(self, experiments_dir: str | Path = "experiments") -> Path:
        return Path(experiments_dir) / f"{self.experiment}.py"

    def command(self, experiments_dir: str | Path = "experiments", python: str = sys.executable) -> list[str]:
        return [python, str(self.script(experiments_dir)), *self.argv]

    def shell(self, experiments_dir: str | Path = "experiments", python: str = "python") -> str:
        """The command as one copy-pastable shell line."""
        return shlex.join(self.command(experiments_dir, python))

    def describe(self) -> str:
        where = f" ({self.run_dir})" if self.run_dir is not None else ""
        return f"{self.action:<6} {self.experiment} seed {self.seed}{where}"


def plan_matrix(
    runs_dir: str | Path,
    seeds: int = 1,
    smoke: bool = False,
    dataset: str | None = None,
    teacher_seed: int = 0,
    extra_args: Sequence[str] = (),
) -> list[PlannedRun]:
    """The matrix in dependency order with the action each run needs.

    Args:
        runs_dir: root of ``<experiment>/version_<n>/`` run directories.
        seeds: students run for seeds ``0 .. seeds-1``.
        smoke: the ``--smoke`` preset (dataset ``digits`` unless ``dataset`` is given).
        dataset: dataset name (default ``digits`` with ``smoke``, else ``cifar10``).
        teacher_seed: the one seed the teachers are trained with.
        extra_args: appended to every script's arguments.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    preset = "smoke" if smoke else "paper"
    resolved_dataset = dataset or (SMOKE_DATASET if smoke else PAPER_DATASET)
    order = [(name, teacher_seed) for name in TEACHERS]
    order += [(name, seed) for seed in range(seeds) for name in STUDENTS]
    plan = []
    for name, seed in order:
        argv = ["--seed", str(seed), "--runs-dir", str(runs_dir)]
        if smoke:
            argv.insert(0, "--smoke")
        if dataset is not None:
            argv += ["--dataset", dataset]
        argv += list(extra_args)
        done = completed_run(runs_dir, name, seed, resolved_dataset, preset)
        if done is not None:
            plan.append(PlannedRun(name, seed, "skip", done, tuple(argv)))
            continue
        interrupted = resumable_run_dir(runs_dir, name, seed, resolved_dataset, preset)
        if interrupted is not None:
            plan.append(PlannedRun(name, seed, "resume", interrupted, tuple(argv + ["--resume"])))
        else:
            plan.append(PlannedRun(name, seed, "run", None, tuple(argv)))
    return plan
