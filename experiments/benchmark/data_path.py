"""kdbias's data path vs torchvision's per-sample PIL pipeline, same images, same batch.

- kdbias: ``CIFARDataModule.train_dataloader()`` (uint8 tensors, one indexing op per batch)
  -> device -> ``augment_batch`` (batched crop 4 px, flip, normalise on the device);
- torchvision: a ``datasets.CIFAR10``-style dataset (HWC uint8 array -> PIL image per
  sample) with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize`` -> default collate -> device.

Measured at 0 workers and at the preset's worker count; within each, the two paths
alternate (A B, B A, ...) and the speed-up is the median of the per-repetition ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kdbias.data import CIFARDataModule

from .experiment import Plan
from .measure import median_ratio, sync


class PILDataset(Dataset):
    """torchvision-style dataset: HWC uint8 array -> PIL image -> transform, per sample."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable) -> None:
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def _images_per_s(
    loader: DataLoader, batches: int, step: Callable[[Tensor, Tensor], Any], device: torch.device
) -> float:
    """Images/s over ``batches`` batches after one untimed batch (worker start-up excluded)."""
    iterator = iter(loader)
    step(*next(iterator))
    sync(device)
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        images, labels = next(iterator)
        step(images, labels)
        count += len(labels)
    sync(device)
    return count / (time.perf_counter() - start)


def compare_at(workers: int, plan: Plan, images: Tensor, labels: Tensor) -> dict[str, Any]:
    from torchvision import transforms

    s, device = plan.sizes, plan.device
    batch = s["data_batch"]
    # CIFAR-10's transform (crop, flip, its statistics) on the given images: both paths do the same work.
    dm = CIFARDataModule("cifar10", plan.data_dir, batch_size=batch, num_workers=workers, augment=True)
    dm.train_images, dm.train_labels = images, labels
    dm.val_images, dm.val_labels = images[:batch], labels[:batch]
    tv = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(dm.mean, dm.std),
        ]
    )
    tv_loader = DataLoader(
        PILDataset(images, labels, tv),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=dm.pin_memory,
        persistent_workers=workers > 0,
    )
    kd_loader = dm.train_dataloader()

    def kd_step(x: Tensor, y: Tensor) -> None:
        dm.augment_batch(x.to(device, non_blocking=True), y.to(device, non_blocking=True))

    def tv_step(x: Tensor, y: Tensor) -> None:
        x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    kd, tvs = [], []
    for rep in range(s["data_reps"]):
        order = ("kd", "tv") if rep % 2 == 0 else ("tv", "kd")
        for side in order:
            if side == "kd":
                kd.append(_images_per_s(kd_loader, s["data_batches"], kd_step, device))
            else:
                tvs.append(_images_per_s(tv_loader, s["data_batches"], tv_step, device))
    del kd_loader, tv_loader
    return {
        "num_workers": workers,
        "kdbias_images_per_s": statistics.median(kd),
        "torchvision_images_per_s": statistics.median(tvs),
        "speedup": median_ratio(kd, tvs),
        "rep_speedups": [a / b for a, b in zip(kd, tvs)],
    }


def compare_data_paths(plan: Plan) -> dict[str, Any]:
    """Both paths at 0 workers and at the preset's worker count (capped by the CPU count)."""
    import os

    from .experiment import preset_config

    preset_workers = int((preset_config("baseline", "paper").get("data") or {}).get("num_workers", 0))
    default = min(preset_workers, plan.sizes["data_workers"], os.cpu_count() or 1)
    s = plan.sizes
    dm = CIFARDataModule(plan.dataset, plan.data_dir)
    dm.setup("fit")
    need = s["data_batch"] * (s["data_batches"] + 2) * 2
    reps = -(-need // len(dm.train_labels))
    images, labels = dm.train_images.repeat(reps, 1, 1, 1)[:need], dm.train_labels.repeat(reps)[:need]
    by_workers = {str(w): compare_at(w, plan, images, labels) for w in dict.fromkeys([0, default])}
    return {
        "batch_size": s["data_batch"],
        "batches_per_rep": s["data_batches"],
        "reps": s["data_reps"],
        "default_workers": default,
        "preset_workers": preset_workers,
        "device": str(plan.device),
        "speedup_at_default_workers": by_workers[str(default)]["speedup"],
        "by_workers": by_workers,
        "kdbias_path": "uint8 TensorBatchDataset -> device -> CIFARDataModule.augment_batch "
        "(crop 4 px, flip, normalise)",
        "torchvision_path": "PIL per sample: RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize "
        "-> default collate -> device",
        "dataset": plan.dataset,
    }
