"""One exclusive lock per live run: ``fcntl.flock`` on ``<run_dir>/run.lock``.

A run takes the lock when it claims its folder or resumes it, and holds it for the rest of
the process (:func:`hold_lock`); the OS releases it when the process ends, however it ends
(a crash, SIGKILL, a node lost), so a stale lock never blocks anybody. Readers ask
:func:`is_running`: a locked run is *running* — ``--resume`` refuses to enter it,
``run_all`` does not resume it, lookups do not count it as complete.

Only global rank 0 of a DDP run takes the lock; the other ranks never touch it (they
would block on their own leader). ``flock`` works on local file systems and on NFS (Linux
emulates it with ``fcntl`` byte-range locks through the lock manager).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
import time
from pathlib import Path

from kdbias.runs.files import file_mode, remove_temp_files
from kdbias.runs.paths import check_run_folder, open_no_follow

__all__ = ["LOCK_FILE", "RunLock", "RunningElsewhere", "hold_lock", "is_running", "lock_owner", "release_lock"]

LOCK_FILE = "run.lock"
_HELD: dict[str, int] = {}  # resolved run folder -> fd of its lock, held by this process
_GUARD = threading.Lock()


class RunningElsewhere(ValueError):
    """The run folder is locked by another live process."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        owner = lock_owner(run_dir)
        super().__init__(
            f"{run_dir} is being trained by another live process{f' ({owner})' if owner else ''}: its lock "
            f"{run_dir / LOCK_FILE} is held. Wait for it to finish (or stop it), then run again."
        )


def _key(run_dir: str | Path) -> str:
    return str(Path(run_dir).resolve())


def _try_lock(run_dir: Path, tries: int = 5) -> int | None:
    """An fd holding the exclusive lock of ``run_dir``, or ``None`` when another open file
    description holds it. ``FileNotFoundError`` when the folder is gone. A few short retries
    let a reader's momentary probe (:func:`is_running`) pass; a live run holds it for good.
    :class:`~kdbias.runs.paths.RunPathError` when ``run.lock`` is a symbolic link or not a
    regular file (nothing is created or truncated through it), and
    :class:`~kdbias.runs.paths.LinkedRunFolder` when the folder or its ``checkpoints/`` is one."""
    fd = open_no_follow(check_run_folder(run_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, file_mode())
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
        time.sleep(0.05 * (attempt + 1))
    os.close(fd)
    return None


def _stamp(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)


def hold_lock(run_dir: str | Path) -> Path:
    """Take ``run_dir``'s lock for the rest of this process (a no-op when this process holds
    it already), then remove the temporary files of interrupted writes in the folder.

    Raises :class:`RunningElsewhere` when another process holds it.
    """
    run_dir = Path(run_dir)
    with _GUARD:
        if _key(run_dir) in _HELD:
            return run_dir / LOCK_FILE
        fd = _try_lock(run_dir)
        if fd is None:
            raise RunningElsewhere(run_dir)
        _stamp(fd)
        _HELD[_key(run_dir)] = fd
    remove_temp_files(run_dir)
    return run_dir / LOCK_FILE


def release_lock(run_dir: str | Path) -> None:
    """Release a lock :func:`hold_lock` took (end of an in-process run); no-op otherwise."""
    with _GUARD:
        fd = _HELD.pop(_key(run_dir), None)
    if fd is not None:
        os.close(fd)


def is_running(run_dir: str | Path) -> bool:
    """Whether a live process (this one included) holds ``run_dir``'s lock. Never blocks,
    never creates a lock file."""
    run_dir = Path(run_dir)
    if _key(run_dir) in _HELD:
        return True
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False  # no lock file (or a link, which no kdbias process holds)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the shared probe
    return False


def lock_owner(run_dir: str | Path) -> str:
    """What the lock file says about its holder (``"pid N on HOST"``), or ``""``."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return ""
    try:
        return os.read(fd, 200).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)


class RunLock:
    """``with RunLock(run_dir):`` hold ``run_dir``'s lock for the block (``RunningElsewhere``
    when another process holds it); used to clean a folder nobody is training."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self._fd = _try_lock(self.run_dir)
        if self._fd is None:
            raise RunningElsewhere(self.run_dir)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
