import numpy as np
import pytest
import torch

from kdbias.analytics.knn import knn_accuracy


def _np_knn(train, train_labels, test, test_labels, k, t, c):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    correct = 0
    for q, label in zip(test, test_labels):
        sims = train @ q
        top = np.argsort(-sims)[:k]
        votes = np.zeros(c)
        for idx in top:
            votes[train_labels[idx]] += np.exp(sims[idx] / t)
        correct += int(np.argmax(votes) == label)
    return correct / len(test)


def _clusters(seed, n_per, c=4, d=16, spread=0.05):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g) * 5
    labels = torch.arange(c).repeat_interleave(n_per)
    return centres[labels] + spread * torch.randn(len(labels), d, generator=g), labels


def test_perfect_on_separated_clusters():
    xtr, ytr = _clusters(0, 30)
    g = torch.Generator().manual_seed(1)
    xte = xtr[::3] + 0.01 * torch.randn(40, 16, generator=g)
    assert knn_accuracy(xtr, ytr, xte, ytr[::3]) == 1.0


def test_near_chance_on_shuffled_labels():
    g = torch.Generator().manual_seed(2)
    c = 5
    xtr, xte = torch.randn(1000, 32, generator=g), torch.randn(1000, 32, generator=g)
    ytr, yte = torch.randint(0, c, (1000,), generator=g), torch.randint(0, c, (1000,), generator=g)
    assert abs(knn_accuracy(xtr, ytr, xte, yte, k=20) - 1 / c) < 0.1


@pytest.mark.parametrize(("k", "chunk"), [(1, 7), (10, 3), (20, 1000)])
def test_matches_brute_force_numpy(k, chunk):
    rng = np.random.default_rng(k)
    c = 6
    xtr, xte = rng.normal(size=(120, 8)), rng.normal(size=(50, 8))
    ytr, yte = rng.integers(0, c, 120), rng.integers(0, c, 50)
    # Labels correlated with the first feature so that accuracy is not trivial.
    ytr[xtr[:, 0] > 1] = 0
    yte[xte[:, 0] > 1] = 0
    ref = _np_knn(xtr, ytr, xte, yte, k, 0.07, c)
    out = knn_accuracy(
        torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), torch.tensor(yte), k=k, chunk_size=chunk, num_classes=c
    )
    assert out == pytest.approx(ref)


def test_k_clamped_to_train_size_and_trailing_dims_flattened():
    rng = np.random.default_rng(3)
    xtr, xte = rng.normal(size=(5, 2, 3)), rng.normal(size=(9, 2, 3))
    ytr, yte = rng.integers(0, 3, 5), rng.integers(0, 3, 9)
    ref = _np_knn(xtr.reshape(5, 6), ytr, xte.reshape(9, 6), yte, 5, 0.07, 3)
    assert knn_accuracy(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), torch.tensor(yte), k=50) == ref


def test_k_clamped_uses_every_training_example():
    # Query e0; class 1 is nearest (cos 1), two class-0 points follow (cos 0.9, 0.8).
    # With all 3 neighbours and T = 1, class 0 wins: e^0.9 + e^0.8 = 4.69 > e^1 = 2.72.
    def unit(cos):
        return [cos, float(np.sqrt(1 - cos**2))]

    train = torch.tensor([unit(1.0), unit(0.9), unit(0.8)])
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([unit(1.0)])
    assert knn_accuracy(train, labels, query, torch.tensor([0]), k=100, temperature=1.0) == 1.0
    assert knn_accuracy(train, labels, query, torch.tensor([1]), k=2, temperature=1.0) == 1.0
