"""Dataset facts (classes, statistics) and the offline digits data.

Images are stored as uint8 ``[N, 3, H, W]`` tensors (0..255) with int64 labels
``[N]``; statistics are per-channel, in 0..1 units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "CIFAR_HOLDOUT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "dataset_stats",
    "load_digits_split",
    "digits_to_images",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts of a dataset.

    ``mean``/``std`` are per channel in 0..1 units, over the full official training split
    (held-out validation images included, as for the usual CIFAR constants); ``hflip``
    says whether a mirrored image keeps its label. Sizes are image counts: ``num_train``
    of the official training split, ``num_test`` of the official test split, and
    ``num_holdout`` the default number of training images held out as the validation
    split (5,000 for CIFAR; the same 10 % share, rounded, for digits and folder datasets).
    ``root``/``classes``: the folder and its class names of a folder dataset
    (:func:`kdbias.data.register_folder_dataset`); ``None``/``()`` for the built-in ones.
    """

    name: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_train: int
    num_test: int
    num_holdout: int
    image_size: int = 32
    hflip: bool = True
    root: str | None = None
    classes: tuple[str, ...] = ()


CIFAR_HOLDOUT = 5_000  # CIFAR training images held out for validation by default (of 50,000)

DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        "cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 50_000, 10_000, CIFAR_HOLDOUT
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 50_000, 10_000, CIFAR_HOLDOUT
    ),
    # Mean/std of all 1,437 training images of load_digits_split(seed=0) (see tests/data).
    # A mirrored digit is another glyph (or none), so no horizontal flip.
    "digits": DatasetInfo(
        "digits",
        10,
        (0.3054, 0.3054, 0.3054),
        (0.3237, 0.3237, 0.3237),
        1437,
        360,
        round(1437 * CIFAR_HOLDOUT / 50_000),  # 144
        hflip=False,
    ),
}


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; valid: {', '.join(DATASETS)} (a folder of images is registered first: "
            "CIFARDataModule(dataset='folder', data_dir=PATH) or kdbias.data.register_folder_dataset)"
        ) from None


def dataset_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a dataset's training split: 3 floats each, 0..1 units."""
    info = _info(name)
    return info.mean, info.std


def digits_to_images(pixels: np.ndarray, size: int = 32) -> Tensor:
    """scikit-learn digits ``[N, 64]`` (values 0..16) -> uint8 ``[N, 3, size, size]``.

    Scaled to 0..1, upsampled with bilinear interpolation (``align_corners=False``,
    antialias off: it only matters when downsampling), rounded to 0..255, and
    repeated over 3 identical channels.
    """
    x = torch.as_tensor(np.asarray(pixels, dtype=np.float32) / 16.0).view(-1, 1, 8, 8)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    x = (x * 255.0).round().clamp(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1).contiguous()


def load_digits_split(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's handwritten digits (1,797 images, 10 classes; ships with the
    package, no network) as a fixed stratified 80/20 split: the digits' official
    training and test splits (``CIFARDataModule`` holds out part of the training split
    for validation, as for CIFAR).

    Returns:
        ``(train_images, train_labels, test_images, test_labels)``: uint8
        ``[1437, 3, 32, 32]``, int64 ``[1437]``, uint8 ``[360, 3, 32, 32]``, int64 ``[360]``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_tr, x_va, y_tr, y_va = train_test_split(
        data.data, data.target, test_size=0.2, stratify=data.target, random_state=seed
    )
    return (
        digits_to_images(x_tr),
        torch.as_tensor(y_tr, dtype=torch.int64),
        digits_to_images(x_va),
        torch.as_tensor(y_va, dtype=torch.int64),
    )
