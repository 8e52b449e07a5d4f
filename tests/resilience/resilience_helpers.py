"""Shared pieces of the resilience tests (not a test module): tiny CLI budgets, TensorBoard readers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: the smallest honest baseline run: real DeiT-Tiny p4 on digits, a few batches of 8
TINY = ["--smoke", "--no-analytics", "--batch-size", "8", "--val-batch-size", "16", "--limit-val-batches", "1",
        "--log-every-n-steps", "1"]


def read_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """Every ``(step, value)`` event of ``tag`` in every events file of ``run_dir``, in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = []
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            events += [(e.step, e.value) for e in accumulator.Scalars(tag)]
    return events


def script_env() -> dict[str, str]:
    """Environment of an ``experiments/*.py`` subprocess: offline, repo importable, 1 thread each."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("KDBIAS_TRACEBACK", None)
    return env


def script(name: str) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / f"{name}.py")]
