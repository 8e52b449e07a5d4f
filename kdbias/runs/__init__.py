"""The one owner of the run layout: ``<runs_dir>/<experiment>/version_<n>/``.

::

    runs/<experiment>/version_<n>/
      run.lock                  held (fcntl.flock) by the live process training the run
      events.out.tfevents.*     TensorBoard scalars, heatmaps, hparams (kdbias.logs: one file per process)
      config.yaml               the resolved configuration (``--config`` reruns it)
      hparams.yaml              the module's and datamodule's hyperparameters (plain YAML)
      checkpoints/last.ckpt     the latest epoch with its training state, rewritten after every epoch
                                (optimiser moments dropped once complete: compact_finished_checkpoint)
      checkpoints/best.ckpt     the weights of the best epoch by the held-out ``val/acc``
      analytics/cka_heatmaps/   heatmap PNG + JSON per measurement
      summary.json              final figures; ``"status": "complete"`` once tested
      test_predictions.npz      per-image test predictions of the selected checkpoint
      fidelity_per_image.npz    per-image agreement and KL to each teacher (students)
    runs/_jobs/                 launcher records (submitit folders, logs, job states)

A version is claimed by an exclusive ``mkdir`` (two runs started together never share
one) and locked at once (:mod:`kdbias.runs.lock`): a locked run is *running*, and no other
process resumes it. A run that stops before its first checkpoint removes its folder; one
killed before it could (SIGKILL) is removed by the next run's claim (:func:`sweep_torn`).
Every file kdbias writes here goes through a temporary file in the same folder and a
rename (:mod:`kdbias.runs.files`), with the umask's mode; temporary files of a killed write
are removed when the folder is next locked. Checkpoints are read with
``torch.load(weights_only=True)``: no code runs from them; their restored paths follow the
folder when it moves (:class:`RunCheckpoint`). Readers accept only regular files under a
size cap and survive any one bad file with a :class:`RunsWarning`.

Parts: :mod:`~kdbias.runs.files`, :mod:`~kdbias.runs.lock`, :mod:`~kdbias.runs.layout`,
:mod:`~kdbias.runs.checkpoints`, :mod:`~kdbias.runs.lookup`, :mod:`~kdbias.runs.run` (a typed
:class:`Run`: identity and every path under its folder), :mod:`~kdbias.runs.config_diff`
(what differs between two configurations), :mod:`~kdbias.runs.teachers` (the one teacher resolver).
"""

from __future__ import annotations

from typing import Any

from kdbias.runs.config_diff import RUN_LOCAL_KEYS, config_changes, flatten, signature_config
from kdbias.runs.files import (
    CONFIG_FILE,
    HPARAMS_FILE,
    MAX_CONFIG_BYTES,
    MAX_SUMMARY_BYTES,
    SUMMARY_FILE,
    RunsWarning,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    file_mode,
    read_config,
    read_config_checked,
    read_regular,
    read_summary,
    read_summary_checked,
    remove_temp_files,
)
from kdbias.runs.layout import (
    BEST_CKPT,
    CHECKPOINT_DIR,
    HEATMAP_DIR,
    JOBS_DIR,
    LAST_CKPT,
    claim_run_dir,
    discard_if_unstarted,
    has_checkpoint,
    run_dirs,
    sweep_torn,
    version_of,
)
from kdbias.runs.lock import LOCK_FILE, RunLock, RunningElsewhere, hold_lock, is_running, lock_owner, release_lock
from kdbias.runs.lookup import (
    config_differences,
    config_value,
    is_complete,
    latest_complete_run,
    matching_runs,
    resumable_run,
    teacher_checkpoint,
)
from kdbias.runs.paths import LinkedRunFolder, RunPathError, check_run_folder, file_in_run, open_no_follow
from kdbias.runs.run import DEFAULT_RUNS_DIR, Run, checkpoint_entry, heatmap_entry, merge_items
from kdbias.runs.teachers import resolve_teacher

__all__ = [
    "AtomicCheckpointIO",
    "BEST_CKPT",
    "CHECKPOINT_DIR",
    "COMPACTED_KEY",
    "CONFIG_FILE",
    "LinkedRunFolder",
    "RunPathError",
    "check_run_folder",
    "file_in_run",
    "open_no_follow",
    "DEFAULT_RUNS_DIR",
    "CheckpointError",
    "HEATMAP_DIR",
    "HPARAMS_FILE",
    "JOBS_DIR",
    "LAST_CKPT",
    "LOCK_FILE",
    "MAX_CONFIG_BYTES",
    "MAX_SUMMARY_BYTES",
    "RUN_LOCAL_KEYS",
    "Run",
    "RunCheckpoint",
    "RunLock",
    "RunningElsewhere",
    "RunsWarning",
    "SUMMARY_FILE",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "checkpoint_entry",
    "claim_run_dir",
    "compact_finished_checkpoint",
    "config_changes",
    "config_differences",
    "config_value",
    "discard_if_unstarted",
    "file_mode",
    "flatten",
    "has_checkpoint",
    "heatmap_entry",
    "hold_lock",
    "is_complete",
    "is_running",
    "latest_complete_run",
    "load_checkpoint",
    "lock_owner",
    "matching_runs",
    "merge_items",
    "newest_loadable_checkpoint",
    "read_config",
    "read_config_checked",
    "read_regular",
    "read_summary",
    "read_summary_checked",
    "release_lock",
    "remove_temp_files",
    "resolve_teacher",
    "resumable_run",
    "run_dirs",
    "signature_config",
    "sweep_torn",
    "teacher_checkpoint",
    "version_of",
]

#: Names of :mod:`kdbias.runs.checkpoints` (torch and Lightning), imported on first use: the
#: report reads runs without them.
_CHECKPOINT_NAMES = (
    "COMPACTED_KEY",
    "AtomicCheckpointIO",
    "CheckpointError",
    "RunCheckpoint",
    "compact_finished_checkpoint",
    "load_checkpoint",
    "newest_loadable_checkpoint",
)


def __getattr__(name: str) -> Any:
    if name in _CHECKPOINT_NAMES:
        from kdbias.runs import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module 'kdbias.runs' has no attribute {name!r}")
