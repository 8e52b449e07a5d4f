"""Files under runs/ are written with the process umask (atomic writes included: mkstemp's
0600 is not kept), so a lab group can read each other's runs."""

from __future__ import annotations

import os
import stat

import pytest
from helpers import run_experiment

from kdbias import runs


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    runs.atomic_write_text(tmp_path / "a.txt", "x")
    runs.atomic_write_json(tmp_path / "b" / "summary.json", {"a": 1})
    assert _mode(tmp_path / "a.txt") == expected and _mode(tmp_path / "b" / "summary.json") == expected
    assert runs.file_mode() == expected


def test_a_run_writes_its_files_0644_under_umask_022(tmp_path, umask):
    umask(0o022)
    run_dir = run_experiment("teacher_resnet18", tmp_path / "runs")
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"summary.json", "config.yaml", "best.ckpt", "last.ckpt", runs.LOCK_FILE} <= names
    assert {p.name: oct(_mode(p)) for p in files} == {p.name: oct(0o644) for p in files}
