"""Batches and seeded subsets of in-memory uint8 datasets (used by :class:`~kdbias.data.CIFARDataModule`)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["TensorBatchDataset", "collate_batch", "fixed_indices", "stratified_indices", "stream_seed"]


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


def stream_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the augmentation generator for one batch (SplitMix64 finaliser), so the
    stream depends only on (seed, rank, step) and resumes from a step count."""
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + rank * 0xD1B54A32D192ED03 + step * 0x8CB92BA72F3D8DD7) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) >> 1  # 63 bits: manual_seed takes a signed 64-bit value


def fixed_indices(n: int, k: int | None, seed: int) -> Tensor:
    """Sorted, seeded random subset of ``range(n)`` of size ``min(k, n)`` (all if None)."""
    if k is None or k >= n:
        return torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:k].sort().values


def stratified_indices(labels: Tensor, k: int, seed: int) -> Tensor:
    """Sorted indices of a class-stratified, seeded random subset of exactly ``k`` items.

    Each class gets its proportional share ``k * n_c / n`` rounded down, and the
    ``k - sum`` images still missing go to the classes with the largest remainders (ties:
    lower class id first), so every count is within 1 of proportional. Within a class the
    images are the first ``count`` of a seeded permutation (one generator, classes in
    ascending order): deterministic for a given (labels, k, seed).

    Args:
        labels: int64 ``[n]`` class ids.
        k: subset size, ``0 <= k <= n``.
        seed: seed of the selection.

    Returns:
        int64 ``[k]`` indices into ``labels``, ascending.
    """
    n = len(labels)
    if not 0 <= k <= n:
        raise ValueError(f"subset size must be in [0, {n}], got {k}")
    classes, counts = torch.unique(labels, sorted=True, return_counts=True)
    quota = counts * k  # exact integers: no float rounding decides a count
    take, remainder = quota // n, quota % n
    missing = k - int(take.sum())
    take[torch.sort(-remainder, stable=True).indices[:missing]] += 1
    gen = torch.Generator().manual_seed(seed)
    picked = [torch.empty(0, dtype=torch.int64)]
    for c, t in zip(classes.tolist(), take.tolist()):
        members = (labels == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=gen)[:t]])
    return torch.cat(picked).sort().values
