"""``CIFARDataModule``: CIFAR-10 / CIFAR-100 / digits held as uint8 tensors, augmented
on the device after transfer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kdbias.data.augment import cutmix, mixup, normalize, random_crop, random_hflip
from kdbias.data.cifar import download_cifar, load_cifar
from kdbias.data.datasets import DATASETS, load_digits_split

__all__ = ["CIFARDataModule", "TensorBatchDataset"]

MIXES = {"cutmix": (cutmix, 1.0), "mixup": (mixup, 0.2)}  # name -> (function, default alpha)
CROP_PADDING = 4


class TensorBatchDataset(Dataset):
    """Map-style dataset over in-memory tensors that fetches a whole batch at once.

    ``DataLoader`` calls ``__getitems__(indices)`` with the batch sampler's list of
    indices, so one batch costs one indexing op instead of B ``__getitem__`` calls.
    Use it with ``collate_fn=collate_batch``.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.images[idx], self.labels[idx]


def collate_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Identity collate: ``TensorBatchDataset.__getitems__`` already returns a batch."""
    return batch


def _stream_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the augmentation generator for one batch (SplitMix64 finaliser), so the
    stream depends only on (seed, rank, step) and resumes from a step count."""
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + rank * 0xD1B54A32D192ED03 + step * 0x8CB92BA72F3D8DD7) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) >> 1  # 63 bits: manual_seed takes a signed 64-bit value


def _fixed_indices(n: int, k: int | None, seed: int) -> Tensor:
    """Sorted, seeded random subset of ``range(n)`` of size ``min(k, n)`` (all if None)."""
    if k is None or k >= n:
        return torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:k].sort().values


class CIFARDataModule(pl.LightningDataModule):
    """CIFAR-10, CIFAR-100 or the offline digits data, with batched GPU-side augmentation.

    Each split is held as one uint8 tensor ``[N, 3, 32, 32]`` plus int64 labels ``[N]``;
    loaders yield uint8 batches. ``on_after_batch_transfer`` then works on the device:
    uint8 -> float in [0, 1]; in training, random crop (4 px zero padding, black) and
    horizontal flip (not for digits) if ``augment``, then CutMix / Mixup with
    probability ``mix_prob`` if ``mix``; finally per-channel normalisation with
    ``mean``/``std``. Validation, test and predict batches are only normalised.

    Targets: int64 ``[B]``; with ``mix`` set, every training batch carries float soft
    targets ``[B, num_classes]`` (one-hot when the batch was not mixed).

    The validation split is the official CIFAR *test* split (10,000 images): the
    research plan's "Val Accuracy" is accuracy on it. Digits: 1,437 train / 360 val.

    Distributed training: the train loader is a plain ``DataLoader(shuffle=True)``
    (a ``BatchSampler`` over a ``RandomSampler``), so Lightning's
    ``use_distributed_sampler`` swaps in a ``DistributedSampler`` and each rank gets a
    disjoint shard. Augmentation streams differ per rank (seeded by ``seed``, global
    rank and the step count).

    Args:
        dataset: ``"cifar10"``, ``"cifar100"`` or ``"digits"``.
        data_dir: root holding ``cifar-10-batches-py`` / ``cifar-100-python``.
        batch_size: training batch size per process.
        val_batch_size: evaluation batch size (default ``batch_size``).
        augment: random crop + flip in training.
        mix: ``None``, ``"cutmix"`` or ``"mixup"``; ``mix_alpha`` defaults to 1.0 / 0.2.
        mix_prob: probability that a training batch is mixed.
        seed: seeds the shuffling, the augmentation stream and ``train_subset``.
        drop_last: drop the last partial training batch (static shapes).
        pin_memory: default: when CUDA is available.
        train_subset: keep a fixed seeded subset of this many training images.
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        data_dir: str | Path = "data",
        batch_size: int = 128,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        augment: bool = True,
        mix: str | None = None,
        mix_alpha: float | None = None,
        mix_prob: float = 1.0,
        seed: int = 0,
        drop_last: bool = True,
        pin_memory: bool | None = None,
        train_subset: int | None = None,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
        if mix is not None and mix not in MIXES:
            raise ValueError(f"unknown mix {mix!r}; valid: None, {', '.join(MIXES)}")
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob}")
        self.save_hyperparameters()
        self.info = DATASETS[dataset]
        self.dataset, self.data_dir = dataset, data_dir
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.augment, self.seed = num_workers, augment, seed
        self.mix, self.mix_prob = mix, mix_prob
        self.mix_alpha = mix_alpha if mix_alpha is not None or mix is None else MIXES[mix][1]
        self.drop_last, self.train_subset = drop_last, train_subset
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_images = self.train_labels = self.val_images = self.val_labels = None
        self._generators: dict[str, torch.Generator] = {}
        self._aug_step = 0  # training batches augmented so far: the stream's state
        # Shuffling order of the single-process train loader; its state is checkpointed, so a
        # resumed run continues the epoch order (Lightning re-seeds a DistributedSampler itself).
        self._shuffle_generator = torch.Generator().manual_seed(seed)

    # -- dataset facts ---------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.info.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.info.std

    @property
    def image_size(self) -> int:
        return self.info.image_size

    @property
    def hflip(self) -> bool:
        return self.info.hflip

    @property
    def num_train(self) -> int:
        if self.train_labels is not None:
            return len(self.train_labels)
        return min(self.info.num_train, self.train_subset or self.info.num_train)

    @property
    def num_val(self) -> int:
        return len(self.val_labels) if self.val_labels is not None else self.info.num_val

    # -- data ------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download CIFAR into ``data_dir`` if its files are missing (nothing for digits)."""
        if self.dataset != "digits":
            download_cifar(self.dataset, self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        """Load both splits once as uint8 ``[N, 3, 32, 32]`` / int64 ``[N]`` tensors."""
        if self.train_labels is not None:
            return
        if self.dataset == "digits":
            tr_x, tr_y, va_x, va_y = load_digits_split(seed=0)
        else:
            tr_x, tr_y = load_cifar(self.dataset, self.data_dir, train=True)
            va_x, va_y = load_cifar(self.dataset, self.data_dir, train=False)
        keep = _fixed_indices(len(tr_y), self.train_subset, self.seed)
        self.train_images, self.train_labels = tr_x[keep].contiguous(), tr_y[keep].contiguous()
        self.val_images, self.val_labels = va_x, va_y

    def _loader(self, images: Tensor, labels: Tensor, train: bool) -> DataLoader:
        return DataLoader(
            TensorBatchDataset(images, labels),
            batch_size=self.batch_size if train else self.val_batch_size,
            shuffle=train,
            drop_last=self.drop_last if train else False,
            generator=self._shuffle_generator if train else None,
            collate_fn=collate_batch,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_images, self.train_labels, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_images, self.val_labels, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def fixed_subset(self, split: str, num_images: int | None, seed: int = 0) -> tuple[Tensor, Tensor]:
        """A fixed, seeded subset of ``split`` ("train" or "val"), for analytics.

        Returns:
            uint8 images ``[n, 3, 32, 32]`` and int64 labels ``[n]``, n = min(num_images, N),
            in dataset order; the same (split, num_images, seed) always gives the same images.
        """
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.setup()
        images, labels = (
            (self.train_images, self.train_labels) if split == "train" else (self.val_images, self.val_labels)
        )
        idx = _fixed_indices(len(labels), num_images, seed)
        return images[idx], labels[idx]

    # -- on-device transforms --------------------------------------------------------
    def normalize_images(self, images: Tensor) -> Tensor:
        """uint8 (0..255) or float (0..1) ``[B, 3, H, W]`` -> normalised float32, same device."""
        return normalize(images, self.mean, self.std)

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device)
        return self._generators[key]

    def augment_batch(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Training transform of one batch on its device, advancing the augmentation stream.

        Args:
            images: uint8 ``[B, 3, H, W]`` (or float in [0, 1]).
            labels: int64 ``[B]``.

        Returns:
            normalised float32 images ``[B, 3, H, W]``; int64 labels ``[B]``, or float
            soft targets ``[B, num_classes]`` when ``mix`` is set.
        """
        rank = self.trainer.global_rank if self.trainer is not None else 0
        gen = self._generator(images.device)
        gen.manual_seed(_stream_seed(self.seed, rank, self._aug_step))
        self._aug_step += 1
        x = images
        if self.augment:
            x = random_crop(x, CROP_PADDING, generator=gen)
            if self.hflip:
                x = random_hflip(x, generator=gen)
        if not x.is_floating_point():
            x = x.float().div_(255.0)
        y = labels
        if self.mix is not None:
            apply: Tensor | bool = True
            if self.mix_prob < 1.0:
                apply = torch.rand((), device=x.device, generator=gen) < self.mix_prob
            x, y = MIXES[self.mix][0](x, y, self.num_classes, self.mix_alpha, generator=gen, apply=apply)
        return self.normalize_images(x), y

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            return self.augment_batch(images, labels)
        return self.normalize_images(images), labels

    # -- checkpointing ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The augmentation stream's position and the shuffling generator's state; a resumed
        run continues both (Lightning restores them before it creates the train iterator)."""
        return {"aug_step": self._aug_step, "shuffle_rng": self._shuffle_generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._aug_step = int(state_dict.get("aug_step", 0))
        if "shuffle_rng" in state_dict:
            self._shuffle_generator.set_state(state_dict["shuffle_rng"])
