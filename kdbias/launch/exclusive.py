"""One planner per runs folder: ``run_all`` holds ``<runs_dir>/_jobs/run_all.lock`` while it
plans, claims and trains, so a second ``run_all`` on the same folder (any launcher) waits,
saying who holds it, and then finds those runs complete instead of training them twice.

The lock is an exclusive ``fcntl.flock`` (released by the OS however the process ends); the
file is opened without following a symbolic link and holds ``pid N on HOST`` of its holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from kdbias import runs
from kdbias.console import emit

__all__ = ["PLANNER_LOCK", "hold_runs_folder"]

PLANNER_LOCK = "run_all.lock"


def _jobs_folder(runs_dir: Path) -> Path:
    folder = runs_dir / runs.JOBS_DIR
    for path in (runs_dir, folder):
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise ValueError(
                f"{path} is not a folder (a file or a link); run_all keeps its job records there. Move it away, or "
                "choose another --runs_dir."
            )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def hold_runs_folder(runs_dir: str | Path, out: TextIO | None = None, poll_s: float = 1.0) -> Iterator[Path]:
    """Hold the planner lock of ``runs_dir`` for the block (waiting, with one line on ``out``,
    while another ``run_all`` holds it); yields the lock file's path. ``ValueError`` (one
    line) when ``<runs_dir>/_jobs`` is not a folder or the lock file is a link."""
    path = _jobs_folder(Path(runs_dir)) / PLANNER_LOCK
    fd = runs.open_no_follow(path, os.O_RDWR | os.O_CREAT, runs.file_mode())
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    owner = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                    emit(
                        f"run_all: another run_all ({owner}) is planning and training in {runs_dir}; waiting for it to "
                        "finish (Ctrl-C stops waiting; `run_all.py --status` shows what runs).",
                        file=out or sys.stderr,
                    )
                    told = True
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
