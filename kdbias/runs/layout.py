"""Version folders: naming, claiming (exclusive ``mkdir`` plus the run's lock), and removal
of folders a run left without anything resumable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kdbias.runs.files import CONFIG_FILE, HPARAMS_FILE, SUMMARY_FILE, TEMP_GLOB, remove_temp_files
from kdbias.runs.lock import LOCK_FILE, RunLock, RunningElsewhere, hold_lock, is_running, release_lock
from kdbias.runs.paths import CHECKPOINT_DIR, check_run_folder

__all__ = [
    "BEST_CKPT",
    "CHECKPOINT_DIR",
    "HEATMAP_DIR",
    "LAST_CKPT",
    "JOBS_DIR",
    "claim_run_dir",
    "discard_if_unstarted",
    "has_checkpoint",
    "run_dirs",
    "sweep_torn",
    "version_of",
]

LAST_CKPT = "last.ckpt"  # under CHECKPOINT_DIR: the latest epoch (weights, optimiser, loops)
BEST_CKPT = "best.ckpt"  # under CHECKPOINT_DIR: the best held-out epoch
#: Analytics outputs under the run folder; CKA heatmaps under ``<HEATMAP_DIR>/<key>/``.
ANALYTICS_DIR = "analytics"
HEATMAP_DIR = f"{ANALYTICS_DIR}/cka_heatmaps"
#: Job records of the launchers (submitit folders, logs, states) under the runs folder:
#: ``<runs_dir>/_jobs/``. Not an experiment: lookups and the report never read it.
JOBS_DIR = "_jobs"
_PREFIX = "version_"
# What a kdbias run writes in its folder; a folder holding anything else is never removed.
_OURS = {CONFIG_FILE, HPARAMS_FILE, SUMMARY_FILE, LOCK_FILE, "metrics.csv", CHECKPOINT_DIR, ANALYTICS_DIR}


def version_of(run_dir: str | Path) -> int | None:
    """``n`` of a ``version_<n>`` folder; ``None`` for any other name."""
    name = Path(run_dir).name
    suffix = name[len(_PREFIX) :]
    return int(suffix) if name.startswith(_PREFIX) and suffix.isdigit() else None


def run_dirs(runs_dir: str | Path, experiment: str) -> list[Path]:
    """``<runs_dir>/<experiment>/version_<n>`` folders, newest (highest ``n``) first.

    :class:`~kdbias.runs.paths.LinkedRunFolder` (one line) when one of them, or its
    ``checkpoints/``, is a symbolic link: every lookup, claim and resume goes through here."""
    if experiment.startswith("_") or experiment.startswith("."):
        return []  # _jobs/ and hidden folders are no experiment
    root = Path(runs_dir) / experiment
    if not root.is_dir():
        return []
    found = [(version_of(p), p) for p in root.iterdir()]
    found = [(n, check_run_folder(p)) for n, p in found if n is not None]
    return [p for n, p in sorted(found, reverse=True) if p.is_dir()]


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``checkpoints/`` holds a complete checkpoint (``*.ckpt``; temp files do not count)."""
    return any(p.is_file() for p in (Path(run_dir) / CHECKPOINT_DIR).glob("*.ckpt"))


def claim_run_dir(runs_dir: str | Path, experiment: str, lock: bool = False) -> Path:
    """Create and return the next free ``version_<n>`` folder of ``experiment``.

    The folder is made with an exclusive ``os.mkdir``: when two runs start together, one
    gets ``version_n`` and the other, finding it taken, ``version_{n+1}``. With ``lock``
    (a run claiming its own folder), the run's lock is taken at once and held for the
    process (:func:`kdbias.runs.lock.hold_lock`), and torn folders of earlier runs are
    cleaned first (:func:`sweep_torn`).
    """
    root = Path(runs_dir) / experiment
    root.mkdir(parents=True, exist_ok=True)
    run_dirs(runs_dir, experiment)  # a linked run folder is refused before anything is claimed
    if lock:
        sweep_torn(runs_dir, experiment)
    existing = [version_of(p) for p in root.iterdir()]
    n = max((v for v in existing if v is not None), default=-1) + 1
    while True:
        path = root / f"{_PREFIX}{n}"
        n += 1
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        if not lock:
            return path
        try:
            hold_lock(path)
            return path
        except (RunningElsewhere, FileNotFoundError):
            continue  # a sweep took it in between: never share a folder


def _only_ours(run_dir: Path) -> bool:
    for path in run_dir.iterdir():
        if path.name in _OURS or path.name.startswith("events.out.tfevents.") or path.match(TEMP_GLOB):
            continue
        return False
    return True


def sweep_torn(runs_dir: str | Path, experiment: str) -> list[Path]:
    """Clean the folders of ``experiment`` that no live process holds: remove the temp
    files of interrupted writes, and remove a folder with no complete checkpoint and no
    summary when it holds only what kdbias writes (a run killed before or during its first
    checkpoint). Return the folders removed."""
    removed = []
    for run_dir in run_dirs(runs_dir, experiment):
        removable = not (has_checkpoint(run_dir) or (run_dir / SUMMARY_FILE).exists()) and _only_ours(run_dir)
        if is_running(run_dir) or not (removable or any(run_dir.rglob(TEMP_GLOB))):
            continue  # nothing to do: the folder is left exactly as it is (no lock file added)
        try:
            with RunLock(run_dir):
                remove_temp_files(run_dir)
                if has_checkpoint(run_dir) or (run_dir / SUMMARY_FILE).exists() or not _only_ours(run_dir):
                    continue
                shutil.rmtree(run_dir, ignore_errors=True)
                removed.append(run_dir)
        except (RunningElsewhere, OSError):
            continue
    return removed


def discard_if_unstarted(run_dir: str | Path) -> bool:
    """Remove ``run_dir`` if it holds no checkpoint and no summary (a run that failed at
    start-up); return whether it was removed. Nothing that a later run could use is lost.
    The run's lock (if this process holds it) is released."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or (run_dir / SUMMARY_FILE).exists() or has_checkpoint(run_dir):
        release_lock(run_dir)
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    release_lock(run_dir)
    try:
        run_dir.parent.rmdir()  # the experiment's folder, if this was its only run
    except OSError:
        pass
    return True
