"""run_all's bad input is one line (exit 2) and ``--status`` never takes another process for a run."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys

import pytest
from helpers import EXPERIMENTS

from kdbias.launch import plan_matrix
from kdbias.launch.records import process_start, status, write_record


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("kdbias_run_all_inputs", EXPERIMENTS / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extra", [["--signal_delay_s", "-100"], ["--time", "10", "--signal_delay_s", "600"]])
def test_signal_delay_outside_the_time_limit_is_one_line(run_all, tmp_path, capsys, extra):
    argv = ["--smoke", "--launcher", "slurm", "--runs_dir", str(tmp_path / "runs"), "--dry-run", *extra]
    assert run_all.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("run_all.py: error: --signal_delay_s must be >= 0 and less than")


def test_status_does_not_take_a_reused_pid_for_the_run(tmp_path):
    """A record whose pid now belongs to another process (its start time differs) is a run that
    ended, not a running one; the same pid with its recorded start time is running."""
    root = tmp_path / "runs"
    (run,) = plan_matrix(root, seeds=1, smoke=True, only=["teacher_resnet18"])
    me = os.getpid()
    write_record(
        root, "local", run.slug, state="started", log="x.log", pid=me, pid_start="1", host=socket.gethostname()
    )
    assert status([run], root)[0][1] == "failed"
    write_record(root, "local", run.slug, state="started", pid=me, pid_start=process_start(me))
    assert process_start(me) is not None and status([run], root)[0][1] == "running"
