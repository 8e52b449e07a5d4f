"""The held-out validation split: disjoint from train, stratified, fixed by ``split_seed``
alone; the official test split only for testing; argument validation at the boundary."""

import warnings

import numpy as np
import pytest
import torch
from cifar_fixtures import fake_split, write_cifar10

from kdbias.data import CIFARDataModule, load_digits_split
from kdbias.data.sampling import stratified_indices as _stratified_indices

PER_CLASS = 10  # training images per class in the CIFAR fixture: 100 in all


def rows(images):
    """Each image's bytes, as a list (uint8 [N, 3, 32, 32] -> N bytes objects)."""
    return [bytes(r) for r in images.flatten(1).numpy()]


@pytest.fixture
def cifar10(tmp_path):
    """5 training batches of 20 images (10 per class over all of them), a 30-image test batch."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(10), PER_CLASS))
    images = rng.integers(0, 256, (100, 3, 32, 32), dtype=np.uint8)
    assert len(set(rows(torch.from_numpy(images)))) == 100  # all distinct
    train = [(images[i : i + 20], labels[i : i + 20]) for i in range(0, 100, 20)]
    test = fake_split(rng, 30, 10)
    write_cifar10(tmp_path, train, test)
    return tmp_path, images, labels, test


def setup_dm(root, **kwargs):
    dm = CIFARDataModule("cifar10", data_dir=root, batch_size=8, **kwargs, verify_md5=False)
    dm.setup("fit")
    return dm


def test_cifar_holdout_disjoint_stratified_and_complete(cifar10):
    root, images, labels, (test_x, test_y) = cifar10
    dm = setup_dm(root, holdout=20)
    assert (dm.num_train, dm.num_val, dm.num_test, dm.has_validation) == (80, 20, 30, True)
    assert dm.val_images.dtype == torch.uint8 and dm.val_images.shape == (20, 3, 32, 32)
    # By image bytes: disjoint, and together exactly the 100 training images.
    train_rows, val_rows = rows(dm.train_images), rows(dm.val_images)
    assert not set(train_rows) & set(val_rows)
    assert sorted(train_rows + val_rows) == sorted(rows(torch.from_numpy(images)))
    # By index bookkeeping: the same, and images/labels match the official split.
    assert sorted(dm.train_indices.tolist() + dm.val_indices.tolist()) == list(range(100))
    np.testing.assert_array_equal(dm.val_images.numpy(), images[dm.val_indices.numpy()])
    np.testing.assert_array_equal(dm.val_labels.numpy(), labels[dm.val_indices.numpy()])
    np.testing.assert_array_equal(dm.train_labels.numpy(), labels[dm.train_indices.numpy()])
    # Stratified: 20 of 100 with 10 per class -> exactly 2 per class.
    assert np.bincount(dm.val_labels.numpy(), minlength=10).tolist() == [2] * 10
    # The test loader yields the official test images, in order.
    test = list(dm.test_dataloader())
    np.testing.assert_array_equal(torch.cat([x for x, _ in test]).numpy(), test_x)
    np.testing.assert_array_equal(torch.cat([y for _, y in test]).numpy(), test_y)
    val = list(dm.val_dataloader())
    assert [len(y) for _, y in val] == [8, 8, 4] and torch.equal(torch.cat([x for x, _ in val]), dm.val_images)


def test_holdout_depends_on_split_seed_only(cifar10):
    root = cifar10[0]
    a, b = setup_dm(root, holdout=20, seed=0), setup_dm(root, holdout=20, seed=7, train_subset=50)
    assert torch.equal(a.val_indices, b.val_indices) and torch.equal(a.val_images, b.val_images)
    c = setup_dm(root, holdout=20, seed=0, split_seed=1)
    assert not torch.equal(a.val_indices, c.val_indices)
    assert np.bincount(c.val_labels.numpy(), minlength=10).tolist() == [2] * 10
    # train_subset: a seeded subset of the 80 remaining images, never a held-out one.
    assert b.num_train == 50 and set(b.train_indices.tolist()) <= set(a.train_indices.tolist())


def test_holdout_too_large_is_clear_error(cifar10):
    root = cifar10[0]
    for holdout in (None, 100, 250):  # None: the CIFAR default of 5,000
        dm = CIFARDataModule("cifar10", data_dir=root, holdout=holdout, verify_md5=False)
        with pytest.raises(ValueError, match=r"holdout=\d+ must be smaller than the number of training images \(100"):
            dm.setup("fit")
    assert setup_dm(root, holdout=99).num_train == 1


def test_holdout_zero(cifar10):
    root, images, _, (test_x, _) = cifar10
    dm = setup_dm(root, holdout=0)
    assert not dm.has_validation and dm.num_val == 0 and dm.num_train == 100
    assert dm.val_dataloader() == []
    np.testing.assert_array_equal(dm.train_images.numpy(), images)
    with pytest.warns(UserWarning, match="holdout=0.*test split"):
        x, y = dm.fixed_subset("val", 12, seed=5)
    tx, ty = dm.fixed_subset("test", 12, seed=5)
    assert torch.equal(x, tx) and torch.equal(y, ty)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        dm.fixed_subset("val", 12, seed=5)
    np.testing.assert_array_equal(dm.fixed_subset("test", None)[0].numpy(), test_x)


def test_digits_default_holdout():
    dm = CIFARDataModule("digits", seed=3)
    assert (dm.num_train, dm.num_val, dm.num_test) == (1293, 144, 360)  # before setup
    dm.setup()
    assert (dm.num_train, dm.num_val, dm.num_test) == (1293, 144, 360)
    tr_x, tr_y, te_x, te_y = load_digits_split(seed=0)
    assert sorted(dm.train_indices.tolist() + dm.val_indices.tolist()) == list(range(1437))
    assert torch.equal(dm.val_images, tr_x[dm.val_indices]) and torch.equal(dm.train_images, tr_x[dm.train_indices])
    assert torch.equal(dm.test_images, te_x) and torch.equal(dm.test_labels, te_y)
    counts = np.bincount(tr_y.numpy(), minlength=10)
    held = np.bincount(dm.val_labels.numpy(), minlength=10)
    assert held.sum() == 144 and np.all(np.abs(held - counts * 144 / 1437) < 1)
    other_seed = CIFARDataModule("digits", seed=4)
    other_seed.setup()
    assert torch.equal(other_seed.val_indices, dm.val_indices)
    other_split = CIFARDataModule("digits", split_seed=1)
    other_split.setup()
    assert not torch.equal(other_split.val_indices, dm.val_indices)
    full = CIFARDataModule("digits", holdout=0)
    full.setup()
    assert full.num_train == 1437 and torch.equal(full.train_images, tr_x)


@pytest.mark.parametrize("k", [0, 1, 7, 50, 99, 149])
def test_stratified_indices_exact_total_and_within_one(k):
    labels = torch.tensor([0] * 90 + [1] * 45 + [2] * 10 + [3] * 4 + [5] * 1)  # class 4 absent
    idx = _stratified_indices(labels, k, seed=0)
    assert len(idx) == k and len(set(idx.tolist())) == k and torch.equal(idx, idx.sort().values)
    counts = torch.bincount(labels, minlength=6).double()
    held = torch.bincount(labels[idx], minlength=6).double()
    assert torch.all((held - counts * k / len(labels)).abs() < 1)
    assert torch.equal(idx, _stratified_indices(labels, k, seed=0))
    with pytest.raises(ValueError):
        _stratified_indices(labels, len(labels) + 1, seed=0)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an int >= 1"),
        ({"val_batch_size": 0}, "val_batch_size must be None or an int >= 1"),
        ({"num_workers": -1}, "num_workers must be an int >= 0"),
        ({"holdout": -1}, r"holdout must be None \(default 5000\) or an int in \[0, 50000\)"),
        ({"holdout": 50_000}, r"holdout must be None .* in \[0, 50000\)"),
        ({"holdout": 1.5}, "holdout must be None"),
        ({"train_subset": 0}, "train_subset must be None or an int >= 1"),
        ({"mix": "mixup", "mix_alpha": 0.0}, "mix_alpha must be None or a finite number > 0"),
        ({"mix": "cutmix", "mix_alpha": -1.0}, "mix_alpha must be None or a finite number > 0"),
        ({"mix_alpha": float("nan")}, "mix_alpha"),
        ({"mix_prob": 1.5}, r"mix_prob must be in \[0, 1\]"),
        ({"mix_prob": float("nan")}, "mix_prob"),
        ({"split_seed": "0"}, "split_seed must be an int"),
    ],
)
def test_argument_validation(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        CIFARDataModule("cifar10", **kwargs)


def test_digits_holdout_range():
    with pytest.raises(ValueError, match=r"\[0, 1437\)"):
        CIFARDataModule("digits", holdout=1437)
    assert CIFARDataModule("digits", holdout=1436).num_train == 1
