"""Class-per-folder image datasets: read with Pillow into the uint8 tensors of the CIFAR path.

Layouts (``root`` is the folder given as ``--data.data_dir``):

- ``root/train/<class>/<image>`` and ``root/test/<class>/<image>``: the two official splits;
  both must hold the same class folders.
- ``root/<class>/<image>`` (no ``train/``/``test/``): one folder, split by a fixed rule:
  the test split is a class-stratified selection of ``round(0.2 * N)`` images
  (:func:`~kdbias.data.sampling.stratified_indices` with seed 0 over the files sorted by
  class, then by name; each class within one image of its 20 % share); the rest is the
  training split. The rule depends on the file names only, never on a run's seed.

Classes are the sub-folders' names in sorted order (label 0 = first). Every file inside a
class folder must be an image Pillow reads (names starting with ``.`` are ignored); each is
converted to RGB and resized to ``image_size`` x ``image_size`` (bilinear, Pillow's own
anti-aliasing when shrinking; an image of that size is kept as is). As for CIFAR, part of
the training split is held out for validation by :class:`~kdbias.data.CIFARDataModule`
(default: 10 % of it, rounded).

Statistics: per-channel mean and standard deviation (population, ddof = 0) of all pixels of
the training split in 0..1 units (held-out images included, as for the CIFAR constants),
cached in ``root/kdbias_stats.json`` with what they were computed from (image size, split
rule, a SHA-256 of every file's name, label, size and modification time): a cache that
no longer matches is recomputed; a folder that cannot be written only loses the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdbias.data.datasets import CIFAR_HOLDOUT, DATASETS, DatasetInfo
from kdbias.data.sampling import stratified_indices

__all__ = [
    "FOLDER",
    "STATS_FILE",
    "FolderDatasetError",
    "FolderLayout",
    "folder_stats",
    "load_folder_split",
    "read_images",
    "register_folder_dataset",
    "resolve_dataset",
    "scan_folder",
]

log = logging.getLogger(__name__)

#: ``--data.dataset folder``: the folder named by ``--data.data_dir``.
FOLDER = "folder"
STATS_FILE = "kdbias_stats.json"
TEST_SHARE = 0.2  # one-folder layout: the test split's share
SPLIT_SEED = 0  # one-folder layout: seed of the stratified test selection
HOLDOUT_SHARE = CIFAR_HOLDOUT / 50_000  # held out for validation by default: CIFAR's 10 %
ONE_FOLDER_RULE = f"one folder: stratified {TEST_SHARE:.0%} test split, seed {SPLIT_SEED}"
SPLIT_FOLDERS_RULE = "train/ and test/ folders"


class FolderDatasetError(ValueError):
    """A folder that cannot be a dataset (missing, no or one class, unreadable files, class
    sets differing between train/ and test/): one line naming the folder and the fix."""


@dataclass(frozen=True)
class FolderLayout:
    """The files of a folder dataset: ``classes`` (sorted names) and, per split, the image
    paths with their int labels; ``rule``: how the splits were made."""

    root: Path
    classes: tuple[str, ...]
    train: tuple[tuple[Path, int], ...]
    test: tuple[tuple[Path, int], ...]
    rule: str


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _classes(folder: Path, where: str) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for entry in _visible(folder):
        if entry.is_dir():
            files = _visible(entry)
            inner = [p for p in files if not p.is_file()]
            if inner:
                raise FolderDatasetError(
                    f"folder dataset {where}: {inner[0]} is not a file; a class folder holds images only "
                    "(layout: CLASS/IMAGE, or train/CLASS/IMAGE and test/CLASS/IMAGE)."
                )
            if not files:
                raise FolderDatasetError(f"folder dataset {where}: class folder {entry} holds no image; remove it.")
            found[entry.name] = files
    if len(found) < 2:
        what = "no class folder" if not found else f"one class folder ({next(iter(found))})"
        raise FolderDatasetError(
            f"folder dataset {where} has {what}; a classification dataset needs at least 2 (one sub-folder of "
            "images per class)."
        )
    return found


def scan_folder(root: str | Path) -> FolderLayout:
    """The layout of ``root`` (module docstring); :class:`FolderDatasetError` when it cannot be one."""
    root = Path(root)
    if not root.is_dir():
        raise FolderDatasetError(
            f"folder dataset {root}: no such folder; pass --data.data_dir PATH, a folder of class folders "
            "(CLASS/IMAGE, or train/CLASS/IMAGE and test/CLASS/IMAGE)."
        )
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        present = "train" if train_dir.is_dir() else "test"
        raise FolderDatasetError(
            f"folder dataset {root} has {present}/ but not {'test' if present == 'train' else 'train'}/; give both "
            "(train/CLASS/IMAGE and test/CLASS/IMAGE) or neither (CLASS/IMAGE, split by a fixed rule)."
        )
    if train_dir.is_dir():
        train, test = _classes(train_dir, str(train_dir)), _classes(test_dir, str(test_dir))
        if set(train) != set(test):
            only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
            raise FolderDatasetError(
                f"folder dataset {root}: train/ and test/ hold different classes (only in train/: "
                f"{', '.join(only_train) or '-'}; only in test/: {', '.join(only_test) or '-'}); give both the same "
                "class folders."
            )
        classes = tuple(sorted(train))
        pairs = lambda found: tuple((p, i) for i, c in enumerate(classes) for p in found[c])  # noqa: E731
        return FolderLayout(root, classes, pairs(train), pairs(test), SPLIT_FOLDERS_RULE)
    found = _classes(root, str(root))
    classes = tuple(sorted(found))
    files = [(p, i) for i, c in enumerate(classes) for p in found[c]]
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    test_idx = set(stratified_indices(labels, round(TEST_SHARE * len(files)), SPLIT_SEED).tolist())
    train = tuple(f for k, f in enumerate(files) if k not in test_idx)
    test = tuple(f for k, f in enumerate(files) if k in test_idx)
    return FolderLayout(root, classes, train, test, ONE_FOLDER_RULE)


def read_images(paths: list[Path] | tuple[Path, ...], size: int) -> Tensor:
    """Images at ``paths`` -> uint8 ``[N, 3, size, size]`` (RGB, bilinear resize with Pillow).

    :class:`FolderDatasetError` naming the first file Pillow cannot read as an image."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for k, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                if image.size != (size, size):
                    image = image.resize((size, size), Image.Resampling.BILINEAR)
                out[k] = np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise FolderDatasetError(
                f"folder dataset: {path} is not an image Pillow can read ({type(error).__name__}: "
                f"{' '.join(str(error).split())[:120]}); remove it or move it out of the class folder."
            ) from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _folder_digest(files: tuple[tuple[Path, int], ...], root: Path) -> str:
    digest = hashlib.sha256()
    for path, label in files:
        info = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}|{label}|{info.st_size}|{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def folder_stats(layout: FolderLayout, image_size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel of ``layout``'s training split at ``image_size`` (0..1 units,
    population std over every pixel of every image), from ``root/kdbias_stats.json`` when it
    was computed from the same files (both splits), size and split rule; else computed (every
    test image is read too, so that an unreadable file is found here) and cached."""
    source = {
        "image_size": int(image_size),
        "rule": layout.rule,
        "num_train": len(layout.train),
        "num_test": len(layout.test),
        "files_sha256": _folder_digest(layout.train + layout.test, layout.root),
    }
    path = layout.root / STATS_FILE
    try:
        cached = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        cached = None
    if isinstance(cached, dict) and cached.get("source") == source:
        mean, std = cached.get("mean"), cached.get("std")
        if all(isinstance(v, list) and len(v) == 3 for v in (mean, std)):
            return tuple(float(x) for x in mean), tuple(float(x) for x in std)
    read_images([p for p, _ in layout.test], image_size)  # every file is checked once, before any run uses it
    images = read_images([p for p, _ in layout.train], image_size)
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).to(torch.float64) / 255.0
    mean = tuple(float(x) for x in pixels.mean(dim=1))
    std = tuple(float(x) for x in pixels.std(dim=1, correction=0))
    record = {"format": "kdbias folder-dataset statistics", "source": source, "mean": mean, "std": std}
    try:
        tmp = path.with_name(f".{STATS_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        log.warning("folder dataset %s: statistics not cached (%s); they are computed again next time", path, error)
    return mean, std


def register_folder_dataset(
    name: str, root: str | Path, image_size: int = 32, hflip: bool = True, holdout: int | None = None
) -> DatasetInfo:
    """Register the class-per-folder images under ``root`` as dataset ``name`` (then
    ``CIFARDataModule(dataset=name)``, ``--data.dataset NAME`` in the same process) and return
    its :class:`~kdbias.data.DatasetInfo`.

    Args:
        name: the dataset's name (summary ``dataset``, the report's ``--dataset``); the built-in
            names other than ``folder`` are refused.
        root: the folder (module docstring: layouts and split rule).
        image_size: side of the square images, >= 8 (the student's input size).
        hflip: whether a mirrored image keeps its label (random flip in training).
        holdout: training images held out for validation by default (``None``: 10 %, rounded).
    """
    if name in ("cifar10", "cifar100", "digits"):
        raise ValueError(f"dataset name {name!r} is built in; register the folder under another name")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    layout = scan_folder(root)
    mean, std = folder_stats(layout, image_size)
    num_train = len(layout.train)
    info = DatasetInfo(
        name=name,
        num_classes=len(layout.classes),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        num_train=num_train,
        num_test=len(layout.test),
        num_holdout=round(num_train * HOLDOUT_SHARE) if holdout is None else int(holdout),
        image_size=image_size,
        hflip=hflip,
        root=str(Path(root).resolve()),
        classes=layout.classes,
    )
    DATASETS[name] = info
    return info


def load_folder_split(info: DatasetInfo) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(train_images, train_labels, test_images, test_labels)`` of a registered folder dataset:
    uint8 ``[N, 3, S, S]`` and int64 ``[N]`` per split, S = ``info.image_size``."""
    assert info.root is not None
    layout = scan_folder(info.root)
    if layout.classes != info.classes or len(layout.train) != info.num_train:
        raise FolderDatasetError(
            f"folder dataset {info.root} changed since it was registered ({len(info.classes)} classes, "
            f"{info.num_train} training images); start the run again."
        )
    split = lambda files: (  # noqa: E731
        read_images([p for p, _ in files], info.image_size),
        torch.tensor([label for _, label in files], dtype=torch.int64),
    )
    return (*split(layout.train), *split(layout.test))


DEFAULT_DATA_DIR = "data"  # CIFARDataModule's data_dir default


def resolve_dataset(
    dataset: str, data_dir: str | Path = DEFAULT_DATA_DIR, image_size: int | None = None
) -> DatasetInfo:
    """The :class:`~kdbias.data.DatasetInfo` a DataModule reads: ``"folder"`` registers
    ``data_dir`` (:func:`register_folder_dataset`; ``image_size`` default 32); any other name
    must be known, take its own image size, and read ``data_dir`` (CIFAR) or be given none
    (digits and registered folders read nothing from it: a ``data_dir`` is refused, never ignored)."""
    if dataset == FOLDER:
        return register_folder_dataset(FOLDER, data_dir, 32 if image_size is None else image_size)
    info = DATASETS.get(dataset)
    if info is None:
        raise ValueError(
            f"unknown dataset {dataset!r}; valid: {', '.join(sorted({*DATASETS, FOLDER}))} (folder: the class "
            "folders under --data.data_dir; other names: kdbias.data.register_folder_dataset)"
        )
    if image_size is not None and image_size != info.image_size:
        raise ValueError(
            f"data.image_size {image_size} does not apply to {dataset!r} ({info.image_size} px); it sets the size "
            "of a folder dataset (--data.dataset folder)."
        )
    if (dataset == "digits" or info.root is not None) and str(data_dir) != DEFAULT_DATA_DIR:
        source = "ships with the package" if info.root is None else f"is registered at {info.root}"
        raise ValueError(
            f"data.data_dir {str(data_dir)!r} is not read by dataset {dataset!r} (it {source}); to train on the "
            f"images in {data_dir} pass --data.dataset folder --data.data_dir {data_dir} (after --smoke), or drop "
            "--data.data_dir."
        )
    return info
