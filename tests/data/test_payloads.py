"""Crafted CIFAR batches that run code under a plain ``pickle.load``: ``load_cifar`` refuses
them with ``CorruptDatasetError`` before anything is called (the marker file never appears)."""

import builtins
import codecs
import os
import pickle
import subprocess

import numpy as np
import pytest
from cifar_fixtures import batch_dict, fake_split, write_cifar10, write_pickle

from kdbias.data import CIFARDataModule, CorruptDatasetError, load_cifar


class Payload:
    """Unpickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def os_system(marker):
    return Payload(os.system, f"touch '{marker}'")


def builtins_exec(marker):
    return Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()")


def subprocess_call(marker):
    return Payload(subprocess.call, ["touch", str(marker)])


def builtins_eval(marker):
    return Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()")


PAYLOADS = {"os.system": os_system, "builtins.exec": builtins_exec, "subprocess.call": subprocess_call}


def whole_file(payload, entry):
    return payload


def as_data(payload, entry):
    return {**entry, b"data": payload}


def nested_in_labels(payload, entry):
    return {**entry, b"labels": [*entry[b"labels"][:-1], {b"x": (payload,)}]}


def extra_key(payload, entry):  # a valid batch with one more (never read) key
    return {**entry, b"extra": [payload]}


PLACEMENTS = {
    "whole_file": whole_file,
    "as_data": as_data,
    "nested_in_labels": nested_in_labels,
    "extra_key": extra_key,
}


@pytest.fixture
def cifar10(tmp_path):
    rng = np.random.default_rng(0)
    train = [fake_split(rng, 4, 10) for _ in range(5)]
    folder = write_cifar10(tmp_path / "data", train, fake_split(rng, 4, 10))
    return tmp_path / "data", folder, train


def plant(folder, train, make, placement, marker, protocol=2):
    """Replace data_batch_2 by a real-format batch carrying the payload."""
    x, y = train[1]
    entry = PLACEMENTS[placement](make(marker), batch_dict("data_batch_2", x, y, b"labels"))
    return write_pickle(folder / "data_batch_2", entry, protocol)


def assert_refused(root, path, marker, forbidden):
    with pytest.raises(CorruptDatasetError) as err:
        load_cifar("cifar10", root, train=True, verify_md5=False)
    msg = str(err.value)
    assert str(path) in msg and err.value.path == path
    assert "forbidden global" in msg and forbidden in msg
    assert "\n" not in msg and "prepare_data()" in msg
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("placement", list(PLACEMENTS))
@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_payload_never_runs(cifar10, tmp_path, kind, placement):
    root, folder, train = cifar10
    marker = tmp_path / "pwned"
    path = plant(folder, train, PAYLOADS[kind], placement, marker)
    # Protocol 2 writes Python 2 module names (__builtin__.exec); the function's name stays.
    assert_refused(root, path, marker, "." + kind.split(".")[1])


@pytest.mark.parametrize("protocol", sorted({0, 1, 2, 3, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL}))
def test_payload_refused_under_every_protocol(cifar10, tmp_path, protocol):
    root, folder, train = cifar10
    marker = tmp_path / "pwned"
    path = plant(folder, train, builtins_eval, "as_data", marker, protocol)
    assert_refused(root, path, marker, ".eval")


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_payload_files_are_live(cifar10, tmp_path, kind):
    """The planted files really run code under a plain pickle.load: the guard is what stops them."""
    _, folder, train = cifar10
    marker = tmp_path / "live"
    path = plant(folder, train, PAYLOADS[kind], "nested_in_labels", marker)
    with open(path, "rb") as f:
        pickle.load(f, encoding="bytes")
    assert marker.exists()


@pytest.mark.parametrize(
    "func,args,forbidden",
    [
        (codecs.encode, ("touch", "rot13"), "encode(str, 'latin1')"),  # the one builtin, latin-1 only
        (np.load, ("x.npy",), "numpy.load"),  # numpy is not admitted wholesale
        (pickle.loads, (b"x",), ".loads"),
        (getattr, ("text", "upper"), ".getattr"),
        (bytes, (10**10,), "bytes()"),  # bytes only as bytes() (b"" under protocol 2): no allocation
    ],
)
def test_other_globals_refused(cifar10, func, args, forbidden):
    root, folder, train = cifar10
    x, y = train[1]
    path = write_pickle(
        folder / "data_batch_2", {**batch_dict("data_batch_2", x, y, b"labels"), b"x": Payload(func, *args)}
    )
    with pytest.raises(CorruptDatasetError, match="data_batch_2") as err:
        load_cifar("cifar10", root, train=True, verify_md5=False)
    assert forbidden in str(err.value) and err.value.path == path


def test_datamodule_setup_refuses_payload(cifar10, tmp_path):
    root, folder, train = cifar10
    marker = tmp_path / "pwned"
    plant(folder, train, os_system, "whole_file", marker)
    dm = CIFARDataModule("cifar10", data_dir=root, batch_size=2, holdout=2, verify_md5=False)
    dm.prepare_data()  # all files present: no download, nothing read
    with pytest.raises(CorruptDatasetError, match="data_batch_2"):
        dm.setup("fit")
    assert not marker.exists()
