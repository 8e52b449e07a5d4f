"""CIFAR loading from files in torchvision's python-batch format, and the offline error."""

import pickle
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar

from kdbias.data import CIFARDataModule, DatasetNotFoundError, download_cifar, load_cifar


def write_batch(path, images, labels, label_key):
    """One CIFAR python batch: row = 1024 R, 1024 G, 1024 B values, each 32x32 row-major."""
    n = len(images)
    data = np.concatenate([images[:, c].reshape(n, 1024) for c in range(3)], axis=1)
    entry = {
        b"batch_label": path.name.encode(),
        label_key: [int(v) for v in labels],
        b"data": data.astype(np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if label_key == b"fine_labels":
        entry[b"coarse_labels"] = [int(v) // 5 for v in labels]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def fake_split(rng, n, num_classes):
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, num_classes, n)


@pytest.fixture
def cifar10_dir(tmp_path):
    rng = np.random.default_rng(0)
    train = [fake_split(rng, 3, 10) for _ in range(5)]
    for i, (x, y) in enumerate(train, 1):
        write_batch(tmp_path / "cifar-10-batches-py" / f"data_batch_{i}", x, y, b"labels")
    test = fake_split(rng, 4, 10)
    write_batch(tmp_path / "cifar-10-batches-py" / "test_batch", *test, b"labels")
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return tmp_path, (train_x, train_y), test


def test_cifar10_pixel_roundtrip(cifar10_dir):
    root, (train_x, train_y), (test_x, test_y) = cifar10_dir
    x, y = load_cifar("cifar10", root, train=True)
    assert x.dtype == torch.uint8 and x.shape == (15, 3, 32, 32) and y.dtype == torch.int64
    np.testing.assert_array_equal(x.numpy(), train_x)
    np.testing.assert_array_equal(y.numpy(), train_y)
    x, y = load_cifar("cifar10", root, train=False)
    np.testing.assert_array_equal(x.numpy(), test_x)
    np.testing.assert_array_equal(y.numpy(), test_y)
    # One pixel by hand: green channel (offset 1024), row 5, column 7.
    with open(root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    assert x[2, 1, 5, 7].item() == raw[2, 1024 + 5 * 32 + 7]


def test_cifar100_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    train, test = fake_split(rng, 6, 100), fake_split(rng, 4, 100)
    write_batch(tmp_path / "cifar-100-python" / "train", *train, b"fine_labels")
    write_batch(tmp_path / "cifar-100-python" / "test", *test, b"fine_labels")
    x, y = load_cifar("cifar100", tmp_path, train=True)
    np.testing.assert_array_equal(x.numpy(), train[0])
    np.testing.assert_array_equal(y.numpy(), train[1])
    dm = CIFARDataModule("cifar100", data_dir=tmp_path, batch_size=2)
    dm.prepare_data()  # files present: no download attempted
    dm.setup("fit")
    assert dm.num_classes == 100 and dm.num_train == 6 and dm.num_val == 4
    np.testing.assert_array_equal(dm.val_images.numpy(), test[0])


def test_datamodule_reads_cifar10_files(cifar10_dir, monkeypatch):
    root, (train_x, _), (test_x, test_y) = cifar10_dir

    def no_network(*args, **kwargs):
        raise AssertionError("download attempted although the files exist")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_network)
    dm = CIFARDataModule("cifar10", data_dir=root, batch_size=4, val_batch_size=3)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_images.shape == (15, 3, 32, 32) and dm.train_images.dtype == torch.uint8
    batches = list(dm.val_dataloader())  # sequential, last partial batch kept
    assert [len(b[1]) for b in batches] == [3, 1]
    np.testing.assert_array_equal(torch.cat([b[0] for b in batches]).numpy(), test_x)
    assert len(dm.train_dataloader()) == 15 // 4


@pytest.mark.parametrize("name,files", [("cifar10", ["data_batch_1", "test_batch"]), ("cifar100", ["train", "test"])])
def test_offline_download_error_names_the_fixes(tmp_path, monkeypatch, name, files):
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    target = tmp_path / "cifar data"
    with pytest.raises(DatasetNotFoundError) as err:
        CIFARDataModule(name, data_dir=target).prepare_data()
    assert len(calls) == 1  # went through torchvision's real download path, once
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert name in msg and str(target.resolve()) in msg and "digits" in msg
    assert all(f in msg for f in files)
    assert "network" in msg and "copy" in msg


def test_missing_files_without_download(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar("cifar10", tmp_path, train=True)
    with pytest.raises(DatasetNotFoundError, match="digits"):
        CIFARDataModule("cifar10", data_dir=tmp_path).setup("fit")


def test_download_skipped_when_present(cifar10_dir, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", None)  # any use would raise
    download_cifar("cifar10", cifar10_dir[0])
