"""CIFARDataModule on the digits data: storage, loaders, on-device transforms, Lightning."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.trainer.states import RunningStage
from sklearn.datasets import load_digits

from kdbias.data import DATASETS, CIFARDataModule, dataset_stats, load_digits_split


@pytest.fixture(scope="module")
def digits():
    dm = CIFARDataModule("digits", batch_size=64, seed=0)
    dm.setup("fit")
    return dm


def bilinear_reference(img8):
    """Half-pixel-centre bilinear 8x8 -> 32x32 upsampling with edge clamping (numpy)."""
    src = np.clip((np.arange(32) + 0.5) * 8 / 32 - 0.5, 0, None)
    i0 = np.floor(src).astype(int)
    i1, f = np.minimum(i0 + 1, 7), src - i0
    rows = img8[i0] * (1 - f)[:, None] + img8[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def test_digits_storage(digits):
    assert digits.train_images.shape == (1293, 3, 32, 32) and digits.val_images.shape == (144, 3, 32, 32)
    assert digits.test_images.shape == (360, 3, 32, 32) and digits.test_labels.dtype == torch.int64
    assert digits.train_images.dtype == torch.uint8 and digits.train_labels.dtype == torch.int64
    assert digits.val_images.dtype == torch.uint8 and digits.val_labels.dtype == torch.int64
    assert (digits.num_train, digits.num_val, digits.num_test, digits.has_validation) == (1293, 144, 360, True)
    assert set(digits.train_labels.tolist()) == set(range(10))
    assert torch.equal(digits.train_images[:, 0], digits.train_images[:, 2])  # grey: 3 equal channels
    assert int(digits.train_images.max()) == 255 and int(digits.train_images.min()) == 0
    assert (digits.num_classes, digits.image_size, digits.hflip) == (10, 32, False)


def test_digits_split_fixed_stratified_and_upsampled():
    a, b = load_digits_split(seed=0), load_digits_split(seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    data = load_digits()
    counts = np.bincount(data.target)
    val_counts = np.bincount(a[3].numpy(), minlength=10)
    assert np.all(np.abs(val_counts - 0.2 * counts) <= 1)  # stratified 80/20
    # Every image is its source digit, upsampled: match each one back by its labels.
    ref = np.stack([bilinear_reference(d.reshape(8, 8) / 16.0) * 255 for d in data.data])
    ref = np.clip(np.round(ref), 0, 255)
    allx = torch.cat([a[0], a[2]])[:, 0].numpy().astype(np.float64)
    ally = np.concatenate([a[1].numpy(), a[3].numpy()])
    a, r = allx.reshape(len(allx), -1), ref.reshape(len(ref), -1)
    dist = (a**2).sum(1)[:, None] + (r**2).sum(1)[None] - 2 * a @ r.T
    nearest = dist.argmin(1)
    assert np.abs(allx - ref[nearest]).max() <= 1  # equal up to rounding
    assert sorted(nearest.tolist()) == list(range(1797))  # a partition of the 1,797 images
    np.testing.assert_array_equal(data.target[nearest], ally)


def test_hard_coded_digits_stats(digits):
    # Over the full official training split (held-out images included), as CIFAR's constants.
    full = torch.cat([digits.train_images, digits.val_images])
    assert len(full) == 1437
    x = full.double() / 255
    mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3), correction=0)
    np.testing.assert_allclose(digits.mean, mean.numpy(), atol=6e-5)
    np.testing.assert_allclose(digits.std, std.numpy(), atol=6e-5)
    z = digits.normalize_images(full)
    assert z.dtype == torch.float32
    np.testing.assert_allclose(z.double().mean((0, 2, 3)).numpy(), 0, atol=1e-3)
    np.testing.assert_allclose(z.double().std((0, 2, 3)).numpy(), 1, atol=1e-3)


def test_dataset_facts_and_validation():
    assert dataset_stats("cifar10") == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert dataset_stats("cifar100") == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    dm = CIFARDataModule("cifar100", mix="mixup")
    assert (dm.num_classes, dm.image_size, dm.hflip, dm.mix_alpha) == (100, 32, True, 0.2)
    assert dm.mean == DATASETS["cifar100"].mean
    assert (dm.num_train, dm.num_val, dm.num_test, dm.has_validation) == (45_000, 5_000, 10_000, True)
    assert CIFARDataModule("cifar10", mix="cutmix").mix_alpha == 1.0
    assert CIFARDataModule("cifar10", train_subset=500).num_train == 500
    assert CIFARDataModule("cifar10", holdout=0).num_train == 50_000
    assert CIFARDataModule("digits").num_train == 1293 and CIFARDataModule("digits", holdout=0).num_val == 0
    with pytest.raises(ValueError, match="cifar10, cifar100, digits"):
        CIFARDataModule("imagenet")
    with pytest.raises(ValueError, match="cutmix"):
        CIFARDataModule("digits", mix="cutout")
    with pytest.raises(ValueError, match="valid"):
        dataset_stats("svhn")


def test_train_val_and_test_loaders(digits):
    train = list(digits.train_dataloader())
    assert len(train) == 1293 // 64 and all(x.shape == (64, 3, 32, 32) and x.dtype == torch.uint8 for x, _ in train)
    seen = torch.cat([y for _, y in train])
    assert len(seen) == 1280  # drop_last, each image at most once
    # Shuffled, not in storage order.
    assert not torch.equal(train[0][1], digits.train_labels[:64])
    val = list(digits.val_dataloader())  # the held-out split, in order, last batch kept
    assert [len(y) for _, y in val] == [64, 64, 16]
    assert torch.equal(torch.cat([x for x, _ in val]), digits.val_images)
    assert torch.equal(torch.cat([y for _, y in val]), digits.val_labels)
    _, _, test_x, test_y = load_digits_split(seed=0)
    for loader in (digits.test_dataloader(), digits.predict_dataloader()):  # the official 360 test images
        test = list(loader)
        assert [len(y) for _, y in test] == [64] * 5 + [40]
        assert torch.equal(torch.cat([x for x, _ in test]), test_x)
        assert torch.equal(torch.cat([y for _, y in test]), test_y)


def test_train_batches_are_rows_of_the_training_tensor(digits):
    flat = digits.train_images.flatten(1)
    x, y = next(iter(digits.train_dataloader()))
    for img, label in zip(x.flatten(1), y):
        rows = (flat == img).all(1).nonzero().flatten()
        assert len(rows) >= 1 and label in digits.train_labels[rows]


def test_lightning_injects_distributed_sampler(digits, tmp_path):
    """Under DDP, Lightning swaps a DistributedSampler into the loader's BatchSampler."""
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_checkpointing=False,
    )
    loader = digits.train_dataloader()
    shards = []
    for rank in (0, 1):
        trainer.strategy.cluster_environment.set_global_rank(rank)
        assert trainer.distributed_sampler_kwargs == {"num_replicas": 2, "rank": rank}
        dl = trainer._data_connector._prepare_dataloader(loader, shuffle=True, mode=RunningStage.TRAINING)
        assert isinstance(dl.batch_sampler.sampler, torch.utils.data.DistributedSampler)
        batches = list(dl)
        assert len(batches) == 647 // 64 and all(x.shape == (64, 3, 32, 32) for x, _ in batches)
        shards.append(list(dl.batch_sampler.sampler))
    # 1293 is odd: DistributedSampler pads the permutation with one repeated index.
    assert len(set(shards[0]) & set(shards[1])) <= 1
    assert set(shards[0]) | set(shards[1]) == set(range(1293))


def test_validation_batches_are_only_normalised(digits):
    x, y = digits.val_images[:8], digits.val_labels[:8]
    out, labels = digits.on_after_batch_transfer((x, y), 0)  # no trainer: evaluation
    assert torch.equal(labels, y)
    torch.testing.assert_close(out, (x.float() / 255 - digits.mean[0]) / digits.std[0])


def unnormalise(dm, z):
    mean = torch.tensor(dm.mean).view(1, 3, 1, 1)
    std = torch.tensor(dm.std).view(1, 3, 1, 1)
    return (z * std + mean).mul(255).round().to(torch.uint8)


def shifts_and_flips(out, images):
    """Per image: the set of (dy, dx, mirrored) that reproduce ``out`` from ``images``."""
    h, w = images.shape[-2:]
    found = [set() for _ in images]
    for mirrored in (False, True):
        src = torch.flip(images, [-1]) if mirrored else images
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                ref = torch.zeros_like(src)
                ref[..., max(0, -dy) : min(h, h - dy), max(0, -dx) : min(w, w - dx)] = src[
                    ..., max(0, dy) : min(h, h + dy), max(0, dx) : min(w, w + dx)
                ]
                for i in torch.nonzero((ref == out).flatten(1).all(1)).flatten().tolist():
                    found[i].add((dy, dx, mirrored))
    return found


def test_augment_batch_crops_and_flips_on_cifar_not_on_digits():
    images = torch.randint(1, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(48, dtype=torch.int64)
    for name, may_flip in (("cifar10", True), ("digits", False)):
        dm = CIFARDataModule(name, seed=3)
        out, y = dm.augment_batch(images, labels)
        assert out.dtype == torch.float32 and torch.equal(y, labels)
        found = shifts_and_flips(unnormalise(dm, out), images)
        assert all(len(f) == 1 for f in found)
        mirrored = [next(iter(f))[2] for f in found]
        assert any(mirrored) == may_flip and not all(mirrored)
        assert len({next(iter(f))[:2] for f in found}) > 5


def test_augmentation_stream_is_seeded_and_resumable():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(16) % 10

    def stream(dm, n):
        return [dm.augment_batch(images, labels) for _ in range(n)]

    a, b = CIFARDataModule("cifar10", seed=1, mix="cutmix"), CIFARDataModule("cifar10", seed=1, mix="cutmix")
    sa, sb = stream(a, 3), stream(b, 3)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(sa, sb))
    assert not torch.equal(sa[0][0], sa[1][0])  # the stream advances
    other = stream(CIFARDataModule("cifar10", seed=2, mix="cutmix"), 1)
    assert not torch.equal(other[0][0], sa[0][0])
    resumed = CIFARDataModule("cifar10", seed=1, mix="cutmix")
    first = CIFARDataModule("cifar10", seed=1, mix="cutmix")
    stream(first, 2)
    resumed.load_state_dict(first.state_dict())
    x, t = resumed.augment_batch(images, labels)
    assert torch.equal(x, sa[2][0]) and torch.equal(t, sa[2][1])


def test_mix_targets_and_mix_prob():
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(32) % 10
    for mix in ("cutmix", "mixup"):
        x, t = CIFARDataModule("cifar10", mix=mix, seed=5).augment_batch(images, labels)
        assert t.shape == (32, 10) and t.dtype == torch.float32
        torch.testing.assert_close(t.sum(1), torch.ones(32))
        assert (t.max(1).values < 1).any()  # some rows really mixed
    plain_x, plain_y = CIFARDataModule("cifar10", seed=5).augment_batch(images, labels)
    never_x, never_t = CIFARDataModule("cifar10", seed=5, mix="cutmix", mix_prob=0.0).augment_batch(images, labels)
    assert torch.equal(never_x, plain_x)
    assert torch.equal(never_t, torch.nn.functional.one_hot(plain_y, 10).float())


def test_fixed_subset_and_train_subset(digits):
    x1, y1 = digits.fixed_subset("val", 50, seed=1)
    x2, y2 = digits.fixed_subset("val", 50, seed=1)
    x3, _ = digits.fixed_subset("val", 50, seed=2)
    assert x1.shape == (50, 3, 32, 32) and x1.dtype == torch.uint8 and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    flat = digits.val_images.flatten(1)
    assert all((flat == img).all(1).any() for img in x1.flatten(1))
    assert digits.fixed_subset("train", 10_000, seed=0)[0].shape[0] == 1293
    assert digits.fixed_subset("val", None)[0].shape[0] == 144
    tx, ty = digits.fixed_subset("test", 40, seed=3)
    assert tx.shape == (40, 3, 32, 32) and ty.shape == (40,)
    test_flat = digits.test_images.flatten(1)
    assert all((test_flat == img).all(1).any() for img in tx.flatten(1))
    assert torch.equal(digits.fixed_subset("test", None)[0], digits.test_images)
    with pytest.raises(ValueError, match="'train', 'val' or 'test'"):
        digits.fixed_subset("holdout", 5)
    small = CIFARDataModule("digits", train_subset=100, seed=4)
    small.setup()
    again = CIFARDataModule("digits", train_subset=100, seed=4)
    again.setup()
    assert small.num_train == 100 and torch.equal(small.train_images, again.train_images)
    # train_subset picks among the images left after the held-out split.
    assert not set(small.train_indices.tolist()) & set(small.val_indices.tolist())
    assert torch.equal(small.val_images, digits.val_images)


class Recorder(pl.LightningModule):
    """Tiny model that keeps every batch it is given."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3 * 32 * 32, 10)
        self.train_batches, self.val_batches, self.test_batches = [], [], []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.train_batches.append((x.clone(), y.clone()))
        return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

    def validation_step(self, batch, batch_idx):
        self.val_batches.append((batch[0].clone(), batch[1].clone()))

    def test_step(self, batch, batch_idx):
        self.test_batches.append((batch[0].clone(), batch[1].clone()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_trainer_fit_augments_training_only(tmp_path):
    dm = CIFARDataModule("digits", batch_size=32, seed=11, mix="mixup")
    model = Recorder()
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    # Replay: the same seed gives the same shuffled batches and augmentation stream.
    replay = CIFARDataModule("digits", batch_size=32, seed=11, mix="mixup")
    replay.setup("fit")
    raw = iter(replay.train_dataloader())
    assert len(model.train_batches) == 2
    for x, t in model.train_batches:
        rx, ry = next(raw)
        ex, et = replay.augment_batch(rx, ry)
        assert torch.equal(x, ex) and torch.equal(t, et) and t.shape == (32, 10)
        assert not torch.allclose(x, replay.normalize_images(rx))
    assert dm.state_dict()["aug_step"] == 2
    # Sanity check + one validation batch, both only normalised, in order.
    assert len(model.val_batches) >= 1
    for x, y in model.val_batches:
        assert torch.equal(x, dm.normalize_images(dm.val_images[:32])) and torch.equal(y, dm.val_labels[:32])


def quiet_trainer(root, **kwargs):
    return pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_trainer_validates_on_holdout_and_tests_on_test_split(tmp_path):
    dm = CIFARDataModule("digits", batch_size=32, val_batch_size=100, seed=2)
    model = Recorder()
    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, num_sanity_val_steps=0).fit(model, datamodule=dm)
    assert torch.equal(torch.cat([x for x, _ in model.val_batches]), dm.normalize_images(dm.val_images))
    quiet_trainer(tmp_path).test(model, datamodule=dm)
    assert [len(y) for _, y in model.test_batches] == [100, 100, 100, 60]
    assert torch.equal(torch.cat([y for _, y in model.test_batches]), dm.test_labels)
    assert torch.equal(torch.cat([x for x, _ in model.test_batches]), dm.normalize_images(dm.test_images))


def test_trainer_fit_without_validation_split(tmp_path):
    dm = CIFARDataModule("digits", batch_size=32, holdout=0)
    model = Recorder()
    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2).fit(model, datamodule=dm)
    assert len(model.train_batches) == 2 and model.val_batches == []
    assert dm.num_train == 1437 and not dm.has_validation
