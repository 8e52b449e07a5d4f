"""``CIFARDataModule``: CIFAR-10 / CIFAR-100 / digits held as uint8 tensors, augmented
on the device after transfer."""

from __future__ import annotations

import math
import numbers
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from kdbias.data.augment import cutmix, mixup, normalize, random_crop_flip
from kdbias.data.cifar import download_cifar, load_cifar
from kdbias.data.datasets import DATASETS, load_digits_split
from kdbias.data.sampling import TensorBatchDataset, collate_batch, fixed_indices, stratified_indices, stream_seed
from kdbias.schema import Mix

__all__ = ["CIFARDataModule", "TensorBatchDataset"]

#: name -> (function, default alpha); the names are the summary schema's ``Mix`` values.
MIX_FUNCTIONS: dict[Mix, tuple[Any, float]] = {"cutmix": (cutmix, 1.0), "mixup": (mixup, 0.2)}
CROP_PADDING = 4


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


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

    Three disjoint splits:

    * **train**: the official training split minus the held-out images (then
      ``train_subset``, if set): ``train_dataloader()``.
    * **val** (held out): ``holdout`` images of the official training split, a
      class-stratified selection seeded by ``split_seed`` alone, so every experiment and
      every training ``seed`` holds out the same images: ``val_dataloader()``. Model
      selection (the best checkpoint by ``val/acc``, early stopping) uses this split only.
    * **test**: the official test split (CIFAR: 10,000 images; digits: the fixed 360):
      ``test_dataloader()`` / ``predict_dataloader()``. The report's accuracy is measured
      on it, and it never takes part in selection.

    Default sizes: CIFAR-10/100 45,000 train / 5,000 val / 10,000 test; digits
    1,293 / 144 / 360. ``holdout=0`` trains on all training images and has no
    validation split (``has_validation`` False, ``val_dataloader()`` returns ``[]``).

    Distributed training: the train loader is a plain ``DataLoader(shuffle=True)``
    (a ``BatchSampler`` over a ``RandomSampler``), so Lightning's
    ``use_distributed_sampler`` swaps in a ``DistributedSampler`` and each rank gets a
    disjoint shard. Augmentation streams differ per rank (seeded by ``seed``, global
    rank and the step count).

    Args:
        dataset: ``"cifar10"``, ``"cifar100"`` or ``"digits"``.
        data_dir: root holding ``cifar-10-batches-py`` / ``cifar-100-python``.
        batch_size: training batch size per process, >= 1.
        val_batch_size: evaluation (val / test / predict) batch size, >= 1 (default
            ``batch_size``).
        num_workers: kept for configuration compatibility, >= 0; the loaders always run in
            the main process, since a batch of the in-memory uint8 tensors is one indexing op
            (measured: worker processes only add the inter-process transfer and slow it down).
        augment: random crop + flip in training.
        mix: ``None``, ``"cutmix"`` or ``"mixup"``.
        mix_alpha: Beta(alpha, alpha) parameter of the mix, > 0; default 1.0 (CutMix) /
            0.2 (Mixup).
        mix_prob: probability in [0, 1] that a training batch is mixed.
        seed: seeds the shuffling, the augmentation stream and ``train_subset``; not the
            held-out split.
        drop_last: drop the last partial training batch (static shapes).
        pin_memory: default: when CUDA is available.
        train_subset: keep a fixed seeded subset of this many (>= 1) of the training images
            left after the held-out split.
        holdout: number of training images held out as the validation split,
            ``0 <= holdout < num_train`` of the official training split; ``None``: the
            dataset default (5,000 for CIFAR-10/100, 144 for digits); ``0``: no
            validation split.
        split_seed: seed of the held-out selection, independent of ``seed``.
        verify_md5: check each CIFAR batch file's image count and torchvision's published
            MD5; ``False`` accepts a deliberately modified copy (its format is still checked).
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
        holdout: int | None = None,
        split_seed: int = 0,
        verify_md5: bool = True,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
        if mix is not None and mix not in MIX_FUNCTIONS:
            raise ValueError(f"unknown mix {mix!r}; valid: None, {', '.join(MIX_FUNCTIONS)}")
        info = DATASETS[dataset]
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if val_batch_size is not None and (not _is_int(val_batch_size) or val_batch_size < 1):
            raise ValueError(f"val_batch_size must be None or an int >= 1, got {val_batch_size!r}")
        if not _is_int(num_workers) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if holdout is not None and (not _is_int(holdout) or not 0 <= holdout < info.num_train):
            raise ValueError(
                f"holdout must be None (default {info.num_holdout}) or an int in [0, {info.num_train}) "
                f"(the {dataset} training images), got {holdout!r}"
            )
        if not _is_int(split_seed):
            raise ValueError(f"split_seed must be an int, got {split_seed!r}")
        if train_subset is not None and (not _is_int(train_subset) or train_subset < 1):
            raise ValueError(f"train_subset must be None or an int >= 1, got {train_subset!r}")
        if mix_alpha is not None and not (
            isinstance(mix_alpha, numbers.Real) and math.isfinite(mix_alpha) and mix_alpha > 0
        ):
            raise ValueError(f"mix_alpha must be None or a finite number > 0, got {mix_alpha!r}")
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob}")
        self.save_hyperparameters()
        self.info = info
        self.dataset, self.data_dir = dataset, data_dir
        self.batch_size = batch_size
        self.val_batch_size = batch_size if val_batch_size is None else val_batch_size
        self.num_workers, self.augment, self.seed = num_workers, augment, seed
        self.mix, self.mix_prob = mix, mix_prob
        self.mix_alpha = mix_alpha if mix_alpha is not None or mix is None else MIX_FUNCTIONS[mix][1]
        self.drop_last, self.train_subset = drop_last, train_subset
        self.holdout: int = info.num_holdout if holdout is None else int(holdout)  # resolved size
        self.split_seed = int(split_seed)
        self.verify_md5 = bool(verify_md5)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        # Set by setup(): uint8 [N, 3, 32, 32] images, int64 [N] labels per split, and the
        # int64 indices of the train / val images into the official training split.
        self.train_images = self.train_labels = self.val_images = self.val_labels = None
        self.test_images = self.test_labels = None
        self.train_indices = self.val_indices = None
        self._warned_val_fallback = False
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
        """Training images (after the held-out split and ``train_subset``); before
        ``setup()``, the count expected for the official files."""
        if self.train_labels is not None:
            return len(self.train_labels)
        remaining = self.info.num_train - self.holdout
        return min(remaining, self.train_subset or remaining)

    @property
    def num_val(self) -> int:
        """Held-out validation images (``holdout``; 0 without a validation split)."""
        return len(self.val_labels) if self.val_labels is not None else self.holdout

    @property
    def num_test(self) -> int:
        """Images of the official test split (CIFAR 10,000; digits 360)."""
        return len(self.test_labels) if self.test_labels is not None else self.info.num_test

    @property
    def has_validation(self) -> bool:
        """Whether there is a held-out validation split (``holdout > 0``)."""
        return self.holdout > 0

    # -- data ------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download CIFAR into ``data_dir`` if its files are missing (nothing for digits)."""
        if self.dataset != "digits":
            download_cifar(self.dataset, self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        """Load the three splits once as uint8 ``[N, 3, 32, 32]`` / int64 ``[N]`` tensors.

        The held-out split (``val_indices``) is drawn from the official training split
        first; ``train_subset`` then picks from the remaining images (``train_indices``).

        Raises:
            ValueError: ``holdout`` is not smaller than the number of training images on disk.
        """
        if self.train_labels is not None:
            return
        if self.dataset == "digits":
            tr_x, tr_y, te_x, te_y = load_digits_split(seed=0)
        else:
            tr_x, tr_y = load_cifar(self.dataset, self.data_dir, train=True, verify_md5=self.verify_md5)
            te_x, te_y = load_cifar(self.dataset, self.data_dir, train=False, verify_md5=self.verify_md5)
        if self.holdout >= len(tr_y):
            raise ValueError(
                f"holdout={self.holdout} must be smaller than the number of training images "
                f"({len(tr_y)} in the {self.dataset} training split); pass holdout in [0, {len(tr_y)})"
            )
        val_idx = stratified_indices(tr_y, self.holdout, self.split_seed)
        rest = torch.ones(len(tr_y), dtype=torch.bool)
        rest[val_idx] = False
        rest_idx = rest.nonzero().flatten()
        train_idx = rest_idx[fixed_indices(len(rest_idx), self.train_subset, self.seed)]
        self.train_indices, self.val_indices = train_idx, val_idx
        self.train_images, self.train_labels = tr_x[train_idx].contiguous(), tr_y[train_idx].contiguous()
        self.val_images, self.val_labels = tr_x[val_idx].contiguous(), tr_y[val_idx].contiguous()
        self.test_images, self.test_labels = te_x, te_y

    def _loader(self, images: Tensor, labels: Tensor, train: bool) -> DataLoader:
        return DataLoader(
            TensorBatchDataset(images, labels),
            batch_size=self.batch_size if train else self.val_batch_size,
            shuffle=train,
            drop_last=self.drop_last if train else False,
            generator=self._shuffle_generator if train else None,
            collate_fn=collate_batch,
            num_workers=0,  # in-memory batches: one indexing op each; a worker would only add a transfer
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_images, self.train_labels, train=True)

    def val_dataloader(self) -> DataLoader | list:
        """The held-out validation split, in order; ``[]`` when ``holdout == 0``."""
        self.setup("validate")
        if not self.has_validation:
            return []
        return self._loader(self.val_images, self.val_labels, train=False)

    def test_dataloader(self) -> DataLoader:
        """The official test split, in order."""
        self.setup("test")
        return self._loader(self.test_images, self.test_labels, train=False)

    def predict_dataloader(self) -> DataLoader:
        """The official test split, in order."""
        self.setup("predict")
        return self._loader(self.test_images, self.test_labels, train=False)

    def fixed_subset(self, split: str, num_images: int | None, seed: int = 0) -> tuple[Tensor, Tensor]:
        """A fixed, seeded subset of ``split`` ("train", "val" or "test"), for analytics.

        "val" is the held-out split; without one (``holdout == 0``) it falls back to the
        test split, with a warning (once): analytics only measure, they never select.

        Returns:
            uint8 images ``[n, 3, 32, 32]`` and int64 labels ``[n]``, n = min(num_images, N),
            in dataset order; the same (split, num_images, seed) always gives the same images.
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.setup()
        if split == "val" and not self.has_validation:
            if not self._warned_val_fallback:
                warnings.warn(
                    "fixed_subset('val'): holdout=0, so there is no held-out validation split; "
                    "using the official test split instead (for analytics only, never for selection)",
                    stacklevel=2,
                )
                self._warned_val_fallback = True
            split = "test"
        images, labels = {
            "train": (self.train_images, self.train_labels),
            "val": (self.val_images, self.val_labels),
            "test": (self.test_images, self.test_labels),
        }[split]
        idx = fixed_indices(len(labels), num_images, seed)
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
        gen.manual_seed(stream_seed(self.seed, rank, self._aug_step))
        self._aug_step += 1
        x = images
        if self.augment:
            x = random_crop_flip(x, CROP_PADDING, flip_p=0.5 if self.hflip else 0.0, generator=gen)
        if not x.is_floating_point():
            x = x.float().div_(255.0)
        y = labels
        if self.mix is not None:
            apply: Tensor | bool = True
            if self.mix_prob < 1.0:
                apply = torch.rand((), device=x.device, generator=gen) < self.mix_prob
            x, y = MIX_FUNCTIONS[self.mix][0](x, y, self.num_classes, self.mix_alpha, generator=gen, apply=apply)
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
