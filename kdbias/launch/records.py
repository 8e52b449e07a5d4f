"""Job records of the launchers under ``<runs_dir>/_jobs/`` (:data:`kdbias.runs.JOBS_DIR`),
and the status of every run of a matrix.

::

    runs/_jobs/<launcher>/<experiment>-seed<k>.json   state, command, log, job id, times
    runs/_jobs/local/<experiment>-seed<k>.log         the run's output (local launcher)
    runs/_jobs/slurm/submitit/<job id>_*              submitit's pickles and logs (SLURM)

A record says what the launcher did (queued, started, failed with its log); the run
folders say what the runs are (complete, locked = running, unfinished): :func:`status`
combines both, the folders first. :func:`queued_job` tells the planner that a run's SLURM job
is still queued or training (submitit's ``sacct`` answer where there is one, else the record),
so that a second ``run_all`` never submits it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdbias import runs

__all__ = ["describe_job", "jobs_dir", "queued_job", "read_record", "status", "status_lines", "write_record"]

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


#: What a SLURM record says while its job may still run (``submitted`` by run_all; ``queued`` and
#: ``running`` by whoever updates it).
LIVE_RECORD_STATES = ("submitted", "queued", "running", "started")
#: SLURM job states (``sacct``) of a job that has ended; any other (PENDING, RUNNING, REQUEUED,
#: PREEMPTED before its requeue, ...) may still train.
ENDED_JOB_STATES = (
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "REVOKED", "TIMEOUT",
)  # fmt: skip
_FAILED_JOB_STATES = tuple(s for s in ENDED_JOB_STATES if s != "COMPLETED")


def _slurm_state(record: dict[str, Any]) -> str | None:
    """The state of the recorded job where it can be asked, else ``None`` (the record's word):
    SLURM's through submitit (``sacct``) for the ``slurm`` executor; for submitit's ``local``
    executor whether its process (the job id is its pid) is alive on this host (``RUNNING`` or
    ``ENDED``); a ``debug`` job ran inside a run_all that has ended (``ENDED``)."""
    import shutil
    import socket

    executor = record.get("executor", "slurm")
    if executor == "debug":
        return "ENDED"
    if executor == "local":
        job_id = str(record.get("job_id", ""))
        if not job_id.isdigit() or record.get("host") not in (None, socket.gethostname()):
            return None
        return "RUNNING" if _alive({"pid": int(job_id)}) else "ENDED"
    if shutil.which("sacct") is None:
        return None  # no SLURM client here: no answer, and no warning per run from submitit
    try:
        import submitit

        job = submitit.SlurmJob(folder=record["folder"], job_id=str(record["job_id"]))
        state = str(job.get_info(mode="force").get("State") or "UNKNOWN")
        return None if state == "UNKNOWN" else state.split()[0]  # "CANCELLED by 12" -> CANCELLED
    except Exception:
        return None


def _without_resume(argv: Sequence[str]) -> list[str]:
    return [str(a) for a in argv if a != "--resume"]


def queued_job(runs_dir: str | Path, slug: str, argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The SLURM record of run ``slug`` while its job may still train, else ``None``.

    A record counts when its state is one of :data:`LIVE_RECORD_STATES`, its job is not known
    to have ended (:func:`_slurm_state`: submitit's answer where there is one, else the record's
    word) and, where both are known, it was submitted with the same arguments ``argv``
    (``--resume`` aside). The record is returned with ``job_state`` (SLURM's word, or ``None``).
    A job that ended without a complete run gives ``None``: the planner plans the run again."""
    record = read_record(runs_dir, "slurm", slug)
    path = jobs_dir(runs_dir, "slurm") / f"{slug}.json"
    if not record or record.get("state") not in LIVE_RECORD_STATES:
        return None
    recorded = record.get("argv")
    if argv is not None and isinstance(recorded, list) and _without_resume(recorded) != _without_resume(argv):
        return None  # a job of another configuration under the same name
    state = _slurm_state(record)
    if state in (*ENDED_JOB_STATES, "ENDED"):
        return None
    return {**record, "job_state": state, "record_path": str(path)}


def describe_job(record: dict[str, Any]) -> str:
    """``SLURM job 1003 (PENDING; record runs/_jobs/slurm/exp1-seed0.json)`` of a
    :func:`queued_job` record; without SLURM's answer, the record's word."""
    job, path = f"SLURM job {record.get('job_id', '?')}", record.get("record_path", "?")
    if record.get("job_state"):
        return f"{job} ({record['job_state']}; record {path})"
    return f"{job} ({record.get('state')}, by its record {path}: delete it if that job is gone)"


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
        elif run.action == "running" and run.run_dir is not None and runs.is_running(run.run_dir):
            owner = runs.lock_owner(run.run_dir)
            out.append((run, "running", f"{run.run_dir} (locked{': ' + owner if owner else ''})"))
        elif record and record.get("state") in LIVE_RECORD_STATES:
            state = _slurm_state(record) if record.get("launcher") == "slurm" else None
            if state in _FAILED_JOB_STATES:
                out.append((run, "failed", f"SLURM {state}; log: {log}"))
            elif state in ("COMPLETED", "ENDED"):
                out.append((run, "failed", f"its job ended ({state}) without a complete run; log: {log}"))
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
