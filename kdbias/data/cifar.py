"""CIFAR-10/100 from torchvision's on-disk python batches, read with pickle + numpy.

Layout under ``data_dir`` (what ``torchvision.datasets.CIFAR10/100(data_dir,
download=True)`` leaves there)::

    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch   (b"labels")
    cifar-100-python/train, test                                   (b"fine_labels")

Each file is a pickled dict whose ``b"data"`` is uint8 ``[N, 3072]``: per image the
1024 red, then green, then blue values, each 32x32 row-major, i.e. ``[3, 32, 32]``
channel-first once reshaped.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["CIFAR_FILES", "DatasetNotFoundError", "cifar_files", "load_cifar", "download_cifar"]

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


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on disk and could not be downloaded."""


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
        f"  2. or copy the extracted CIFAR python batches (e.g. from {'cifar-10-python.tar.gz' if name == 'cifar10' else 'cifar-100-python.tar.gz'}) "
        f"into {root / folder};\n"
        '  3. or use dataset="digits" for the offline smoke data (bundled with scikit-learn).'
    )


def _missing(name: str, data_dir: str | Path) -> list[Path]:
    return [p for p in cifar_files(name, data_dir) if not p.is_file()]


def load_cifar(name: str, data_dir: str | Path, train: bool) -> tuple[Tensor, Tensor]:
    """Read one split of CIFAR-10/100 from disk; never downloads.

    Returns:
        ``(images, labels)``: uint8 ``[N, 3, 32, 32]`` (0..255) and int64 ``[N]``
        (CIFAR-100: the 100 fine labels). N = 50,000 train / 10,000 test for the real files.

    Raises:
        DatasetNotFoundError: a file is missing; the message lists the fixes.
    """
    missing = _missing(name, data_dir)
    if missing:
        raise DatasetNotFoundError(_missing_message(name, data_dir, missing))
    folder, train_files, test_files, label_key, _ = _spec(name)
    root = Path(data_dir).expanduser().resolve() / folder
    images, labels = [], []
    for fname in train_files if train else test_files:
        with open(root / fname, "rb") as f:
            entry = pickle.load(f, encoding="bytes")  # the official files are Python 2 pickles
        images.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(entry[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


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
        raise DatasetNotFoundError(
            _missing_message(name, data_dir, missing, f"download failed: {exc}")
        ) from exc
    missing = _missing(name, data_dir)
    if missing:
        raise DatasetNotFoundError(_missing_message(name, data_dir, missing, "incomplete download"))
