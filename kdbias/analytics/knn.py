"""Weighted cosine k-nearest-neighbour accuracy of frozen features (as in DINO, Caron et al. 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["knn_accuracy"]


@torch.no_grad()
def knn_accuracy(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 256,
) -> float:
    """Fraction of test examples whose weighted k-NN vote picks the right class.

    Features are flattened to ``[n, D]`` and L2-normalised; for each test example the
    ``k`` training examples with the highest cosine similarity ``s`` vote for their
    labels with weight ``exp(s / temperature)``; the class with the largest summed
    weight wins (ties: the lowest class index).

    Args:
        train_feats: ``[n_train, ...]`` features; train_labels: ``[n_train]`` int labels.
        test_feats: ``[n_test, ...]`` features; test_labels: ``[n_test]`` int labels.
        k: neighbours; clamped to ``n_train``.
        temperature: softmax-style temperature of the vote weights.
        num_classes: defaults to ``1 + max label`` seen in either split.
        chunk_size: test examples scored at once; memory is ``O(chunk_size * n_train)``.

    Computed in float32 on ``train_feats``' device. Returns a Python float in ``[0, 1]``.
    """
    if train_feats.shape[0] != train_labels.shape[0] or test_feats.shape[0] != test_labels.shape[0]:
        raise ValueError("features and labels must have the same number of examples")
    if train_feats.shape[0] == 0 or test_feats.shape[0] == 0:
        raise ValueError("knn_accuracy needs at least one training and one test example")
    if k < 1 or chunk_size < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1, chunk_size >= 1, temperature > 0; got {k}, {chunk_size}, {temperature}")
    device = train_feats.device
    train = F.normalize(train_feats.flatten(1).float(), dim=1)
    test = F.normalize(test_feats.flatten(1).float().to(device), dim=1)
    train_labels = train_labels.long().to(device)
    test_labels = test_labels.long().to(device)
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, train.shape[0])
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in range(0, test.shape[0], chunk_size):
        sim = test[start : start + chunk_size] @ train.T  # [c, n_train]
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], num_classes, device=device)
        votes.scatter_add_(1, train_labels[top_idx], (top_sim / temperature).exp())
        correct += (votes.argmax(dim=1) == test_labels[start : start + chunk_size]).sum()
    return correct.item() / test.shape[0]
