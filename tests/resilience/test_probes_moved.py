"""A run folder copied or moved elsewhere resumes with its own files: Lightning's restored
checkpoint state (absolute best_model_path, last_model_path, best_k_models, dirpath) is
re-pointed to the folder it is in, so the final test uses the moved run's best.ckpt; a moved
run whose best checkpoint was not copied is refused in one line."""

from __future__ import annotations

import shutil

import lightning as L
from helpers import read_summary, run_experiment
from resilience_helpers import cli_error, interrupted_run, load, smoke_args

from kdbias import runs
from kdbias.data import CIFARDataModule
from kdbias.modules import TeacherModule

DROP_AT_EPOCH_1 = ["--trainer.callbacks+=helpers.ConstantHeadAt", "--trainer.callbacks.epoch=1"]


def _ckpt_paths(path) -> list[str]:
    """Every path the ModelCheckpoint states of a checkpoint hold."""
    out = []
    for key, state in load(path)["callbacks"].items():
        if key.startswith("ModelCheckpoint") or key.startswith("RunCheckpoint"):
            out += [state["dirpath"], state["best_model_path"], *state.get("best_k_models", {})]
    return [p for p in out if p]


def test_a_moved_run_resumes_and_tests_its_own_best_checkpoint(tmp_path):
    old, new = tmp_path / "old_location" / "runs", tmp_path / "scratch" / "runs"
    source = interrupted_run("baseline", old, epochs=2, crash_epoch=1)  # epoch 0 checkpointed
    saved = _ckpt_paths(source / "checkpoints" / "last.ckpt")
    assert saved and all(p.startswith(str(old)) for p in saved)  # absolute paths into the old folder
    shutil.copytree(old, new)
    shutil.rmtree(old)
    moved = new / "baseline" / source.name
    # epoch 1's held-out accuracy collapses, so best.ckpt stays epoch 0's: the moved folder's file
    run_dir = run_experiment("baseline", new, "--trainer.max_epochs", "2", "--resume", *DROP_AT_EPOCH_1)
    assert run_dir == moved and not old.exists()
    summary = read_summary(moved)
    assert summary["status"] == "complete" and summary["selected_checkpoint"] == "checkpoints/best.ckpt"
    assert load(moved / "checkpoints" / "best.ckpt")["epoch"] == 0
    assert all(p.startswith(str(new)) for p in _ckpt_paths(moved / "checkpoints" / "last.ckpt"))
    # the reference: the moved best.ckpt tested on its own, on the run's test batches
    config = runs.read_config(moved)
    module = TeacherModule.load_from_checkpoint(moved / "checkpoints" / "best.ckpt", weights_only=True)
    datamodule = CIFARDataModule(**config["data"])
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_test_batches=config["trainer"]["limit_test_batches"],
    )
    reference = trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/acc"]
    assert summary["test_acc"] == reference


def test_a_moved_run_without_its_best_checkpoint_is_refused(tmp_path, capsys):
    old, new = tmp_path / "old" / "runs", tmp_path / "new" / "runs"
    source = interrupted_run("baseline", old, epochs=2, crash_epoch=1)
    shutil.copytree(old, new)
    shutil.rmtree(old)
    moved = new / "baseline" / source.name
    (moved / "checkpoints" / "best.ckpt").unlink()
    line = cli_error("baseline", smoke_args("baseline", new, "--trainer.max_epochs", "2", "--resume"), capsys)
    assert f"the run was moved from {old / 'baseline' / source.name}" in line and "best.ckpt is not in" in line
    assert not (moved / "summary.json").exists()


def test_a_moved_student_resumes_with_its_moved_teacher(tmp_path, runs_with_teacher):
    """exp1's config.yaml names its teacher by absolute path: after moving the whole runs folder,
    the same teacher (same run, new place) is not a configuration change."""
    old, new = runs_with_teacher, tmp_path / "elsewhere" / "runs"
    source = interrupted_run("exp1", old, epochs=2, crash_epoch=1)
    teacher_before = runs.read_config(source)["model"]["teacher"]
    assert teacher_before.startswith(str(old))
    shutil.move(str(old), str(new))
    moved = new / "exp1" / source.name
    assert run_experiment("exp1", new, "--trainer.max_epochs", "2", "--resume") == moved
    summary = read_summary(moved)
    assert summary["status"] == "complete" and summary["teacher"]["source"].startswith(str(new))
