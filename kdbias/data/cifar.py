"""CIFAR-10/100 from torchvision's on-disk python batches, read with a restricted unpickler.

Layout under ``data_dir`` (what ``torchvision.datasets.CIFAR10/100(data_dir,
download=True)`` leaves there)::

    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch   (b"labels")
    cifar-100-python/train, test                                   (b"fine_labels")

Each file is a pickled dict whose ``b"data"`` is uint8 ``[N, 3072]``: per image the
1024 red, then green, then blue values, each 32x32 row-major, i.e. ``[3, 32, 32]``
channel-first once reshaped.

The batches are pickles, and a plain ``pickle.load`` runs whatever callable a crafted
file names. :func:`load_cifar` reads them with :class:`_CifarUnpickler`, whose
``find_class`` admits only the few numpy globals an array pickle needs, plus two narrowed
stand-ins for what Python 3 writes for ``bytes`` under protocols 0-2 (``_codecs.encode``
with latin-1 only, and ``bytes()`` with no argument); any other global is refused before
anything is called. The loaded dict is then validated (keys, dtype, shape,
label range, lengths) and, unless ``verify_md5=False``, its image count against the
official file's (:data:`CIFAR_COUNTS`) and its MD5 against the one torchvision publishes
(``torchvision.datasets.CIFAR10.train_list`` / ``test_list``: documented class
attributes); every problem is one :class:`CorruptDatasetError` naming the file and the fix.
``verify_md5=False`` (``--data.verify_md5 false``) accepts a deliberately modified copy
(a subset, a relabelled file): its format is still checked.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CIFAR_FILES",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "cifar_files",
    "load_cifar",
    "download_cifar",
    "published_md5",
]

# name -> (folder, train files, test files, label key, torchvision class name)
CIFAR_FILES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], bytes, str]] = {
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        b"labels",
        "CIFAR10",
    ),
    "cifar100": ("cifar-100-python", ("train",), ("test",), b"fine_labels", "CIFAR100"),
}


#: Images in each official batch file (the count a verified file must hold).
CIFAR_COUNTS: dict[str, dict[str, int]] = {
    "cifar10": {**{f"data_batch_{i}": 10_000 for i in range(1, 6)}, "test_batch": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
}

CIFAR_PIXELS = 3 * 32 * 32  # values per image row in b"data": 1024 R, 1024 G, 1024 B


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on disk and could not be downloaded."""


class CorruptDatasetError(ValueError):
    """A dataset file exists but is not a valid CIFAR python batch: unreadable,
    truncated, not a pickle, refers to a forbidden global (possible code-execution
    payload, never run), or holds wrong keys / dtype / shape / labels.

    Attributes:
        path: the offending file.
        problem: what is wrong with it (one line).
    """

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path, self.problem = Path(path), " ".join(problem.split())  # one line
        super().__init__(f"Corrupt dataset file {self.path}: {self.problem}. Fix: {fix}")


class _ForbiddenGlobal(pickle.UnpicklingError):
    """Raised by ``_CifarUnpickler.find_class`` for a global outside the allow-list."""


def _latin1_encode(text: Any, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode`` as Python 3 pickles ``bytes`` under protocols 0-2:
    ``encode(str, "latin1")``; any other use is refused."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _ForbiddenGlobal(f"_codecs.encode is only allowed as encode(str, 'latin1'), got encoding {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """Stand-in for ``bytes`` as Python 3 pickles ``b""`` under protocols 0-2: ``bytes()``;
    any argument is refused."""
    if args:
        raise _ForbiddenGlobal("bytes is only allowed as bytes() (an empty bytes object)")
    return b""


def _numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """The globals a numpy array pickle refers to, under both module spellings
    (numpy < 2: ``numpy.core``; numpy >= 2: ``numpy._core``), resolved here without
    importing the deprecated alias."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of a CIFAR batch (a dict of bytes, ints,
    lists and numpy arrays). The check happens here, before anything is called, so a
    payload's callable (``os.system``, ``builtins.exec``, ...) is never even imported."""

    _allowed: dict[tuple[str, str], Callable[..., Any]] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _CifarUnpickler._allowed is None:
            _CifarUnpickler._allowed = {
                **_numpy_globals(),
                ("_codecs", "encode"): _latin1_encode,
                ("__builtin__", "bytes"): _empty_bytes,  # protocol < 3, fix_imports (the default)
                ("builtins", "bytes"): _empty_bytes,
            }
        try:
            return _CifarUnpickler._allowed[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(
                f"refers to the forbidden global {module}.{name} (possible code-execution payload; "
                "not run: a CIFAR batch only holds numpy uint8 arrays, lists, ints and bytes)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise _ForbiddenGlobal("uses a persistent id, which a CIFAR batch never does")


def _spec(name: str):
    try:
        return CIFAR_FILES[name]
    except KeyError:
        raise ValueError(f"unknown CIFAR dataset {name!r}; valid: {', '.join(CIFAR_FILES)}") from None


def cifar_files(name: str, data_dir: str | Path) -> list[Path]:
    """Absolute paths of every file ``load_cifar`` reads for ``name`` (both splits)."""
    folder, train, test, _, _ = _spec(name)
    root = Path(data_dir).expanduser().resolve() / folder
    return [root / f for f in train + test]


def _archive(name: str) -> str:
    """The official archive holding ``name``'s python batches."""
    return "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"


def _missing_message(name: str, data_dir: str | Path, missing: list[Path], cause: str = "") -> str:
    root = Path(data_dir).expanduser().resolve()
    folder = _spec(name)[0]
    cause = f" ({cause})" if cause else ""
    return (
        f"Dataset {name!r} not found in {root}{cause}.\n"
        f"Expected the CIFAR python batches in {root / folder}: "
        f"{', '.join(p.name for p in cifar_files(name, data_dir))}; "
        f"missing: {', '.join(p.name for p in missing)}.\n"
        "Fixes:\n"
        "  1. run once with network access: prepare_data() downloads it automatically;\n"
        f"  2. or copy the extracted CIFAR python batches (e.g. from {_archive(name)}) "
        f"into {root / folder};\n"
        '  3. or use dataset="digits" for the offline smoke data (bundled with scikit-learn).'
    )


def _missing(name: str, data_dir: str | Path) -> list[Path]:
    return [p for p in cifar_files(name, data_dir) if not p.is_file()]


def _corrupt_fix(name: str, path: Path) -> str:
    return (
        f"delete the folder {path.parent} and run prepare_data() to download it again, "
        f"or copy the official files (from {_archive(name)}) there"
    )


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"numpy {value.dtype} array of shape {list(value.shape)}"
    return type(value).__name__


def _check_labels(labels: Any, num_classes: int) -> tuple[np.ndarray | None, str]:
    """``(int64 [N] labels, "")`` or ``(None, problem)``; no casting of non-integers."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            return None, f"labels must be a list of ints, got a {_describe(labels)}"
        values = labels.astype(np.int64)
    elif isinstance(labels, list):
        bad = next((v for v in labels if isinstance(v, bool) or not isinstance(v, (int, np.integer))), None)
        if bad is not None:
            return None, f"labels must be ints, found a {type(bad).__name__} ({bad!r:.40})"
        try:
            values = np.array(labels, dtype=np.int64)
        except OverflowError:
            return None, f"labels must be in [0, {num_classes}), found a value outside int64"
    else:
        return None, f"labels must be a list of ints, got a {_describe(labels)}"
    out_of_range = values[(values < 0) | (values >= num_classes)]
    if out_of_range.size:
        return None, (
            f"labels must be in [0, {num_classes}), found {out_of_range.size} outside (e.g. {int(out_of_range[0])})"
        )
    return values, ""


def published_md5(name: str) -> dict[str, str]:
    """``{file name: MD5}`` of ``name``'s batch files as torchvision publishes them
    (``train_list`` and ``test_list`` of ``torchvision.datasets.CIFAR10`` / ``CIFAR100``)."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, _spec(name)[4])
    return {str(file): str(md5) for file, md5 in [*cls.train_list, *cls.test_list]}


def _verify(name: str, path: Path, raw: bytes, count: int) -> str:
    """The problem of a batch file that is not the official one (``""`` when it is)."""
    expected = CIFAR_COUNTS[name].get(path.name)
    if expected is not None and count != expected:
        return f"holds {count} images; the official {path.name} holds {expected}"
    md5, published = hashlib.md5(raw).hexdigest(), published_md5(name).get(path.name)
    if published is not None and md5 != published:
        return f"its MD5 {md5} differs from torchvision's published {published} (a damaged or modified copy)"
    return ""


def _read_batch(name: str, path: Path, verify_md5: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch, safely unpickled and validated (and verified: image count,
    published MD5, unless ``verify_md5`` is off).

    Returns:
        uint8 images ``[N, 3, 32, 32]`` (0..255, channel-first) and int64 labels ``[N]``
        in ``[0, num_classes)``, N >= 1.

    Raises:
        CorruptDatasetError: anything wrong with the file (see the class).
    """
    label_key = _spec(name)[3]
    num_classes = 10 if name == "cifar10" else 100

    def fail(problem: str) -> CorruptDatasetError:
        return CorruptDatasetError(path, problem, _corrupt_fix(name, path))

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot be read ({type(exc).__name__}: {exc.strerror or exc})") from exc
    if not raw:
        raise fail("empty file (0 bytes)")
    try:
        # The official files are Python 2 pickles: their str objects become bytes.
        entry = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _ForbiddenGlobal as exc:
        raise fail(str(exc)) from None
    except EOFError:
        raise fail(f"truncated: the pickle ends early ({len(raw)} bytes)") from None
    except Exception as exc:  # UnpicklingError, ValueError, TypeError, MemoryError, ...: never trust the bytes
        raise fail(f"not a valid pickle ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(entry, dict):
        raise fail(f"expected a pickled dict, got a {_describe(entry)}")
    for key in (b"data", label_key):
        if key not in entry:
            found = ", ".join(repr(k) for k in list(entry)[:8])
            raise fail(f"missing key {key!r} (keys: {found or 'none'})")
    data = entry[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise fail(f'b"data" must be a numpy uint8 array [N, {CIFAR_PIXELS}], got a {_describe(data)}')
    if data.ndim != 2 or data.shape[1] != CIFAR_PIXELS or data.shape[0] < 1:
        raise fail(f'b"data" must have shape [N, {CIFAR_PIXELS}] with N >= 1, got {list(data.shape)}')
    labels, problem = _check_labels(entry[label_key], num_classes)
    if labels is None:
        raise fail(f"{label_key!r}: {problem}")
    if len(labels) != len(data):
        raise fail(f'{len(labels)} labels in {label_key!r} for {len(data)} images in b"data"')
    problem = _verify(name, path, raw, len(data)) if verify_md5 else ""
    if problem:
        raise CorruptDatasetError(
            path,
            problem,
            f"{_corrupt_fix(name, path)}; to use a deliberately modified copy, pass --data.verify_md5 false",
        )
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(name: str, data_dir: str | Path, train: bool, verify_md5: bool = True) -> tuple[Tensor, Tensor]:
    """Read one split of CIFAR-10/100 from disk; never downloads.

    Every file is read with a restricted unpickler (no code in a file ever runs) and
    validated: a dict with ``b"data"`` (numpy uint8 ``[N, 3072]``) and ``b"labels"``
    (CIFAR-10) / ``b"fine_labels"`` (CIFAR-100): N ints in ``[0, num_classes)``. With
    ``verify_md5`` (the default), N must be the official file's count and the file's MD5
    torchvision's published one; ``False`` accepts a deliberately modified copy.

    Returns:
        ``(images, labels)``: uint8 ``[N, 3, 32, 32]`` (0..255) and int64 ``[N]``
        (CIFAR-100: the 100 fine labels). N = 50,000 train / 10,000 test for the real files.

    Raises:
        DatasetNotFoundError: a file is missing; the message lists the fixes.
        CorruptDatasetError: a file is unreadable, not a CIFAR batch, or holds a forbidden
            global (never executed); the one-line message names the file and the fix.
    """
    missing = _missing(name, data_dir)
    if missing:
        raise DatasetNotFoundError(_missing_message(name, data_dir, missing))
    folder, train_files, test_files, _, _ = _spec(name)
    root = Path(data_dir).expanduser().resolve() / folder
    files = train_files if train else test_files
    batches = [_read_batch(name, root / fname, verify_md5) for fname in files]
    images = np.concatenate([x for x, _ in batches])  # a fresh, writable, contiguous copy
    labels = np.concatenate([y for _, y in batches])
    return torch.from_numpy(images), torch.from_numpy(labels)


def download_cifar(name: str, data_dir: str | Path) -> None:
    """Make sure CIFAR-10/100 is in ``data_dir``; download it with torchvision if not.

    Does nothing when the files are already there. Offline, torchvision fails at once
    (``URLError``) and this raises :class:`DatasetNotFoundError` naming the fixes.
    """
    missing = _missing(name, data_dir)
    if not missing:
        return
    import torchvision.datasets

    cls = getattr(torchvision.datasets, _spec(name)[4])
    root = Path(data_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        cls(str(root), train=True, download=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; RuntimeError: bad archive
        raise DatasetNotFoundError(_missing_message(name, data_dir, missing, f"download failed: {exc}")) from exc
    missing = _missing(name, data_dir)
    if missing:
        raise DatasetNotFoundError(_missing_message(name, data_dir, missing, "incomplete download"))
