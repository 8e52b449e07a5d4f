"""Files a run reads or writes: no code runs from a crafted file, checkpoints are complete
and current, a full disk never tears a file.

Reading: every checkpoint, weights file and dataset batch a command line names or finds is
a possible code-execution payload (a pickle whose ``__reduce__`` calls ``os.system``). The
run must refuse it with one line naming the file, exit status 2, and the payload's marker
file must never appear.

Writing: ``last.ckpt`` is the final state, ``best.ckpt`` the best held-out ``val/acc``;
a full disk in the middle of a checkpoint or summary write ends the run with one line and
leaves the previous files whole, loadable and without temporary leftovers.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import read_scalars, run_experiment
from resilience_helpers import (
    PAYLOADS,
    HalfWrite,
    cli_error,
    enospc,
    fd_path,
    interrupted_run,
    load,
    place_run,
    smoke_args,
    snapshot,
    temporary_files,
    versions,
    write_payload,
)

import kdbias.runs
from kdbias.modules import KLDistillModule
from kdbias.runs import CheckpointError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --------------------------------------------------------------------------- no code runs from files


@pytest.mark.parametrize("kind", PAYLOADS)
@pytest.mark.parametrize("how", ["auto-found", "explicit"])
def test_teacher_checkpoint_payload_is_refused_unrun(tmp_path, capsys, kind, how):
    """A payload as the teacher run's selected ``best.ckpt`` (found by ``model.teacher: auto``)
    or named with ``--model.teacher``: exit 2, one line naming the file, no code run."""
    marker, runs = tmp_path / "PWNED", tmp_path / "runs"
    path = place_run(runs, "teacher_resnet18", lambda p: write_payload(p, kind, marker))
    extra = [] if how == "auto-found" else ["--model.teacher", str(path)]
    line = cli_error("exp1", smoke_args("exp1", runs, *extra), capsys)
    assert str(path) in line and "no code is run" in line
    assert not marker.exists()
    assert versions(runs, "exp1") == []


@pytest.mark.parametrize("kind", PAYLOADS)
def test_resume_payload_last_ckpt_is_never_loaded(tmp_path, capsys, kind):
    """``--resume`` on a run whose ``last.ckpt`` is a payload: a warning line naming it, no code
    run; ``best.ckpt`` holds weights only (nothing to continue training from), so the run is kept
    and a new one starts."""
    runs, marker = tmp_path / "runs", tmp_path / "PWNED"
    run_dir = interrupted_run("baseline", runs)
    last = run_dir / "checkpoints" / "last.ckpt"
    write_payload(last, kind, marker)
    capsys.readouterr()
    new = run_experiment("baseline", runs, "--trainer.max_epochs", "3", "--resume")
    out = capsys.readouterr().out
    assert any(line.startswith("--resume: warning:") and str(last) in line for line in out.splitlines()), out
    assert f"--resume: no loadable checkpoint in {run_dir}; it is kept, and a new run starts." in out
    assert not marker.exists()
    assert new != run_dir and versions(runs, "baseline") == ["version_0", "version_1"]
    assert json.loads((new / "summary.json").read_text())["status"] == "complete"


def test_resume_payload_as_only_checkpoint_is_never_loaded(tmp_path, capsys):
    """``--resume`` on a run whose only checkpoint is a payload: no code run, the broken run
    is named and kept untouched, and a new run starts (nothing to resume from)."""
    runs, marker = tmp_path / "runs", tmp_path / "PWNED"
    run_dir = interrupted_run("baseline", runs)
    (run_dir / "checkpoints" / "best.ckpt").unlink()
    last = write_payload(run_dir / "checkpoints" / "last.ckpt", "in-hyper_parameters", marker)
    before = snapshot(run_dir)
    capsys.readouterr()
    new = run_experiment("baseline", runs, "--trainer.max_epochs", "3", "--resume")
    out = capsys.readouterr().out
    assert not marker.exists()
    assert any(str(last) in line and "warning" in line for line in out.splitlines()), out
    assert f"no loadable checkpoint in {run_dir}" in out
    assert new == runs / "baseline" / "version_1" and snapshot(run_dir) == before


@pytest.mark.parametrize("kind", PAYLOADS)
def test_pretrained_payload_runs_no_code(tmp_path, kind):
    """``--model.pretrained PAYLOAD.pth``: whatever the error, the payload never runs."""
    marker = tmp_path / "PWNED"
    path = write_payload(tmp_path / "weights.pth", kind, marker)
    with pytest.raises((SystemExit, Exception)):
        run_experiment("baseline", tmp_path / "runs", "--model.pretrained", str(path))
    assert not marker.exists()
    assert versions(tmp_path / "runs", "baseline") == []


@pytest.mark.parametrize("kind", PAYLOADS)
def test_pretrained_payload_is_one_line_exit_2(tmp_path, capsys, kind):
    marker = tmp_path / "PWNED"
    path = write_payload(tmp_path / "weights.pth", kind, marker)
    line = cli_error("baseline", smoke_args("baseline", tmp_path / "runs", "--model.pretrained", str(path)), capsys)
    assert str(path) in line
    assert not marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_load_from_checkpoint_payload_runs_no_code(tmp_path, kind):
    marker = tmp_path / "PWNED"
    path = write_payload(tmp_path / "student.ckpt", kind, marker)
    with pytest.raises((CheckpointError, pickle.UnpicklingError)):
        KLDistillModule.load_from_checkpoint(path)
    assert not marker.exists()


def _cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img.png"] * n,
    }


def _crafted(kind: str, marker: Path) -> bytes:
    good = pickle.dumps(_cifar_batch(20, 0), protocol=2)
    if kind == "payload":
        return pickle.dumps({b"data": _Reduce(marker), b"labels": [0]}, protocol=2)
    if kind == "truncated":
        return good[: len(good) // 3]
    if kind == "not-a-pickle":
        return b"\x89PNG\r\n\x1a\n" + os.urandom(256)
    if kind == "wrong-shape":
        batch = _cifar_batch(20, 0)
        batch[b"data"] = batch[b"data"].reshape(20, 3, 1024)
        return pickle.dumps(batch, protocol=2)
    raise ValueError(kind)


class _Reduce:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("kind", ["payload", "truncated", "not-a-pickle", "wrong-shape"])
def test_cifar_batch_crafted_is_one_line_exit_2(tmp_path, capsys, kind):
    """``--data.dataset cifar10 --data.data_dir DIR`` with a crafted ``data_batch_1`` (the
    other files valid): exit 2, one line naming the file, no code run, no run folder."""
    marker, runs = tmp_path / "PWNED", tmp_path / "runs"
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(2, 6)), "test_batch"]):
        (folder / name).write_bytes(pickle.dumps(_cifar_batch(20, i + 1), protocol=2))
    crafted = folder / "data_batch_1"
    crafted.write_bytes(_crafted(kind, marker))
    line = cli_error(
        "baseline",
        smoke_args("baseline", runs, "--data.dataset", "cifar10", "--data.data_dir", str(tmp_path / "data")),
        capsys,
    )
    assert str(crafted) in line
    assert not marker.exists()
    assert versions(runs, "baseline") == []


# --------------------------------------------------------------------------- checkpoints complete and current


def test_last_ckpt_is_final_epoch_best_ckpt_is_best_val_acc(tmp_path):
    """3 epochs whose last one is made worse (a constant head before its validation):
    ``last.ckpt`` still holds epoch 2, ``best.ckpt`` the epoch with the best logged val/acc."""
    batches = 4
    run_dir = run_experiment(
        "baseline",
        tmp_path / "runs",
        "--trainer.max_epochs",
        "3",
        "--trainer.limit_train_batches",
        str(batches),
        "--trainer.limit_val_batches",
        "3",
        "--trainer.callbacks+=helpers.ConstantHeadAt",
        "--trainer.callbacks.epoch=2",
        "--trainer.callbacks.label=3",
    )
    val = [v for _, v in read_scalars(run_dir, "val/acc")]
    assert len(val) == 3
    best_epoch = int(np.argmax(val))
    assert val[2] < max(val[:2]), f"precondition: the last epoch must not improve val/acc {val}"

    last, best = load(run_dir / "checkpoints" / "last.ckpt"), load(run_dir / "checkpoints" / "best.ckpt")
    assert (last["epoch"], last["global_step"]) == (2, 3 * batches)
    bias = last["state_dict"]["student.model.head.bias"]
    assert int(bias.argmax()) == 3 and float(bias.max()) == 10.0  # the final (spoiled) state
    assert best["epoch"] == best_epoch and best["global_step"] == (best_epoch + 1) * batches
    assert float(best["state_dict"]["student.model.head.bias"].max()) != 10.0
    assert "optimizer_states" not in best and "callbacks" not in best  # weights only; the state is last.ckpt's
    monitor = next(v for k, v in last["callbacks"].items() if "val/acc" in k)
    assert float(monitor["best_model_score"]) == pytest.approx(max(val))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_epoch"] == best_epoch and summary["selected_checkpoint"] == "checkpoints/best.ckpt"
    assert summary["best_val_acc"] == pytest.approx(max(val)) and summary["val_acc"] == pytest.approx(val[2])


@pytest.mark.parametrize("where", ["rename", "write"])
def test_full_disk_during_checkpoint_save_keeps_previous_checkpoints(tmp_path, capsys, monkeypatch, where):
    """ENOSPC at the second epoch's checkpoint save (the rename, or half-way through the
    write): one line, exit 2; epoch 0's ``last.ckpt`` and ``best.ckpt`` whole and loadable, no
    temporary file; once space is back, ``--resume`` completes the run."""
    runs = tmp_path / "runs"
    saves = {"n": 0}
    real_replace, real_fdopen = os.replace, os.fdopen

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".ckpt"):
            saves["n"] += 1
            if saves["n"] > 2:  # epoch 0 writes best.ckpt and last.ckpt
                raise enospc()
        return real_replace(src, dst, *args, **kwargs)

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        if ".ckpt." in fd_path(fd):
            saves["n"] += 1
            if saves["n"] > 2:
                return HalfWrite(handle)
        return handle

    monkeypatch.setattr(
        kdbias.runs.files.os, "replace" if where == "rename" else "fdopen", replace if where == "rename" else fdopen
    )
    args = smoke_args("baseline", runs, "--trainer.max_epochs", "2")
    line = cli_error("baseline", args, capsys)
    monkeypatch.undo()
    assert "No space left on device" in line
    run_dir = runs / "baseline" / "version_0"
    folder = run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert temporary_files(run_dir) == []
    assert load(folder / "last.ckpt")["epoch"] == 0 and load(folder / "best.ckpt")["epoch"] == 0
    assert not (run_dir / "summary.json").exists()

    assert run_experiment("baseline", runs, "--trainer.max_epochs", "2", "--resume") == run_dir
    assert json.loads((run_dir / "summary.json").read_text())["epochs_completed"] == 2
    assert load(folder / "last.ckpt")["epoch"] == 1


@pytest.mark.subprocess
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk_on_a_real_small_tmpfs(tmp_path, capsys):
    """A 5 MB tmpfs filled up during epoch 1 (``resilience_helpers`` is importable in-process):
    one line, exit 2, epoch 0's checkpoints whole, no temporary file."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        runs = mount / "runs"
        args = smoke_args(
            "baseline",
            runs,
            "--trainer.max_epochs",
            "2",
            "--trainer.callbacks+=resilience_helpers.FillDiskAt",
            "--trainer.callbacks.epoch=1",
            f"--trainer.callbacks.path={mount / 'filler'}",
        )
        line = cli_error("baseline", args, capsys)
        assert "No space left on device" in line
        run_dir = runs / "baseline" / "version_0"
        (mount / "filler").unlink()
        assert temporary_files(run_dir) == []
        assert load(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 0
        assert load(run_dir / "checkpoints" / "best.ckpt")["epoch"] == 0
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_summary_write_failure_leaves_the_previous_summary_whole(tmp_path, capsys, monkeypatch):
    """The final summary write (``status: complete``) runs out of space half-way: one line,
    exit 2; ``summary.json`` is still the whole previous one, no temporary file; ``--resume``
    then completes it."""
    runs = tmp_path / "runs"
    writes = {"n": 0}
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        if ".summary.json." in fd_path(fd):
            writes["n"] += 1
            if writes["n"] == 2:  # 1: at fit end ("trained"), 2: after the test ("complete")
                return HalfWrite(handle)
        return handle

    monkeypatch.setattr(kdbias.runs.files.os, "fdopen", fdopen)
    line = cli_error("baseline", smoke_args("baseline", runs), capsys)
    monkeypatch.undo()
    assert "No space left on device" in line and writes["n"] == 2
    run_dir = runs / "baseline" / "version_0"
    summary = json.loads((run_dir / "summary.json").read_text())  # whole, valid JSON
    assert summary["status"] == "trained" and summary["epochs_completed"] == 1
    assert temporary_files(run_dir) == []

    assert run_experiment("baseline", runs, "--resume") == run_dir
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"
    assert versions(runs, "baseline") == ["version_0"]


def test_atomic_write_keeps_the_old_file_on_error(tmp_path, monkeypatch):
    """``runs.atomic_write_json`` failing half-way: the old file unchanged, no temporary file."""
    path = tmp_path / "summary.json"
    kdbias.runs.atomic_write_json(path, {"status": "trained"})
    real_fdopen = os.fdopen
    monkeypatch.setattr(kdbias.runs.files.os, "fdopen", lambda fd, *a, **k: HalfWrite(real_fdopen(fd, *a, **k)))
    with pytest.raises(OSError) as error:
        kdbias.runs.atomic_write_json(path, {"status": "complete", "pad": "x" * 10000})
    assert error.value.errno == errno.ENOSPC
    assert json.loads(path.read_text()) == {"status": "trained"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
