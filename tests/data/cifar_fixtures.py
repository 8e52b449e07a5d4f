"""Writers of CIFAR python batches in the real on-disk format, for the tests in tests/data
(a uniquely named module, importable by name as pytest puts this folder on sys.path).

A batch is a pickled dict: ``b"data"`` numpy uint8 ``[N, 3072]`` (per image 1024 red,
then green, then blue values, each 32x32 row-major), ``b"labels"`` (CIFAR-10) or
``b"fine_labels"`` + ``b"coarse_labels"`` (CIFAR-100) as lists of ints,
``b"batch_label"`` and ``b"filenames"`` (bytes).
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 3, 32, 32]`` -> the format's uint8 ``[N, 3072]`` rows (R, G, B planes)."""
    n = len(images)
    return np.concatenate([images[:, c].reshape(n, 1024) for c in range(3)], axis=1).astype(np.uint8)


def batch_dict(name: str, images: np.ndarray, labels, label_key: bytes) -> dict[bytes, Any]:
    """The dict of one batch, as the official files hold it."""
    n = len(images)
    entry: dict[bytes, Any] = {
        b"batch_label": name.encode(),
        label_key: [int(v) for v in labels],
        b"data": cifar_rows(images),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if label_key == b"fine_labels":
        entry[b"coarse_labels"] = [int(v) // 5 for v in labels]
    return entry


def write_pickle(path: Path, obj: Any, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def write_batch(path: Path, images: np.ndarray, labels, label_key: bytes, protocol: int = 2) -> Path:
    """One CIFAR python batch (protocol 2 by default, like the official Python 2 files)."""
    return write_pickle(path, batch_dict(path.name, images, labels, label_key), protocol)


class Python2Pickler(pickle._Pickler):
    """Pickles ``bytes`` and ``str`` as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as
    the official files do, instead of Python 3's ``_codecs.encode(str, "latin1")`` call
    and unicode strings."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        n = len(raw)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def write_python2_batch(path: Path, images: np.ndarray, labels, label_key: bytes) -> bytes:
    """A batch as Python 2 + numpy 1.x wrote it: protocol 2, ``str`` objects, and
    ``numpy.core.multiarray._reconstruct``. Returns the file's bytes."""
    import io

    buf = io.BytesIO()
    Python2Pickler(buf, protocol=2).dump(batch_dict(path.name, images, labels, label_key))
    raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return raw


def fake_split(rng: np.random.Generator, n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images ``[n, 3, 32, 32]`` and int labels ``[n]`` in ``[0, num_classes)``."""
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, num_classes, n)


def write_cifar10(
    root: Path,
    train: list[tuple[np.ndarray, np.ndarray]],
    test: tuple[np.ndarray, np.ndarray],
    protocol: int = 2,
) -> Path:
    """``root/cifar-10-batches-py`` with the 5 training batches ``train`` and ``test_batch``."""
    assert len(train) == 5
    folder = root / "cifar-10-batches-py"
    for name, (x, y) in zip(CIFAR10_TRAIN, train):
        write_batch(folder / name, x, y, b"labels", protocol)
    write_batch(folder / "test_batch", *test, b"labels", protocol)
    return folder
