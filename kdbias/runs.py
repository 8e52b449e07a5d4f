"""The one owner of the run layout: ``<runs_dir>/<experiment>/version_<n>/``.

::

    runs/<experiment>/version_<n>/
      events.out.tfevents.*     TensorBoard scalars, heatmaps, hparams
      config.yaml               the resolved configuration (``--config`` reruns it)
      hparams.yaml              the module's and datamodule's hyperparameters (plain YAML)
      checkpoints/last.ckpt     the latest epoch, rewritten after every epoch
      checkpoints/best.ckpt     the best epoch by the held-out ``val/acc``
      analytics/cka_heatmaps/   heatmap PNG + JSON per measurement
      summary.json              final figures; ``"status": "complete"`` once tested

A version is claimed by an exclusive ``mkdir`` (two runs started together never share
one); a run that stops before its first checkpoint removes its folder. Every file
kdbias writes here is written to a temporary file in the same folder and renamed
(atomic on one file system), so a crash or a full disk never leaves a torn file.
Checkpoints are read with ``torch.load(weights_only=True)``: no code runs from them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = [
    "BEST_CKPT",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "AtomicCheckpointIO",
    "CheckpointError",
    "HPARAMS_FILE",
    "LAST_CKPT",
    "SUMMARY_FILE",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "claim_run_dir",
    "config_value",
    "discard_if_unstarted",
    "is_complete",
    "latest_complete_run",
    "load_checkpoint",
    "newest_loadable_checkpoint",
    "read_config",
    "read_summary",
    "resumable_run",
    "run_dirs",
    "teacher_checkpoint",
    "version_of",
]

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
HPARAMS_FILE = "hparams.yaml"
CHECKPOINT_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"
_PREFIX = "version_"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, not a kdbias checkpoint, or holds code."""


# --------------------------------------------------------------------------- versions


def version_of(run_dir: str | Path) -> int | None:
    """``n`` of a ``version_<n>`` folder; ``None`` for any other name."""
    name = Path(run_dir).name
    suffix = name[len(_PREFIX) :]
    return int(suffix) if name.startswith(_PREFIX) and suffix.isdigit() else None


def run_dirs(runs_dir: str | Path, experiment: str) -> list[Path]:
    """``<runs_dir>/<experiment>/version_<n>`` folders, newest (highest ``n``) first."""
    root = Path(runs_dir) / experiment
    if not root.is_dir():
        return []
    found = [(version_of(p), p) for p in root.iterdir() if p.is_dir()]
    return [p for n, p in sorted(((n, p) for n, p in found if n is not None), reverse=True)]


def claim_run_dir(runs_dir: str | Path, experiment: str) -> Path:
    """Create and return the next free ``version_<n>`` folder of ``experiment``.

    The folder is made with an exclusive ``os.mkdir``: when two runs start together, one
    gets ``version_n`` and the other, finding it taken, ``version_{n+1}``.
    """
    root = Path(runs_dir) / experiment
    root.mkdir(parents=True, exist_ok=True)
    existing = [version_of(p) for p in root.iterdir()]
    n = max((v for v in existing if v is not None), default=-1) + 1
    while True:
        path = root / f"{_PREFIX}{n}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            n += 1


def discard_if_unstarted(run_dir: str | Path) -> bool:
    """Remove ``run_dir`` if it holds no checkpoint and no summary (a run that failed at
    start-up); return whether it was removed. Nothing that a later run could use is lost."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or (run_dir / SUMMARY_FILE).exists():
        return False
    if any((run_dir / CHECKPOINT_DIR).glob("*.ckpt")):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        run_dir.parent.rmdir()  # the experiment's folder, if this was its only run
    except OSError:
        pass
    return True


# --------------------------------------------------------------------------- atomic files


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    Readers see the old file or the new one, never a partial one; on a full disk the old
    file is kept, the temporary file removed and the ``OSError`` raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, written through :func:`atomic_write_bytes` and read with
    ``weights_only=True``.

    Lightning's own writer stages the file in the system temp folder and moves it, which
    across file systems is a copy: a full disk left truncated ``last.ckpt``/``best.ckpt``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        import io

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_checkpoint(self, path: _PATH, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path, map_location=map_location or "cpu")


# --------------------------------------------------------------------------- readers


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """``summary.json`` of ``run_dir`` as a dict; ``None`` when missing or unreadable."""
    try:
        data = json.loads((Path(run_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved configuration a run was started with (``config.yaml``); ``{}`` when
    missing or unreadable. Plain YAML (``yaml.safe_load``)."""
    try:
        data = yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def config_value(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; ``default`` where a level is missing."""
    value: Any = config
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


def _identity(config: dict[str, Any]) -> tuple[Any, Any, Any]:
    return config.get("seed_everything"), config_value(config, "data.dataset"), config.get("preset")


def is_complete(summary: dict[str, Any] | None) -> bool:
    """A finished run: trained for at least one epoch and tested (``status == "complete"``)."""
    return isinstance(summary, dict) and summary.get("status") == "complete"


def _matches(run_dir: Path, seed: Any, dataset: Any, preset: Any) -> bool:
    wanted = (seed, dataset, preset)
    found = _identity(read_config(run_dir))
    return all(w is None or w == f for w, f in zip(wanted, found))


def latest_complete_run(
    runs_dir: str | Path,
    experiment: str,
    seed: int | None = None,
    dataset: str | None = None,
    preset: str | None = None,
) -> Path | None:
    """Newest complete run of ``experiment`` with that seed, dataset and preset (``None``: any)."""
    for run_dir in run_dirs(runs_dir, experiment):
        if is_complete(read_summary(run_dir)) and _matches(run_dir, seed, dataset, preset):
            return run_dir
    return None


def resumable_run(runs_dir: str | Path, experiment: str, seed: int, dataset: str, preset: str) -> Path | None:
    """Newest unfinished run (a checkpoint, no complete summary) with that seed, dataset and preset."""
    for run_dir in run_dirs(runs_dir, experiment):
        if is_complete(read_summary(run_dir)) or not any((run_dir / CHECKPOINT_DIR).glob("*.ckpt")):
            continue
        if _matches(run_dir, seed, dataset, preset):
            return run_dir
    return None


# --------------------------------------------------------------------------- checkpoints


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, so a crafted
    file cannot run code. Raises :class:`CheckpointError` (one line: file, cause, fix)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
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


def _candidates(run_dir: Path) -> Iterator[Path]:
    folder = run_dir / CHECKPOINT_DIR
    files = sorted(folder.glob("*.ckpt"), key=lambda p: (p.name != LAST_CKPT, -p.stat().st_mtime))
    yield from files


def newest_loadable_checkpoint(run_dir: str | Path) -> Path | None:
    """``last.ckpt`` if it loads, else the newest other checkpoint that loads (with a
    warning naming the broken file); ``None`` when none does."""
    for path in _candidates(Path(run_dir)):
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            warnings.warn(f"skipping {path}: {error}", stacklevel=2)
            continue
        if "loops" in checkpoint and "state_dict" in checkpoint:
            return path
        warnings.warn(f"skipping {path}: not a resumable training checkpoint", stacklevel=2)
    return None


def teacher_checkpoint(runs_dir: str | Path, experiment: str, dataset: str, preset: str) -> Path:
    """The selected checkpoint (``summary["selected_checkpoint"]``) of the newest complete
    ``experiment`` run on ``dataset`` with ``preset``.

    Raises ``FileNotFoundError`` naming the command that trains such a teacher.
    """
    run_dir = latest_complete_run(runs_dir, experiment, dataset=dataset, preset=preset)
    if run_dir is not None:
        selected = (read_summary(run_dir) or {}).get("selected_checkpoint")
        if isinstance(selected, str) and (run_dir / selected).is_file():
            return run_dir / selected
    flags = " --smoke" if preset == "smoke" else ""
    if dataset not in ("cifar10", "digits"):
        flags += f" --data.dataset {dataset}"
    raise FileNotFoundError(
        f"no complete {experiment} run on {dataset!r} ({preset} preset) under {Path(runs_dir) / experiment}. "
        f"Train it first with `python experiments/{experiment}.py{flags}`, or name a teacher checkpoint with "
        "--model.teacher PATH/TO/checkpoints/best.ckpt."
    )
