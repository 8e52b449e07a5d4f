"""Reading files that anyone could have put under ``runs/``: regular files only, capped, non-blocking."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_NPZ_INFLATED_BYTES",
    "MAX_SUMMARY_BYTES",
    "RunPathError",
    "UnreadableFile",
    "load_npz",
    "read_regular_file",
    "read_summary_file",
]

MAX_SUMMARY_BYTES = 4 * 1024 * 1024  # a real summary is a few kB
#: Cap of a per-image ``.npz`` file once decompressed (CIFAR's 10,000 test images: under 1 MiB).
MAX_NPZ_INFLATED_BYTES = 256 * 1024 * 1024


class RunPathError(ValueError):
    """A path read from a run file leads outside the run or to something that is not a regular
    file, a run file is malformed where a path or figure is taken from it, or a run file to be
    written is a link or not a regular file: one line, exit status 2."""


class UnreadableFile(ValueError):
    """A file a reader refuses; the message says why (for a warning naming the file)."""


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of ``path`` when it is a regular file (not a symlink, FIFO, device or
    folder) of at most ``max_bytes``; :class:`UnreadableFile` otherwise. Opened
    non-blocking, so a FIFO never hangs the reader."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except OSError as error:
        raise UnreadableFile(f"cannot be read ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFile("not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise UnreadableFile(f"cannot be read ({error.strerror or error})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnreadableFile("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise UnreadableFile(f"cannot be read ({error.strerror or error})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UnreadableFile(f"larger than {max_bytes} bytes")
    return data


def read_summary_file(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path`` (:func:`read_regular_file`, UTF-8, JSON);
    :class:`UnreadableFile` naming the cause otherwise (deep nesting and huge numbers included)."""
    raw = read_regular_file(path, MAX_SUMMARY_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableFile(f"not UTF-8 text (byte {error.start})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise UnreadableFile("not valid JSON (nested too deeply)") from None
    except ValueError as error:
        raise UnreadableFile(f"not valid JSON ({str(error)[:200]})") from None
    if not isinstance(data, dict):
        raise UnreadableFile(f"not a JSON object (a JSON {type(data).__name__})")
    return data


def load_npz(raw: bytes, max_inflated: int | None = None) -> dict[str, Any]:
    """``{name: array}`` of the ``.npz`` bytes ``raw``, loaded with ``allow_pickle=False`` after
    the sizes its zip directory declares are summed and capped at ``max_inflated`` bytes
    (default :data:`MAX_NPZ_INFLATED_BYTES`)
    (zip never inflates a member past its declared size): a small compressed file cannot
    expand into gigabytes. :class:`UnreadableFile` naming the cause otherwise."""
    import io
    import zipfile

    import numpy as np

    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise UnreadableFile(f"not a readable .npz file ({type(error).__name__}: {str(error)[:120]})") from None
    max_inflated = MAX_NPZ_INFLATED_BYTES if max_inflated is None else max_inflated
    if inflated > max_inflated:
        raise UnreadableFile(
            f"declares {inflated} bytes once decompressed, over the {max_inflated}-byte cap; refused without inflating"
        )
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as error:  # a torn or crafted file: zip, header or pickle refusal
        raise UnreadableFile(f"not a readable .npz file ({type(error).__name__}: {str(error)[:120]})") from None
