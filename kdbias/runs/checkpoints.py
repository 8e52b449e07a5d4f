"""Checkpoints: read without running code, written atomically, and re-pointed to the run
folder they are in (a moved or copied run resumes with its own files)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from kdbias.runs.files import atomic_write_bytes
from kdbias.runs.layout import BEST_CKPT, CHECKPOINT_DIR, LAST_CKPT
from kdbias.runs.paths import file_in_run

__all__ = [
    "COMPACTED_KEY",
    "BEST_CKPT",
    "AtomicCheckpointIO",
    "CheckpointError",
    "LAST_CKPT",
    "RunCheckpoint",
    "compact_finished_checkpoint",
    "load_checkpoint",
    "newest_loadable_checkpoint",
]


#: Set in a finished run's ``last.ckpt`` once :func:`compact_finished_checkpoint` dropped its
#: optimiser tensors (it can no longer continue training).
COMPACTED_KEY = "kdbias_compacted"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, not a kdbias checkpoint, or holds code."""


def _load(path: Path, map_location: Any) -> Any:
    """``torch.load`` memory-mapped (a tensor is read when used: a teacher's weights load without
    its optimiser state, two thirds of the file, ever being read); a file in the legacy
    (non-zip) format cannot be mapped and is read whole."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap can only be used" not in str(error):
            raise
    return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, so a crafted
    file cannot run code. Raises :class:`CheckpointError` (one line: file, cause, fix)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = _load(path, map_location)
    except Exception as error:  # UnpicklingError (a blocked global), EOF, zip and OS errors
        text = str(error)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = lines[0] if lines else type(error).__name__
        if "Unsupported global" in text or "GLOBAL" in text:
            reason = "it holds Python objects other than tensors and plain containers (refused: no code is run)"
        elif "weights_only" in text or "Weights only load failed" in text:
            detail = next((line for line in lines if "Unpickling" in line or "invalid load key" in line), "")
            reason = (
                f"not a readable torch checkpoint (truncated or another kind of file){': ' + detail if detail else ''}"
            )
        raise CheckpointError(
            f"cannot load checkpoint {path}: {reason}. Use a complete checkpoint written by kdbias "
            "(checkpoints/last.ckpt or best.ckpt of a run), or re-run the experiment that writes it."
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (a {type(checkpoint).__name__}, not a dict).")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, written through :func:`atomic_write_bytes` and read with
    ``weights_only=True``.

    Lightning's own writer stages the file in the system temp folder and moves it, which
    across file systems is a copy: a full disk left truncated ``last.ckpt``/``best.ckpt``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path, map_location=map_location or "cpu")


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose restored state follows the run folder.

    Lightning saves ``dirpath``, ``best_model_path``, ``last_model_path``,
    ``kth_best_model_path`` and ``best_k_models`` as absolute paths; a run folder copied or
    moved elsewhere would resume (and test) the old location's files. On
    :meth:`load_state_dict` every path that lay in the saved ``dirpath`` is re-pointed to the
    same file name in this callback's ``dirpath`` (then Lightning restores the whole state,
    scores included). A path outside the saved folder, or a re-pointed best checkpoint that
    is missing here, is a :class:`CheckpointError` (one line) instead of a silent use of
    another folder's file.
    """

    @property
    def state_key(self) -> str:
        """Lightning's key of ``ModelCheckpoint`` (so checkpoints written before resume alike)."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath")
        if not saved or self.dirpath is None or Path(saved) == Path(self.dirpath):
            return super().load_state_dict(state_dict)
        here = Path(self.dirpath)

        def repoint(path: Any, must_exist: bool) -> Any:
            if not path:
                return path
            if Path(path).parent != Path(saved):
                raise CheckpointError(
                    f"--resume: the restored checkpoint state names {path}, outside the run's checkpoint folder "
                    f"{saved}; refusing to use another folder's file. Start a new run without --resume."
                )
            moved = here / Path(path).name
            if must_exist and not moved.is_file():
                raise CheckpointError(
                    f"--resume: the run was moved from {Path(saved).parent} and its checkpoint {moved.name} is not in "
                    f"{here}; copy the whole run folder (checkpoints/ included) or start a new run without --resume."
                )
            return str(moved)

        state = dict(state_dict, dirpath=self.dirpath)
        state["best_model_path"] = repoint(state_dict.get("best_model_path"), True)
        for key in ("last_model_path", "kth_best_model_path"):
            if key in state_dict:
                state[key] = repoint(state_dict[key], False)
        if "best_k_models" in state_dict:
            state["best_k_models"] = {repoint(k, False): v for k, v in state_dict["best_k_models"].items()}
        super().load_state_dict(state)


def compact_finished_checkpoint(path: str | Path) -> None:
    """Drop the optimiser's per-weight tensors (Adam moments, momentum buffers) from a finished
    run's ``last.ckpt``, atomically. A complete run is never resumed (``--resume`` reports it
    finished and trains nothing), so they would never be read again; the weights, step counts,
    optimiser hyper-parameters, schedules, loops and callback states stay. The file is marked
    (:data:`COMPACTED_KEY`) and no longer offered for resuming."""
    checkpoint = load_checkpoint(path)
    if checkpoint.get(COMPACTED_KEY) or not checkpoint.get("optimizer_states"):
        return
    compact = []
    for state in checkpoint["optimizer_states"]:
        per_weight = {
            index: {k: v for k, v in entry.items() if not (isinstance(v, torch.Tensor) and v.numel() > 1)}
            for index, entry in (state.get("state") or {}).items()
        }
        compact.append({**state, "state": per_weight})
    checkpoint["optimizer_states"] = compact
    checkpoint[COMPACTED_KEY] = True
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _candidates(run_dir: Path) -> Iterator[Path]:
    """The run's checkpoint files, ``last.ckpt`` first; one that is a link leading out of the run
    (another run's ``last.ckpt``) is a :class:`~kdbias.runs.paths.RunPathError`."""
    folder = run_dir / CHECKPOINT_DIR
    files = [p for p in folder.glob("*.ckpt") if file_in_run(run_dir, f"{CHECKPOINT_DIR}/{p.name}", p, missing_ok=True)]
    files = [p for p in files if p.is_file()]
    yield from sorted(files, key=lambda p: (p.name != LAST_CKPT, -p.stat().st_mtime))


def newest_loadable_checkpoint(run_dir: str | Path) -> Path | None:
    """``last.ckpt`` if it loads, else the newest other training checkpoint that loads (with a
    warning naming the broken file); ``None`` when none does. ``best.ckpt`` holds the weights
    only (no optimiser state), so it is never one: training resumes from ``last.ckpt``."""
    for path in _candidates(Path(run_dir)):
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            warnings.warn(f"skipping {path}: {error}", stacklevel=2)
            continue
        if {"loops", "state_dict", "optimizer_states"} <= set(checkpoint) and not checkpoint.get(COMPACTED_KEY):
            return path
        why = "weights only, or a finished run's"
        warnings.warn(f"skipping {path}: not a resumable training checkpoint ({why})", stacklevel=2)
    return None
