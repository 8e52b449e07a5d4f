"""Files of a run folder: atomic writes that honour the umask, readers no file can break,
removal of the temporary files an interrupted write leaves.

Every file kdbias writes under ``runs/`` goes through :func:`atomic_write_bytes`: a
temporary file ``.<name>.<random>.tmp`` in the same folder, ``fsync``, then ``os.replace``
(atomic on one file system), so a crash or a full disk never leaves a torn file under the
final name. The temporary file gets the mode ``open()`` would give (``0o666 & ~umask``),
not ``mkstemp``'s 0600, so a lab group can read each other's runs.

Readers (:func:`read_regular`, :func:`read_summary`, :func:`read_config`) open only regular
files (a FIFO or a device named ``summary.json`` is refused without blocking), read at most
a size cap, and turn any exception from parsing (``RecursionError`` on deeply nested JSON,
YAML tags, bad UTF-8, ...) into ``None`` and a reason (``read_*_checked``); the lookups
(:mod:`kdbias.runs.lookup`) turn that into a :class:`RunsWarning` naming the file and why.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CONFIG_FILE",
    "HPARAMS_FILE",
    "MAX_CONFIG_BYTES",
    "MAX_SUMMARY_BYTES",
    "RunsWarning",
    "SUMMARY_FILE",
    "UnreadableFile",
    "TEMP_GLOB",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_mode",
    "read_config",
    "read_config_checked",
    "read_regular",
    "read_summary",
    "read_summary_checked",
    "remove_temp_files",
]

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
HPARAMS_FILE = "hparams.yaml"
#: Pattern of the temporary files :func:`atomic_write_bytes` creates (and removes unless killed).
TEMP_GLOB = ".*.tmp"
#: Size caps of the files the readers accept (a kdbias summary or configuration is a few KiB).
MAX_SUMMARY_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024

_UMASK_LOCK = threading.Lock()


class RunsWarning(UserWarning):
    """A file under ``runs/`` was ignored; the message names it and says why."""


class UnreadableFile(ValueError):
    """A file the readers refuse to read (not a regular file, over its size cap)."""


def _umask() -> int:
    """The process umask (read from ``/proc`` where possible; else set and restored under a lock)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Permission bits a new file gets from ``open()``: ``0o666 & ~umask`` (0644 under umask 022)."""
    return 0o666 & ~_umask()


# --------------------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    Readers see the old file or the new one, never a partial one; on a full disk the old
    file is kept, the temporary file removed and the ``OSError`` raised. The file's mode is
    ``0o666 & ~umask`` (see :func:`file_mode`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes (``.<name>.*.tmp``) anywhere
    under ``folder``; return them. Call it only on a folder no live process writes to (a run
    holding its lock, see :mod:`kdbias.runs.lock`)."""
    removed = []
    for path in Path(folder).rglob(TEMP_GLOB):
        try:
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


# --------------------------------------------------------------------------- readers


def read_regular(path: str | Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes.

    Opened non-blocking, so a FIFO never hangs the reader; raises ``FileNotFoundError``
    when missing and ``ValueError`` (naming the cause) for anything that is not a regular
    file or is over the cap.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile("is not a regular file (a FIFO, device or folder); refused without reading")
        if info.st_size > limit:
            raise UnreadableFile(f"is {info.st_size} bytes, over the {limit}-byte limit of this file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise UnreadableFile(f"is over the {limit}-byte limit of this file")
        return data
    finally:
        os.close(fd)


def _reason(error: BaseException) -> str:
    """Why a file was not read, as the rest of a sentence starting with the file's name."""
    text = " ".join(str(error).split())[:200]
    if isinstance(error, UnreadableFile):
        return text
    if isinstance(error, RecursionError):
        return "is nested too deeply to parse (RecursionError)"
    if (isinstance(error, yaml.YAMLError) or "plain YAML" in text) and "tag" in text:
        return f"holds a YAML tag, which plain YAML refuses ({text})"
    return (
        f"cannot be parsed ({type(error).__name__}: {text})" if text else f"cannot be parsed ({type(error).__name__})"
    )


def read_summary_checked(run_dir: str | Path) -> tuple[dict[str, Any] | None, str]:
    """``(summary, "")``, ``(None, "")`` when there is no ``summary.json``, or ``(None, why)``."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        data = json.loads(read_regular(path, MAX_SUMMARY_BYTES).decode("utf-8"))
    except FileNotFoundError:
        return None, ""
    except Exception as error:  # any one file must not stop the reader
        return None, _reason(error)
    if not isinstance(data, dict):
        return None, f"holds a JSON {type(data).__name__}, not an object"
    return data, ""


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """``summary.json`` of ``run_dir`` as a dict; ``None`` when missing or unreadable (why:
    :func:`read_summary_checked`). Never raises, never blocks."""
    return read_summary_checked(run_dir)[0]


def read_config_checked(run_dir: str | Path) -> tuple[dict[str, Any] | None, str]:
    """``(config, "")``, ``(None, "")`` when there is no ``config.yaml``, or ``(None, why)``.
    Plain YAML only, bounded (:func:`kdbias.config_files.load_yaml`: no tags, aliases and
    nesting capped, nothing constructed)."""
    from kdbias.config_files import load_yaml

    path = Path(run_dir) / CONFIG_FILE
    try:
        data = load_yaml(read_regular(path, MAX_CONFIG_BYTES).decode("utf-8"), str(path))
    except FileNotFoundError:
        return None, ""
    except Exception as error:
        return None, _reason(error)
    if not isinstance(data, dict):
        return None, f"holds a YAML {type(data).__name__}, not a mapping"
    return data, ""


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved configuration a run was started with (``config.yaml``); ``{}`` when
    missing or unreadable (why: :func:`read_config_checked`)."""
    return read_config_checked(run_dir)[0] or {}
