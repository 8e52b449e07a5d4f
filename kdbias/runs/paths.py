"""Paths read from run files stay inside their run; run files are never written through links.

A run file (``summary.json``'s ``selected_checkpoint``, ``checkpoints/snapshots/index.json``,
``last.ckpt`` itself) may have been edited, copied from elsewhere or replaced by a symbolic
link. :func:`file_in_run` admits a path only when it resolves (links followed) inside the
run folder and names a regular file; anything else is a :class:`RunPathError` naming the
run file, so nothing outside the run is loaded, measured or attributed to it.
:func:`open_no_follow` opens a run file for writing without following a final symbolic
link (``O_NOFOLLOW``) and refuses anything but a regular file. :func:`check_run_folder`
refuses a run folder, or its ``checkpoints/``, that is itself a symbolic link: what a run reads
and writes there would live elsewhere, outside the runs folder.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from kdbias.schema.files import RunPathError

__all__ = ["LinkedRunFolder", "RunPathError", "check_run_folder", "file_in_run", "open_no_follow"]

#: A run's checkpoint folder (re-exported by :mod:`kdbias.runs.layout`, which imports this module).
CHECKPOINT_DIR = "checkpoints"


class LinkedRunFolder(RunPathError, OSError):
    """A run folder or its ``checkpoints/`` is a symbolic link: refused, one line (exit status
    2). Also an ``OSError``, so that a reader which skips an unreadable folder with a warning
    (the report) skips it naming the link and the fix."""


def check_run_folder(run_dir: str | Path) -> Path:
    """``run_dir`` when neither it nor its ``checkpoints/`` is a symbolic link (dangling or
    not), else :class:`LinkedRunFolder` naming the link, where it leads and the fix. A folder
    that does not exist (yet) passes."""
    run_dir = Path(run_dir)
    for path in (run_dir, run_dir / CHECKPOINT_DIR):
        if path.is_symlink():
            target = os.readlink(path)
            raise LinkedRunFolder(
                f"{path} is a symbolic link (to {target}); kdbias never claims, resumes or reads a run folder or its "
                f"{CHECKPOINT_DIR}/ through a link (the run's files would live outside {run_dir.parent}). Replace the "
                f"link with the folder itself (rm {path}; mv {target} {path}), or remove the link."
            )
    return run_dir


def file_in_run(root: str | Path, value: object, named_in: str | Path, *, missing_ok: bool = False) -> Path | None:
    """The regular file that ``value`` (a path relative to ``root``, read from run file
    ``named_in``) names, resolved; ``None`` when it does not exist and ``missing_ok``.

    Raises :class:`RunPathError` (naming ``named_in``) when ``value`` is not a relative path,
    resolves outside ``root`` (``..``, an absolute path, a symbolic link leading out, a
    dangling link) or is not a regular file; ``FileNotFoundError`` when it is missing."""
    root = Path(root)
    if not isinstance(value, str) or not value or "\0" in value or Path(value).is_absolute():
        raise RunPathError(
            f"{named_in} names {str(value)[:200]!r}, not a path relative to its run {root}; refused (nothing outside "
            "a run is read). Restore the file, or re-run the experiment that writes it."
        )
    path = root / value
    real, real_root = path.resolve(), root.resolve()
    if not real.is_relative_to(real_root):
        raise RunPathError(
            f"{named_in} names {value!r}, which leads outside its run {root} (to {real}; through '..' or a symbolic "
            "link); refused: nothing outside a run is read for it. Restore the run's own file."
        )
    try:
        info = os.stat(real)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    if not stat.S_ISREG(info.st_mode):
        raise RunPathError(f"{named_in} names {value!r}, which is not a regular file; refused without reading it.")
    return real


def open_no_follow(path: str | Path, flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode)`` of a regular file:
    :class:`RunPathError` when ``path`` is a symbolic link (dangling or not), a FIFO, a device
    or a folder — nothing is created, truncated or written through it."""
    extra = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | extra, mode)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EMLINK) or (error.errno == errno.EEXIST and os.path.islink(path)):
            raise RunPathError(
                f"{path} is a symbolic link; kdbias writes its run files only in place, never through a link. "
                "Remove the link (rm it) and run again."
            ) from None
        if error.errno in (errno.ENXIO, errno.EISDIR):
            raise RunPathError(f"{path} is not a regular file; remove it and run again.") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunPathError(f"{path} is not a regular file (a FIFO, device or folder); remove it and run again.")
    return fd
