"""``run_all --sweep KEY=V1,V2[,...]``: parse the flags, expand them into a grid, record the sweep.

Several ``--sweep`` flags form a grid (every combination). Each point is a set of command-line
overrides (``--KEY VALUE``) that every planned student run gets, for every seed; the values
are written as given and parsed by the experiment's own command line (so a value is typed
like the key's argument). What was swept and the preset's value of each key are recorded in
``<runs_dir>/sweeps.json`` (:mod:`kdbias.report.sweep`), where the report finds them.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kdbias.report.sweep import SWEEPS_FILE, read_sweeps
from kdbias.runs import atomic_write_text

__all__ = ["Point", "parse_sweeps", "point_args", "point_slug", "record_sweep", "sweep_grid"]

Point = tuple[tuple[str, str], ...]  # ((key, value), ...) in flag order
_KEY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


def parse_sweeps(flags: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["model.temperature=1,2,4"]`` -> ``[("model.temperature", ["1", "2", "4"])]``; ``ValueError``
    (one line) for a flag without ``=``, a key that is not dotted (``model.x``), an empty or
    repeated value, or a key swept twice."""
    out: list[tuple[str, list[str]]] = []
    for flag in flags:
        key, sep, text = flag.partition("=")
        key = key.strip().removeprefix("--")
        values = [v.strip() for v in text.split(",")]
        if not sep or not _KEY.match(key):
            raise ValueError(
                f"--sweep {flag!r}: write KEY=V1,V2 with a dotted configuration key (model.temperature=1,2)"
            )
        if any(not v for v in values) or len(set(values)) != len(values):
            raise ValueError(f"--sweep {flag!r}: the values must be non-empty and distinct")
        if key in (k for k, _ in out):
            raise ValueError(f"--sweep: {key} is swept twice; give its values in one flag")
        if key in ("seed_everything", "data.seed") or key.startswith("trainer.default_root_dir"):
            raise ValueError(f"--sweep: {key} is not a setting to sweep (use --seeds for seeds)")
        out.append((key, values))
    return out


def sweep_grid(sweeps: Sequence[tuple[str, Sequence[str]]]) -> list[Point]:
    """Every combination of the swept values, in flag order (the last key varies fastest);
    ``[()]`` (one point, no override) without sweeps."""
    keys = [k for k, _ in sweeps]
    return [tuple(zip(keys, combo)) for combo in itertools.product(*(v for _, v in sweeps))]


def point_args(point: Point) -> list[str]:
    """The command-line overrides of a grid point: ``["--model.temperature", "1"]``."""
    return [arg for key, value in point for arg in (f"--{key}", value)]


def point_slug(point: Point) -> str:
    """File-name form of a point: ``"temperature1"`` (``""`` for none); safe characters only."""
    parts = [f"{key.rsplit('.', 1)[-1]}{value}" for key, value in point]
    return re.sub(r"[^\w.+-]", "_", "-".join(parts))


def record_sweep(
    runs_dir: str | Path, experiment: str, dataset: str, preset: str, reference: Mapping[str, Any]
) -> Path:
    """Add (or replace) the sweep of ``experiment`` on ``dataset`` / ``preset`` in
    ``<runs_dir>/sweeps.json``; ``reference``: the preset's value of each swept key."""
    path = Path(runs_dir) / SWEEPS_FILE
    keep = [
        s
        for s in read_sweeps(runs_dir)
        if (s["experiment"], s["dataset"], s["preset"]) != (experiment, dataset, preset)
    ]
    entry = {"experiment": experiment, "dataset": dataset, "preset": preset, "keys": list(reference)}
    entry["reference"] = dict(reference)
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"format": "kdbias sweeps", "sweeps": [*keep, entry]}, indent=1, default=str))
    return path
