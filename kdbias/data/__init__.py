"""Data: CIFAR-10 / CIFAR-100 / offline digits / a folder of images, and batched on-device augmentation."""

from kdbias.data.augment import cutmix, mixup, normalize, random_crop, random_crop_flip, random_hflip, to_soft_targets
from kdbias.data.cifar import CorruptDatasetError, DatasetNotFoundError, download_cifar, load_cifar
from kdbias.data.datamodule import CIFARDataModule
from kdbias.data.datasets import (
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    dataset_stats,
    load_digits_split,
)
from kdbias.data.folder import FolderDatasetError, register_folder_dataset

__all__ = [
    "CIFARDataModule",
    "CorruptDatasetError",
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "FolderDatasetError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "cutmix",
    "dataset_stats",
    "download_cifar",
    "load_cifar",
    "load_digits_split",
    "mixup",
    "normalize",
    "random_crop",
    "random_crop_flip",
    "random_hflip",
    "register_folder_dataset",
    "to_soft_targets",
]
