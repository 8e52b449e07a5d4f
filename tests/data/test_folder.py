"""Folder datasets: the digits written as PNG files read back exactly; statistics against numpy;
the cache and its staleness; the one-folder split rule; bad folders in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import digits_folder, write_images
from PIL import Image

from kdbias.data import DATASETS, CIFARDataModule, FolderDatasetError, load_digits_split, register_folder_dataset
from kdbias.data.folder import STATS_FILE, resolve_dataset, scan_folder


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> Path:
    return digits_folder(tmp_path_factory.mktemp("digits_png"))


def _order(labels: torch.Tensor) -> torch.Tensor:
    """Index order of files sorted by class folder, then by name (the order the folder is read in)."""
    return torch.as_tensor(np.lexsort((np.arange(len(labels)), labels.numpy())))


def test_folder_reads_the_digits_back_exactly(digits_root):
    tr_x, tr_y, te_x, te_y = load_digits_split(seed=0)
    dm = CIFARDataModule("folder", data_dir=digits_root, holdout=0, batch_size=16)
    dm.setup()
    assert dm.num_classes == 10 and dm.image_size == 32
    order = _order(tr_y)
    assert torch.equal(dm.train_images, tr_x[order]) and torch.equal(dm.train_labels, tr_y[order])
    test_order = _order(te_y)
    assert torch.equal(dm.test_images, te_x[test_order]) and torch.equal(dm.test_labels, te_y[test_order])
    assert dm.train_images.dtype == torch.uint8 and dm.train_images.shape == (1437, 3, 32, 32)


def test_statistics_match_numpy_and_the_digits_constants(digits_root):
    info = register_folder_dataset("digits_png", digits_root)
    tr_x = load_digits_split(seed=0)[0].numpy().astype(np.float64) / 255.0
    mean = tr_x.mean(axis=(0, 2, 3))
    std = tr_x.std(axis=(0, 2, 3))  # population std (ddof = 0)
    np.testing.assert_allclose(info.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(info.std, std, rtol=1e-9)
    np.testing.assert_allclose(info.mean, DATASETS["digits"].mean, atol=6e-5)  # the constants are rounded to 4 places
    np.testing.assert_allclose(info.std, DATASETS["digits"].std, atol=6e-5)
    assert (info.num_train, info.num_test, info.num_holdout) == (1437, 360, 144)  # digits' own numbers
    assert DATASETS["digits_png"] is info
    dm = CIFARDataModule("digits_png", holdout=0)
    assert dm.mean == info.mean and dm.num_classes == 10


def test_statistics_cache_is_json_and_detects_a_changed_folder(tmp_path):
    root = digits_folder(tmp_path / "d", limit=3)
    first = register_folder_dataset("small", root)
    cache = json.loads((root / STATS_FILE).read_text())
    assert cache["source"]["num_train"] == 30 and cache["source"]["image_size"] == 32
    assert cache["mean"] == list(first.mean)
    # A cache whose numbers are wrong but whose source matches is trusted (it is a cache) ...
    cache["mean"] = [0.5, 0.5, 0.5]
    (root / STATS_FILE).write_text(json.dumps(cache))
    assert register_folder_dataset("small", root).mean == (0.5, 0.5, 0.5)
    # ... until the training files change: a white image is added, and the statistics are computed again.
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(root / "train" / "c0" / "white.png")
    again = register_folder_dataset("small", root)
    assert again.num_train == 31 and again.mean != (0.5, 0.5, 0.5)
    assert again.mean[0] == pytest.approx((first.mean[0] * 30 + 1.0) / 31, rel=1e-9)  # one all-1 image of 31
    # Another image size is another source.
    assert register_folder_dataset("small", root, image_size=16).image_size == 16
    assert json.loads((root / STATS_FILE).read_text())["source"]["image_size"] == 16


def test_one_folder_is_split_by_the_stated_stratified_rule(tmp_path):
    tr_x, tr_y, _, _ = load_digits_split(seed=0)
    write_images(tmp_path / "one", tr_x, tr_y, limit=10)  # 10 classes x 10 images
    layout = scan_folder(tmp_path / "one")
    assert len(layout.train) == 80 and len(layout.test) == 20  # round(0.2 * 100) test images
    test_labels = [label for _, label in layout.test]
    assert sorted(test_labels) == sorted(list(range(10)) * 2)  # 2 per class: stratified
    assert {p for p, _ in layout.train}.isdisjoint(p for p, _ in layout.test)
    assert scan_folder(tmp_path / "one").test == layout.test  # fixed: the same split every time


def test_image_size_resizes(digits_root):
    dm = CIFARDataModule("folder", data_dir=digits_root, image_size=16, holdout=0)
    dm.setup()
    assert dm.train_images.shape[1:] == (3, 16, 16) and dm.image_size == 16


def _bad(tmp_path: Path, case: str) -> Path:
    root = tmp_path / case
    pixels = np.zeros((8, 8, 3), np.uint8)
    if case == "missing":
        return root
    if case == "empty":
        root.mkdir()
    elif case == "one_class":
        (root / "a").mkdir(parents=True)
        Image.fromarray(pixels).save(root / "a" / "x.png")
    elif case == "not_image":
        for c in "ab":
            (root / c).mkdir(parents=True)
            Image.fromarray(pixels).save(root / c / "x.png")
        (root / "b" / "notes.txt").write_text("not an image")
    elif case == "truncated":
        for c in "ab":
            (root / c).mkdir(parents=True)
            Image.fromarray(pixels).save(root / c / "x.png")
        data = (root / "b" / "x.png").read_bytes()
        (root / "b" / "x.png").write_bytes(data[: len(data) // 2])
    elif case == "mismatch":
        for split, classes in (("train", "ab"), ("test", "ac")):
            for c in classes:
                (root / split / c).mkdir(parents=True)
                Image.fromarray(pixels).save(root / split / c / "x.png")
    elif case == "train_only":
        for c in "ab":
            (root / "train" / c).mkdir(parents=True)
            Image.fromarray(pixels).save(root / "train" / c / "x.png")
    return root


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing", "no such folder"),
        ("empty", "no class folder"),
        ("one_class", "one class folder"),
        ("not_image", "notes.txt is not an image"),
        ("truncated", "x.png is not an image"),
        ("mismatch", "only in train/: b; only in test/: c"),
        ("train_only", "has train/ but not test/"),
    ],
)
def test_bad_folders_are_one_line(tmp_path, case, words):
    root = _bad(tmp_path, case)
    with pytest.raises(FolderDatasetError, match=words) as error:
        CIFARDataModule("folder", data_dir=root)
    assert "\n" not in str(error.value) and str(root) in str(error.value) or root.name in str(error.value)


def test_a_data_dir_that_would_be_ignored_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not read by dataset 'digits'"):
        resolve_dataset("digits", tmp_path)
    with pytest.raises(ValueError, match="does not apply"):
        resolve_dataset("cifar10", "data", image_size=64)
    assert resolve_dataset("digits").name == "digits"


def test_unwritable_folder_still_works(tmp_path, monkeypatch, caplog):
    root = digits_folder(tmp_path / "ro", limit=2)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only folder")

    monkeypatch.setattr("kdbias.data.folder.os.replace", refuse)
    info = register_folder_dataset("ro", root)
    assert info.num_train == 20 and not (root / STATS_FILE).exists()
    assert "not cached" in caplog.text
