"""Fixtures of the resilience tests.

- One intra-op thread for the in-process runs: on a shared 2-core machine, oversubscribed
  OpenMP threads make tiny CPU fits several times slower (and timing-dependent).
- ``KDBIAS_TRACEBACK`` unset: bad input must end in one line, not a traceback.
- Tiny complete runs made once per session (``teacher_run``, ``baseline_run``): tests copy
  what they need from them and never write into them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import run_experiment


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_line_errors(monkeypatch):
    monkeypatch.delenv("KDBIAS_TRACEBACK", raising=False)
    monkeypatch.delenv("KDBIAS_RUN_DIR", raising=False)


@pytest.fixture(scope="session")
def session_runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("session_runs")


@pytest.fixture(scope="session")
def teacher_run(session_runs) -> Path:
    """A complete tiny ``teacher_resnet18 --smoke`` run (read-only)."""
    return _one_thread_run("teacher_resnet18", session_runs)


@pytest.fixture(scope="session")
def baseline_run(session_runs) -> Path:
    """A complete tiny ``baseline --smoke`` run (read-only): a DeiT checkpoint."""
    return _one_thread_run("baseline", session_runs)


def _one_thread_run(name: str, runs: Path) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_experiment(name, runs)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def runs_with_teacher(tmp_path, teacher_run) -> Path:
    """A fresh runs folder holding a copy of the teacher run (``model.teacher: auto`` finds it)."""
    runs = tmp_path / "runs"
    shutil.copytree(teacher_run, runs / "teacher_resnet18" / teacher_run.name)
    return runs
