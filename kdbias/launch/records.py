"""Job records of the launchers under ``<runs_dir>/_jobs/`` (:data:`kdbias.runs.JOBS_DIR`),
and the status of every run of a matrix.

::

    runs/_jobs/<launcher>/<experiment>-seed<k>.json   state, command, log, job id, times
    runs/_jobs/local/<experiment>-seed<k>.log         the run's output (local launcher)
    runs/_jobs/slurm/submitit/<job id>_*              submitit's pickles and logs (SLURM)

A record says what the launcher did (queued, started, failed with its log); the run
folders say what the runs are (complete, locked = running, unfinished): :func:`status`
combines both, the folders first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdbias import runs

__all__ = ["jobs_dir", "read_record", "status", "status_lines", "write_record"]

LAUNCHERS = ("local", "slurm")


def jobs_dir(runs_dir: str | Path, launcher: str) -> Path:
    return Path(runs_dir) / runs.JOBS_DIR / launcher


def write_record(runs_dir: str | Path, launcher: str, slug: str, **fields: Any) -> dict[str, Any]:
    """Update ``_jobs/<launcher>/<slug>.json`` with ``fields`` (and the time); return it."""
    path = jobs_dir(runs_dir, launcher) / f"{slug}.json"
    record = read_record(runs_dir, launcher, slug) or {}
    record.update(fields, launcher=launcher, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
    runs.atomic_write_json(path, record)
    return record


def read_record(runs_dir: str | Path, launcher: str, slug: str) -> dict[str, Any] | None:
    path = jobs_dir(runs_dir, launcher) / f"{slug}.json"
    try:
        data = json.loads(runs.read_regular(path, runs.MAX_SUMMARY_BYTES).decode("utf-8"))
    except Exception:  # a missing or broken record is no record
        return None
    return data if isinstance(data, dict) else None


def _slurm_state(record: dict[str, Any]) -> str | None:
    """SLURM's state of the recorded job (through submitit, ``sacct``), when it can be asked."""
    try:
        import submitit

        job = submitit.SlurmJob(folder=record["folder"], job_id=str(record["job_id"]))
        state = str(job.state)
        return None if state == "UNKNOWN" else state  # no sacct answer: the record's word
    except Exception:
        return None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat``), or ``None``:
    with the pid it names one process, not whichever process reuses the number later."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(record: dict[str, Any]) -> bool:
    """Whether the local run of ``record`` still runs: its pid is alive and, where the record
    holds them, on this host and started when the record says (a reused pid is not the run)."""
    import os
    import socket

    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if record.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process: not checkable from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    started = record.get("pid_start")
    return started is None or started == process_start(pid)


def status(plan: Sequence[Any], runs_dir: str | Path) -> list[tuple[Any, str, str]]:
    """``(planned run, state, detail)`` for every run of the plan. States: ``done``,
    ``running`` (its folder is locked), ``queued`` (a job waits), ``failed`` (detail: the
    log), ``unfinished`` (a checkpoint, nothing running: run_all resumes it), ``missing``."""
    out = []
    for run in plan:
        records = [r for r in (read_record(runs_dir, launcher, run.slug) for launcher in LAUNCHERS) if r]
        record = max(records, key=lambda r: r.get("updated", ""), default=None)
        log = (record or {}).get("log", "")
        if run.action == "skip":
            out.append((run, "done", str(run.run_dir)))
        elif run.action == "running":
            owner = runs.lock_owner(run.run_dir)
            out.append((run, "running", f"{run.run_dir} (locked{': ' + owner if owner else ''})"))
        elif record and record.get("state") in ("queued", "submitted", "started"):
            state = _slurm_state(record) if record.get("launcher") == "slurm" else None
            if state in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
                out.append((run, "failed", f"SLURM {state}; log: {log}"))
            elif record.get("state") == "started" and record.get("launcher") == "local":
                alive = _alive(record)
                state, why = ("running", "starting") if alive else ("failed", "its process ended without a run")
                out.append((run, state, f"{why}; log: {log}"))
            else:
                job = f"job {record['job_id']}" if record.get("job_id") else "waiting for its dependencies"
                out.append((run, "queued", f"{job}{' (' + state + ')' if state else ''}; log: {log}"))
        elif record and record.get("state") == "failed":
            out.append((run, "failed", f"{record.get('reason', 'failed')}; log: {log}"))
        elif run.action == "resume":
            out.append((run, "unfinished", f"{run.run_dir} (resumable from its last checkpoint)"))
        else:
            out.append((run, "missing", ""))
    return out


def status_lines(plan: Sequence[Any], runs_dir: str | Path) -> list[str]:
    rows = status(plan, runs_dir)
    counts: dict[str, int] = {}
    lines = []
    for run, state, detail in rows:
        counts[state] = counts.get(state, 0) + 1
        lines.append(f"  {state:<10} {run.experiment} seed {run.seed}{'  ' + detail if detail else ''}")
        for other, diff in run.others:
            lines.append(f"  {'':<10}   other configuration, not counted: {other} ({', '.join(list(diff)[:4])})")
    head = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return [f"run_all --status: {len(rows)} runs: {head}", *lines]
