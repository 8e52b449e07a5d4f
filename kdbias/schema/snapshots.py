"""The snapshot index of a teacher run: ``<run>/checkpoints/snapshots/index.json``.

``{file: {"epoch": int, "val_acc": float}}``: each weights snapshot (``epoch<NNN>.ckpt``, written
by :class:`~kdbias.callbacks.snapshots.SnapshotCallback`) with the held-out ``val/acc`` of its
weights, a fraction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["SNAPSHOT_DIR", "SNAPSHOT_INDEX", "read_snapshots"]

SNAPSHOT_DIR = "snapshots"  # under the run's checkpoints/
SNAPSHOT_INDEX = "index.json"


def read_snapshots(dirpath: str | Path) -> dict[str, Any]:
    """The snapshot index ``{file: {"epoch", "val_acc"}}`` of ``dirpath`` ({} when there is none)."""
    path = Path(dirpath) / SNAPSHOT_INDEX
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}
