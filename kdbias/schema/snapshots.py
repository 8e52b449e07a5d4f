"""The snapshot index of a teacher run: ``<run>/checkpoints/snapshots/index.json``.

``{file: {"epoch": int, "val_acc": float}}``: each weights snapshot (``epoch<NNN>.ckpt``, written
by :class:`~kdbias.callbacks.snapshots.SnapshotCallback`) with the held-out ``val/acc`` of its
weights, a fraction.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kdbias.schema.files import RunPathError, read_regular_file

__all__ = ["SNAPSHOT_DIR", "SNAPSHOT_INDEX", "read_snapshots"]

SNAPSHOT_DIR = "snapshots"  # under the run's checkpoints/
SNAPSHOT_INDEX = "index.json"
#: Size cap of ``index.json`` (a few hundred bytes per snapshot).
MAX_INDEX_BYTES = 1024 * 1024
_SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9_.=-]{1,200}\.ckpt")


def read_snapshots(dirpath: str | Path) -> dict[str, dict[str, Any]]:
    """The snapshot index ``{file: {"epoch", "val_acc"}}`` of ``dirpath`` ({} when there is none).

    Validated: a regular file of at most :data:`MAX_INDEX_BYTES`, a JSON object whose keys are
    plain ``.ckpt`` file names (no folders) and whose entries hold an integer ``epoch >= 0``
    and a finite ``val_acc`` in [0, 1]. Anything else is a :class:`RunPathError` naming
    ``index.json`` (one line; a NaN accuracy would otherwise win every match)."""
    path = Path(dirpath) / SNAPSHOT_INDEX
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        data = json.loads(read_regular_file(path, MAX_INDEX_BYTES).decode("utf-8"))
    except (ValueError, RecursionError) as error:  # UnreadableFile, JSON, UTF-8, a 5,000-digit integer
        reason = " ".join(str(error).split())[:200]
        raise RunPathError(
            f"{path} cannot be read ({type(error).__name__}: {reason}); delete it (its snapshots are then not "
            "offered) or retrain the teacher run."
        ) from None
    if not isinstance(data, dict):
        raise RunPathError(f"{path} holds a JSON {type(data).__name__}, not an object; delete it or retrain.")
    for name, info in data.items():
        epoch = info.get("epoch") if isinstance(info, dict) else None
        acc = info.get("val_acc") if isinstance(info, dict) else None
        problem = (
            "is not a plain .ckpt file name in the snapshot folder"
            if not _SNAPSHOT_NAME.fullmatch(name)
            else "has no integer epoch >= 0"
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0
            else "has no finite val_acc in [0, 1]"
            if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not (0.0 <= acc <= 1.0)
            else ""
        )
        if problem:
            raise RunPathError(f"{path}: entry {name[:100]!r} {problem}; delete the file or retrain the teacher run.")
    return data
