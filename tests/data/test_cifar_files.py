"""CIFAR loading from files in torchvision's python-batch format: exact round trips under
every pickle protocol, one clear error per kind of corrupt file, and the offline error."""

import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from cifar_fixtures import (
    batch_dict,
    cifar_rows,
    fake_split,
    write_batch,
    write_cifar10,
    write_pickle,
    write_python2_batch,
)

from kdbias.data import CIFARDataModule, CorruptDatasetError, DatasetNotFoundError, download_cifar, load_cifar


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
    x, y = load_cifar("cifar10", root, train=True, verify_md5=False)
    assert x.dtype == torch.uint8 and x.shape == (15, 3, 32, 32) and y.dtype == torch.int64
    np.testing.assert_array_equal(x.numpy(), train_x)
    np.testing.assert_array_equal(y.numpy(), train_y)
    x, y = load_cifar("cifar10", root, train=False, verify_md5=False)
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
    x, y = load_cifar("cifar100", tmp_path, train=True, verify_md5=False)
    np.testing.assert_array_equal(x.numpy(), train[0])
    np.testing.assert_array_equal(y.numpy(), train[1])
    dm = CIFARDataModule("cifar100", data_dir=tmp_path, batch_size=2, holdout=2, verify_md5=False)
    dm.prepare_data()  # files present: no download attempted
    dm.setup("fit")
    assert dm.num_classes == 100 and (dm.num_train, dm.num_val, dm.num_test) == (4, 2, 4)
    np.testing.assert_array_equal(dm.test_images.numpy(), test[0])


def test_datamodule_reads_cifar10_files(cifar10_dir, monkeypatch):
    root, (train_x, _), (test_x, test_y) = cifar10_dir

    def no_network(*args, **kwargs):
        raise AssertionError("download attempted although the files exist")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_network)
    dm = CIFARDataModule("cifar10", data_dir=root, batch_size=4, val_batch_size=3, holdout=5, verify_md5=False)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_images.shape == (10, 3, 32, 32) and dm.train_images.dtype == torch.uint8
    batches = list(dm.test_dataloader())  # sequential, last partial batch kept
    assert [len(b[1]) for b in batches] == [3, 1]
    np.testing.assert_array_equal(torch.cat([b[0] for b in batches]).numpy(), test_x)
    np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy(), test_y)
    assert len(dm.train_dataloader()) == 10 // 4 and [len(b[1]) for b in dm.val_dataloader()] == [3, 2]
    # Held-out + train images are exactly the 15 training images, each once.
    rows = sorted(bytes(r) for r in torch.cat([dm.train_images, dm.val_images]).flatten(1).numpy())
    assert rows == sorted(bytes(r) for r in train_x.reshape(15, -1))


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
        load_cifar("cifar10", tmp_path, train=True, verify_md5=False)
    with pytest.raises(DatasetNotFoundError, match="digits"):
        CIFARDataModule("cifar10", data_dir=tmp_path, verify_md5=False).setup("fit")


def test_download_skipped_when_present(cifar10_dir, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", None)  # any use would raise
    download_cifar("cifar10", cifar10_dir[0])


# -- exact round trips ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", sorted({0, 2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL}))
def test_roundtrip_under_each_protocol(tmp_path, protocol):
    """Protocol 2 (the official files'), the default one and the highest (numpy: _frombuffer)."""
    rng = np.random.default_rng(protocol)
    train = [fake_split(rng, 4, 10) for _ in range(5)]
    test = fake_split(rng, 4, 10)
    write_cifar10(tmp_path, train, test, protocol=protocol)
    x, y = load_cifar("cifar10", tmp_path, train=True, verify_md5=False)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    np.testing.assert_array_equal(x.numpy(), np.concatenate([a for a, _ in train]))
    np.testing.assert_array_equal(y.numpy(), np.concatenate([b for _, b in train]))
    x, y = load_cifar("cifar10", tmp_path, train=False, verify_md5=False)
    np.testing.assert_array_equal(x.numpy(), test[0])
    np.testing.assert_array_equal(y.numpy(), test[1])
    assert x.is_contiguous() and x.numpy().flags.writeable


def test_python2_style_files_load(tmp_path):
    """As the official files: Python 2 str objects, numpy.core.multiarray._reconstruct."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar-10-batches-py"
    splits = {name: fake_split(rng, 4, 10) for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    for name, (x, y) in splits.items():
        raw = write_python2_batch(folder / name, x, y, b"labels")
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw
    x, y = load_cifar("cifar10", tmp_path, train=False, verify_md5=False)
    np.testing.assert_array_equal(x.numpy(), splits["test_batch"][0])
    np.testing.assert_array_equal(y.numpy(), splits["test_batch"][1])
    # Channel-first: pixel (c, row, col) is entry c * 1024 + row * 32 + col of the row.
    rows = cifar_rows(splits["test_batch"][0])
    assert [x[3, c, 31, 2].item() for c in range(3)] == [rows[3, c * 1024 + 31 * 32 + 2] for c in range(3)]
    x, _ = load_cifar("cifar10", tmp_path, train=True, verify_md5=False)
    assert x.shape == (20, 3, 32, 32)


def test_empty_bytes_values_load(tmp_path):
    """Python 3 pickles b"" under protocol 2 as bytes(): admitted, without arguments only."""
    rng = np.random.default_rng(9)
    train = [fake_split(rng, 4, 10) for _ in range(5)]
    folder = write_cifar10(tmp_path, train, fake_split(rng, 4, 10))
    x, y = train[2]
    entry = {**batch_dict("b", x, y, b"labels"), b"batch_label": b"", b"filenames": [b""] * 4}
    assert b"bytes" in write_pickle(folder / "data_batch_3", entry, protocol=2).read_bytes()
    images, _ = load_cifar("cifar10", tmp_path, train=True, verify_md5=False)
    np.testing.assert_array_equal(images[8:12].numpy(), x)


def test_numpy_label_array_accepted(tmp_path):
    rng = np.random.default_rng(4)
    train = [fake_split(rng, 4, 10) for _ in range(5)]
    folder = write_cifar10(tmp_path, train, fake_split(rng, 4, 10))
    x, y = train[0]
    write_pickle(folder / "data_batch_1", {**batch_dict("b", x, y, b"labels"), b"labels": np.asarray(y, np.uint8)})
    _, labels = load_cifar("cifar10", tmp_path, train=True, verify_md5=False)
    np.testing.assert_array_equal(labels[:4].numpy(), y)


# -- corrupt files: one clear error each ------------------------------------------------


def _entry(x, y, **change):
    entry = batch_dict("data_batch_2", x, y, b"labels")
    for key, value in change.items():
        if value is None:
            del entry[key.encode()]
        else:
            entry[key.encode()] = value
    return entry


def _good_bytes(x, y):
    return pickle.dumps(_entry(x, y), protocol=2)


CORRUPT = {
    # name: (bytes of data_batch_2 from (x, y) with 4 images, words the message must hold)
    "truncated": (lambda x, y: _good_bytes(x, y)[: len(_good_bytes(x, y)) // 2], "truncated"),
    "truncated_header": (lambda x, y: _good_bytes(x, y)[:3], "truncated"),
    "empty": (lambda x, y: b"", "empty file"),
    "random_bytes": (lambda x, y: np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes(), "pickle"),
    "text": (lambda x, y: b"<html>404 Not Found</html>\n", "pickle"),
    "list_not_dict": (lambda x, y: pickle.dumps([cifar_rows(x), list(y)], protocol=2), "dict"),
    "missing_data": (lambda x, y: pickle.dumps(_entry(x, y, data=None), protocol=2), "missing key b'data'"),
    "missing_labels": (lambda x, y: pickle.dumps(_entry(x, y, labels=None), protocol=2), "missing key b'labels'"),
    "str_keys": (
        lambda x, y: pickle.dumps({"data": cifar_rows(x), "labels": list(y)}, protocol=2),
        "missing key b'data'",
    ),
    "float64_data": (
        lambda x, y: pickle.dumps(_entry(x, y, data=cifar_rows(x) / 255.0), protocol=2),
        "uint8",
    ),
    "int64_data_negative": (
        lambda x, y: pickle.dumps(_entry(x, y, data=cifar_rows(x).astype(np.int64) - 5), protocol=2),
        "int64",
    ),
    "list_data": (lambda x, y: pickle.dumps(_entry(x, y, data=cifar_rows(x).tolist()), protocol=2), "uint8"),
    "shape_3000": (lambda x, y: pickle.dumps(_entry(x, y, data=cifar_rows(x)[:, :3000]), protocol=2), "3000"),
    "flat_data": (lambda x, y: pickle.dumps(_entry(x, y, data=cifar_rows(x).reshape(-1)), protocol=2), "3072"),
    "zero_images": (
        lambda x, y: pickle.dumps(_entry(x, y, data=cifar_rows(x)[:0], labels=[]), protocol=2),
        "N >= 1",
    ),
    "label_10": (lambda x, y: pickle.dumps(_entry(x, y, labels=[1, 2, 10, 3]), protocol=2), "[0, 10)"),
    "label_negative": (lambda x, y: pickle.dumps(_entry(x, y, labels=[1, -1, 0, 3]), protocol=2), "[0, 10)"),
    "float_labels": (lambda x, y: pickle.dumps(_entry(x, y, labels=[1.0, 2.0, 0.0, 3.0]), protocol=2), "float"),
    "labels_one_short": (
        lambda x, y: pickle.dumps(_entry(x, y, labels=[int(v) for v in y[:-1]]), protocol=2),
        "3 labels",
    ),
    "labels_not_list": (lambda x, y: pickle.dumps(_entry(x, y, labels=b"\x01\x02\x03\x04"), protocol=2), "list"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_file_is_one_clear_error(tmp_path, case):
    rng = np.random.default_rng(5)
    train = [fake_split(rng, 4, 10) for _ in range(5)]
    folder = write_cifar10(tmp_path, train, fake_split(rng, 4, 10))
    make, words = CORRUPT[case]
    path = folder / "data_batch_2"
    path.write_bytes(make(*train[1]))
    with pytest.raises(CorruptDatasetError) as err:
        load_cifar("cifar10", tmp_path, train=True, verify_md5=False)
    assert isinstance(err.value, ValueError) and err.value.path == path
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and words in msg
    assert "delete the folder" in msg and str(folder) in msg and "prepare_data()" in msg
    assert "cifar-10-python.tar.gz" in msg
    load_cifar("cifar10", tmp_path, train=False, verify_md5=False)  # the test split is intact


def test_cifar100_label_range_and_error(tmp_path):
    rng = np.random.default_rng(6)
    x, y = fake_split(rng, 4, 100)
    write_batch(tmp_path / "cifar-100-python" / "test", x, y, b"fine_labels")
    path = write_batch(tmp_path / "cifar-100-python" / "train", x, [99, 0, 100, 5], b"fine_labels")
    with pytest.raises(CorruptDatasetError, match=r"\[0, 100\)") as err:
        load_cifar("cifar100", tmp_path, train=True, verify_md5=False)
    assert err.value.path == path and "cifar-100-python.tar.gz" in str(err.value)
    write_batch(path, x, [99, 0, 42, 5], b"fine_labels")
    assert load_cifar("cifar100", tmp_path, train=True, verify_md5=False)[1].tolist() == [99, 0, 42, 5]
    # CIFAR-10 files (b"labels") are not CIFAR-100 files (b"fine_labels").
    write_batch(path, x, y, b"labels")
    with pytest.raises(CorruptDatasetError, match="fine_labels"):
        load_cifar("cifar100", tmp_path, train=True, verify_md5=False)


def test_unreadable_file_is_corrupt_error(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    folder = write_cifar10(tmp_path, [fake_split(rng, 4, 10) for _ in range(5)], fake_split(rng, 4, 10))
    bad = folder / "data_batch_4"
    read_bytes = Path.read_bytes

    def failing(self):
        if self == bad:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", failing)
    with pytest.raises(CorruptDatasetError, match="cannot be read.*Permission denied") as err:
        load_cifar("cifar10", tmp_path, train=True, verify_md5=False)
    assert err.value.path == bad and str(bad) in str(err.value)


def test_datamodule_setup_reports_the_corrupt_file(tmp_path):
    rng = np.random.default_rng(8)
    folder = write_cifar10(tmp_path, [fake_split(rng, 4, 10) for _ in range(5)], fake_split(rng, 4, 10))
    (folder / "test_batch").write_bytes(b"\x80\x02}q")
    dm = CIFARDataModule("cifar10", data_dir=tmp_path, batch_size=2, holdout=4, verify_md5=False)
    dm.prepare_data()  # files exist: nothing to download
    with pytest.raises(CorruptDatasetError, match="test_batch.*truncated"):
        dm.setup("fit")
