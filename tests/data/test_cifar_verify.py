"""CIFAR files verified against the official ones: each batch file's image count and the MD5
torchvision publishes for it; ``verify_md5=False`` (``--data.verify_md5 false``) accepts a
deliberately modified copy."""

import hashlib

import numpy as np
import pytest
import torchvision.datasets
from cifar_fixtures import fake_split, write_batch

from kdbias.data import CIFARDataModule, CorruptDatasetError, load_cifar
from kdbias.data import cifar as cifar_module

# torchvision's published checksums, written out (torchvision.datasets.CIFAR10/100 source).
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
OFFICIAL_MD5_100 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}


def write_cifar10(root, per_file=3):
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        write_batch(folder / name, *fake_split(rng, per_file, 10), b"labels")
    return folder


def test_published_md5_are_torchvisions():
    assert {k: cifar_module.published_md5("cifar10")[k] for k in OFFICIAL_MD5} == OFFICIAL_MD5
    assert cifar_module.published_md5("cifar100") == OFFICIAL_MD5_100
    assert cifar_module.CIFAR_COUNTS["cifar10"]["data_batch_3"] == 10_000
    assert cifar_module.CIFAR_COUNTS["cifar100"] == {"train": 50_000, "test": 10_000}


def test_a_file_with_too_few_images_is_refused_naming_it(tmp_path):
    write_cifar10(tmp_path, per_file=30)
    with pytest.raises(CorruptDatasetError) as err:
        load_cifar("cifar10", tmp_path, train=True)
    message = str(err.value)
    assert err.value.path.name == "data_batch_1" and "\n" not in message
    assert "holds 30 images; the official data_batch_1 holds 10000" in message
    assert "--data.verify_md5 false" in message
    x, _ = load_cifar("cifar10", tmp_path, train=True, verify_md5=False)  # a deliberate subset: accepted
    assert len(x) == 150


def test_an_md5_mismatch_is_refused_naming_the_file(tmp_path, monkeypatch):
    folder = write_cifar10(tmp_path)
    monkeypatch.setitem(cifar_module.CIFAR_COUNTS, "cifar10", dict.fromkeys(cifar_module.CIFAR_COUNTS["cifar10"], 3))
    # Publish the fixture files' own checksums (hashlib of their bytes), except test_batch's.
    own = [[f.name, hashlib.md5(f.read_bytes()).hexdigest()] for f in sorted(folder.iterdir())]
    train = [entry for entry in own if entry[0] != "test_batch"]
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "train_list", train)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "test_list", [["test_batch", "0" * 32]])
    x, _ = load_cifar("cifar10", tmp_path, train=True)  # every training file matches: verified
    assert len(x) == 15
    with pytest.raises(CorruptDatasetError, match="test_batch") as err:
        load_cifar("cifar10", tmp_path, train=False)
    own_md5 = dict(own)["test_batch"]
    assert f"its MD5 {own_md5} differs from torchvision's published {'0' * 32}" in str(err.value)
    # One flipped byte in a verified file is caught too.
    path = folder / "data_batch_4"
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 1  # inside the image data: still a valid pickle
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptDatasetError, match="data_batch_4.*MD5"):
        load_cifar("cifar10", tmp_path, train=True)


def test_datamodule_flag_accepts_a_modified_copy(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(CorruptDatasetError, match="data_batch_1"):
        CIFARDataModule("cifar10", data_dir=tmp_path, batch_size=2, holdout=2).setup("fit")
    dm = CIFARDataModule("cifar10", data_dir=tmp_path, batch_size=2, holdout=2, verify_md5=False)
    dm.setup("fit")
    assert (dm.num_train, dm.num_val, dm.num_test) == (13, 2, 3)
    assert dm.hparams["verify_md5"] is False
