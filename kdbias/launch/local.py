"""The local launcher: the runs of a matrix as subprocesses on this machine, ``parallel`` at
a time, each pinned to its own GPU(s).

Every run is ``sys.executable experiments/<name>.py ARGS`` in its own process (a crash or
an OOM is isolated). A run starts once the runs it needs (its teacher, the teachers it is
measured against) have completed; independent runs (seeds, experiments) fill the free
slots in matrix order. With GPUs, slot ``i`` sees GPUs ``i*g .. i*g+g-1`` only
(``CUDA_VISIBLE_DEVICES``); on a CPU machine each of the ``parallel`` runs gets
``cpus // parallel`` intra-op threads (``OMP_NUM_THREADS``), so two runs do not fight for
the same cores. The first failure starts nothing new: the runs under way finish, then the
failure is printed with the command that re-runs it and its log.

Output: with ``parallel == 1`` the run's output is shown as it comes (and kept in its log);
with more, each run writes ``runs/_jobs/local/<experiment>-seed<k>.log`` and the launcher
prints one progress line per run (its latest epoch line: epoch, accuracy, time left).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kdbias import runs
from kdbias.console import emit
from kdbias.launch.records import jobs_dir, process_start, write_record

__all__ = ["LocalResult", "exit_reason", "gpu_count", "run_local"]

PROGRESS_EVERY_S = 30.0


def exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was terminated by {name}" + (" (killed; out of memory?)" if -code == signal.SIGKILL else "")
    return f"exited with code {code}"


def gpu_count() -> int:
    """CUDA devices this process may use (0 without CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


@dataclass
class LocalResult:
    """What the loop did: runs trained, the first failure (one line) and its command/log."""

    trained: int = 0
    failure: str | None = None
    failed_command: list[str] = field(default_factory=list)
    failed_log: Path | None = None
    blocked: list[str] = field(default_factory=list)


@dataclass
class _Live:
    run: Any
    process: subprocess.Popen
    slot: int
    log: Path
    began: float
    index: int
    last_line: str = ""
    pump: threading.Thread | None = None


def _open_log(log: Path) -> TextIO:
    """``log`` emptied and opened for writing, never through a symbolic link (a link or a
    FIFO there is a :class:`~kdbias.runs.RunPathError`: one line, nothing written)."""
    fd = runs.open_no_follow(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, runs.file_mode())
    return os.fdopen(fd, "w", encoding="utf-8", errors="replace")


def _pump(process: subprocess.Popen, out: TextIO, echo: TextIO | None, live: _Live) -> None:
    """Copy the child's output to its log ``out`` (and to ``echo``), keeping its last epoch line."""
    with out:
        for line in process.stdout:  # type: ignore[union-attr]
            out.write(line)
            out.flush()
            if echo is not None:
                echo.write(line)
                echo.flush()
            if line.startswith("epoch "):
                live.last_line = line.strip()


def _slot_env(base: dict[str, str], slot: int, parallel: int, gpus: int, gpus_per_run: int) -> dict[str, str]:
    env = dict(base)
    if gpus > 0:
        first = slot * gpus_per_run
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(first, first + gpus_per_run))
    elif parallel > 1 and "OMP_NUM_THREADS" not in base:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def run_local(
    todo: Sequence[Any],
    runs_dir: str | Path,
    check_done: Callable[[Any], Path | None] | None = None,
    parallel: int = 1,
    env: dict[str, str] | None = None,
    gpus: int | None = None,
    gpus_per_run: int = 1,
    unavailable: Sequence[str] = (),
    start: Callable[..., subprocess.Popen] | None = None,
    progress_every_s: float = PROGRESS_EVERY_S,
    out: TextIO = sys.stdout,
) -> LocalResult:
    """Train ``todo`` (planned runs in matrix order); see the module docstring.

    ``check_done(run)``: the complete run folder after the process ended, or ``None`` (default:
    :meth:`~kdbias.launch.plan.PlannedRun.completed`, the newest complete run of its identity).
    ``unavailable``: keys (``experiment:seed``) that will not complete here (running
    elsewhere): runs that need them are not started (listed in ``blocked``).
    """
    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    start = start or subprocess.Popen
    check_done = check_done or (lambda run: run.completed())
    gpus = gpu_count() if gpus is None else gpus
    if gpus > 0:
        if gpus_per_run > gpus:
            raise ValueError(f"--gpus_per_run {gpus_per_run} is more than the {gpus} GPUs of this machine")
        slots = min(parallel, gpus // gpus_per_run)
        if slots < parallel:
            emit(f"run_all: {gpus} GPUs, {gpus_per_run} per run: {slots} runs at a time", file=out)
        parallel = slots
    folder = jobs_dir(runs_dir, "local")
    folder.mkdir(parents=True, exist_ok=True)
    base = dict(os.environ if env is None else env)
    pending = list(todo)
    for run in pending:
        write_record(runs_dir, "local", run.slug, state="queued", command=shlex.join(run.command()), log="")
    keys = {run.key for run in pending}
    completed: set[str] = set()
    bad: set[str] = set(unavailable)
    live: dict[int, _Live] = {}
    result = LocalResult()
    counter, total, last_progress = 0, len(pending), time.perf_counter()

    def ready(run: Any) -> bool:
        return all(need in completed or need not in keys for need in run.needs)

    while pending or live:
        for run in [r for r in pending if any(n in bad for n in r.needs)]:
            pending.remove(run)
            bad.add(run.key)
            result.blocked.append(f"{run.experiment} seed {run.seed} (needs {', '.join(run.needs)})")
            write_record(runs_dir, "local", run.slug, state="blocked", reason="a run it needs did not complete")
        free = [slot for slot in range(parallel) if slot not in live]
        while result.failure is None and free and any(ready(r) for r in pending):
            run = next(r for r in pending if ready(r))
            pending.remove(run)
            slot = free.pop(0)
            counter += 1
            log = folder / f"{run.slug}.log"
            log_file = _open_log(log)
            command = run.command()
            emit(
                f"\n[{counter}/{total}] {run.action} {run.experiment} seed {run.seed}: {shlex.join(command)}", file=out
            )
            if parallel > 1:
                emit(f"[{counter}/{total}]   log: {log}", file=out)
            out.flush()
            child_env = _slot_env(base, slot, parallel, gpus, gpus_per_run)
            process = start(
                command, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
            )
            entry = _Live(run, process, slot, log, time.perf_counter(), counter)
            entry.pump = threading.Thread(target=_pump, args=(process, log_file, out if parallel == 1 else None, entry))
            entry.pump.start()
            live[slot] = entry
            write_record(
                runs_dir,
                "local",
                run.slug,
                state="started",
                log=str(log),
                pid=process.pid,
                pid_start=process_start(process.pid),
                host=socket.gethostname(),
                slot=slot,
            )
        if not live:
            break  # nothing can start: a failure, or runs waiting on what will not complete
        time.sleep(0.2)
        for slot, entry in list(live.items()):
            code = entry.process.poll()
            if code is None:
                continue
            entry.pump.join()
            del live[slot]
            _finished(entry, code, check_done, runs_dir, result, completed, bad, total, out)
        if parallel > 1 and live and time.perf_counter() - last_progress >= progress_every_s:
            last_progress = time.perf_counter()
            for entry in sorted(live.values(), key=lambda e: e.index):
                took = time.perf_counter() - entry.began
                line = entry.last_line or "starting"
                emit(
                    f"[{entry.index}/{total}] {entry.run.experiment} seed {entry.run.seed}: {line} ({took:.0f} s)",
                    file=out,
                )
            out.flush()
    for run in pending:  # left after a failure
        write_record(runs_dir, "local", run.slug, state="not started", reason="an earlier run failed")
    return result


def _finished(entry: _Live, code: int, check_done, runs_dir, result: LocalResult, completed, bad, total, out) -> None:
    run, took = entry.run, time.perf_counter() - entry.began
    done = check_done(run)
    failure = None
    if code != 0:
        failure = f"{run.experiment} (seed {run.seed}) {exit_reason(code)} after {took:.0f} s"
    elif done is None:
        failure = f"{run.experiment} (seed {run.seed}) finished without a complete summary.json"
    if failure is None:
        result.trained += 1
        completed.add(run.key)
        write_record(runs_dir, "local", run.slug, state="done", run_dir=str(done), seconds=round(took, 1))
        emit(f"[{entry.index}/{total}] done: {done} ({took:.0f} s)", file=out)
        return
    bad.add(run.key)
    write_record(runs_dir, "local", run.slug, state="failed", reason=failure, exit_code=code)
    emit(f"[{entry.index}/{total}] FAILED: {failure}; log: {entry.log}", file=out)
    if result.failure is None:
        result.failure, result.failed_command, result.failed_log = failure, run.command(python="python"), entry.log
