"""Every bad command-line value: one line on stderr (``<name>.py: error: ...``), exit status
2, and no run folder left behind (``kdbias.cli.main`` in this process; the real script's
exit status is in ``test_bad_input.py``)."""

from __future__ import annotations

import json
import shutil
import urllib.error

import pytest
from helpers import TINY_ANALYTICS as ANALYTICS
from helpers import run_experiment
from resilience_helpers import cli_error, smoke_args, versions

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: case -> (experiment, extra arguments, what the one line must say)
BAD_FLAGS = {
    "max_epochs=0": ("baseline", ["--trainer.max_epochs", "0"], "trainer.max_epochs must be an integer >= 1, got 0"),
    "max_epochs=-1": ("baseline", ["--trainer.max_epochs", "-1"], "trainer.max_epochs must be an integer >= 1, got -1"),
    "limit_train_batches=0": (
        "baseline",
        ["--trainer.limit_train_batches", "0"],
        "trainer.limit_train_batches must be",
    ),
    "log_every_n_steps=0": (
        "baseline",
        ["--trainer.log_every_n_steps", "0"],
        "trainer.log_every_n_steps must be >= 1, got 0",
    ),
    "lr=0": ("baseline", ["--model.optim.lr", "0"], "optim.lr must be > 0, got 0.0"),
    "lr=-1": ("baseline", ["--model.optim.lr", "-1"], "optim.lr must be > 0, got -1.0"),
    "warmup_epochs=-1": ("baseline", ["--model.optim.warmup_epochs", "-1"], "optim.warmup_epochs must be >= 0"),
    "min_lr_ratio=2": ("baseline", ["--model.optim.min_lr_ratio", "2"], "optim.min_lr_ratio must be in [0, 1], got 2"),
    "weight_decay=-0.1": ("baseline", ["--model.optim.weight_decay", "-0.1"], "optim.weight_decay must be >= 0"),
    "label_smoothing=1": (
        "baseline",
        ["--model.optim.label_smoothing", "1"],
        "optim.label_smoothing must be in [0, 1), got 1",
    ),
    "alpha=1.5": ("exp1", ["--model.alpha", "1.5"], "alpha must lie in [0, 1], got 1.5"),
    "temperature=0": ("exp1", ["--model.temperature", "0"], "temperature must be > 0, got 0"),
    "lambda_cka=-1": ("exp3", ["--model.lambda_cka", "-1"], "lambda_cka and lambda_tok must be >= 0, got -1"),
    "batch_size=0": ("baseline", ["--data.batch_size", "0"], "batch_size must be an int >= 1, got 0"),
    "holdout=-1": ("baseline", ["--data.holdout", "-1"], "holdout must be None"),
    "dataset=nope": (
        "baseline",
        ["--data.dataset", "nope"],
        "unknown dataset 'nope'; valid: cifar10, cifar100, digits",
    ),
    "accelerator=gpu": ("baseline", ["--trainer.accelerator", "gpu"], "gpu"),
    "check_val_every_n_epoch=0": (
        "baseline",
        ["--trainer.check_val_every_n_epoch", "0"],
        "trainer.check_val_every_n_epoch must be None or an integer >= 1, got 0",
    ),
    "val_check_interval=0": ("baseline", ["--trainer.val_check_interval", "0"], "trainer.val_check_interval must be"),
    "compile=no_such_backend": (
        "baseline",
        ["--model.compile", "no_such_backend"],
        "compile must be true, false or an installed torch.compile backend",
    ),
    "allow_changed-without-resume": (
        "baseline",
        ["--allow_changed", "trainer.max_epochs"],
        "--allow_changed applies to --resume only",
    ),
    "allow_changed-nothing-to-resume": (
        "baseline",
        ["--resume", "--allow_changed", "trainer.max_epochs"],
        "there is no run of baseline seed 0 on digits (smoke preset)",
    ),
    "teacher_image_size=50": ("exp3", ["--model.teacher_image_size", "50"], "is not a multiple of dinov2_vits14's"),
    "teacher-layer=9": ("exp3", ["--model.layer_pairs", "[[0, 9]]"], "block index 9 is out of range"),
    "student-layer=5": ("exp3", ["--model.layer_pairs", "[[5, 0]]"], "block index 5 is out of range"),
    "alpha=2-before-teacher-lookup": ("exp1-no-teacher", ["--model.alpha", "2"], "alpha must lie in [0, 1], got 2"),
    "typo-gets-a-suggestion": (
        "baseline",
        ["--model.optim.lrr", "0.1"],
        "--model.optim.lrr: did you mean --model.optim.lr ",
    ),
    "unbiased-cka-batch=3": (
        "exp3",
        ["--data.batch_size", "3", "--model.unbiased_cka", "true"],
        "needs at least 4 images per device per step, but the batch is 3",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_flag_is_one_line_exit_2_and_no_folder(request, tmp_path, capsys, case):
    name, extra, expected = BAD_FLAGS[case]
    runs = request.getfixturevalue("runs_with_teacher") if name == "exp1" else tmp_path / "runs"
    name = name.removesuffix("-no-teacher")  # no teacher run: the value is refused before the lookup
    line = cli_error(name, smoke_args(name, runs, *extra), capsys)
    assert expected in line, line
    assert versions(runs, name) == []
    assert not (runs / name).exists() or not any((runs / name).iterdir())


def test_cifar_without_files_offline_names_the_fixes(tmp_path, capsys, monkeypatch):
    import torchvision.datasets.cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution (offline test)")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    runs, data = tmp_path / "runs", tmp_path / "nodata"
    line = cli_error(
        "baseline", smoke_args("baseline", runs, "--data.dataset", "cifar10", "--data.data_dir", str(data)), capsys
    )
    assert "Dataset 'cifar10' not found" in line and "download failed" in line
    assert str(data / "cifar-10-batches-py") in line and "data_batch_1" in line  # where the files go
    assert "network access" in line and 'dataset="digits"' in line  # the fixes, the offline data
    assert versions(runs, "baseline") == []


@pytest.mark.parametrize("where", ["file", "below-a-file"])
def test_runs_dir_that_is_a_file(tmp_path, capsys, where):
    path = tmp_path / "runs.txt"
    path.write_text("not a folder")
    runs = path if where == "file" else path / "sub"
    line = cli_error("baseline", smoke_args("baseline", runs), capsys)
    assert "Not a directory" in line and str(path) in line
    assert path.read_text() == "not a folder"


def test_auto_found_teacher_of_the_wrong_family_is_refused(tmp_path, capsys, baseline_run):
    """A baseline (DeiT) run placed as the newest teacher_resnet18 run: exp1 names the family."""
    runs = tmp_path / "runs"
    shutil.copytree(baseline_run, runs / "teacher_resnet18" / "version_0")
    line = cli_error("exp1", smoke_args("exp1", runs), capsys)
    assert "is a VisionTransformer (deit_tiny_p4)" in line and "exp1 distils from a ResNet" in line
    assert "--model.teacher" in line
    assert versions(runs, "exp1") == []


def test_explicit_teacher_of_another_family_is_accepted(tmp_path, baseline_run):
    """Named explicitly with ``--model.teacher``, a DeiT teacher is the user's choice."""
    best = baseline_run / "checkpoints" / "best.ckpt"
    run_dir = run_experiment("exp1", tmp_path / "runs", "--model.teacher", str(best))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["teacher"]["name"] == "deit_tiny_p4" and summary["teacher"]["family"] == "VisionTransformer"
    assert summary["teacher"]["source"] == str(best)


def test_cka_pairs_on_every_diagonal_cell_refused_before_training_or_summarised(tmp_path):
    """A valid ``--model.layer_pairs`` that leaves no untrained diagonal CKA cell: refused at
    start-up (nothing trained, no folder) or trained to the end with the untrained contrast
    left empty (the trained cells and the whole-diagonal figures are still measured)."""
    from kdbias.cli import main

    runs, record = tmp_path / "runs", tmp_path / "batches.json"
    args = smoke_args(
        "exp3", runs, *ANALYTICS, "--trainer.callbacks+=helpers.RecordBatches", f"--trainer.callbacks.path={record}"
    )
    try:
        run_dir = main("exp3", args)
    except SystemExit as stop:
        assert stop.code == 2
        assert not record.exists(), "the configuration was refused only after training"
        assert versions(runs, "exp3") == []
    else:
        summary = json.loads((run_dir / "summary.json").read_text())
        entry = summary["cka"]["exp3"]
        assert summary["status"] == "complete" and entry["untrained_contrast"] is None
        assert isinstance(entry["trained"], float) and isinstance(entry["contrast"], float)


def test_config_file_class_path_outside_kdbias_is_not_imported(tmp_path, capsys):
    """A ``--config`` file naming ``class_path: this.Nothing`` is refused before anything is
    imported (``this`` would print the Zen of Python on import)."""
    import sys

    config = tmp_path / "c.yaml"
    config.write_text("trainer:\n  callbacks:\n    - class_path: this.Nothing\n")
    sys.modules.pop("this", None)
    line = cli_error("baseline", smoke_args("baseline", tmp_path / "runs", "--config", str(config)), capsys)
    assert "names class_path 'this.Nothing'" in line and "not imported" in line
    assert "this" not in sys.modules


def test_bug_in_a_user_callback_keeps_its_traceback(tmp_path):
    """A ``TypeError`` raised by a callback during fit is a bug, not input: it propagates
    (traceback, exit status 1 from the interpreter), and no folder is left."""
    with pytest.raises(TypeError, match="broken callback"):
        run_experiment("baseline_b512", tmp_path / "runs", "--trainer.callbacks+=helpers.RaisesOnTrainStart")
    assert versions(tmp_path / "runs", "baseline_b512") == []


def test_teacher_given_as_a_typed_spec(runs_with_teacher):
    """``--model.teacher`` as ``class_path``/``init_args``: ``path: auto`` is resolved like the
    shorthand, and the run records the spec with the checkpoint it found."""
    spec = {"class_path": "kdbias.teacher.CheckpointTeacher", "init_args": {"path": "auto", "family": "ResNet"}}
    run_dir = run_experiment("exp1", runs_with_teacher, "--model.teacher", json.dumps(spec))
    summary = json.loads((run_dir / "summary.json").read_text())
    found = str(next((runs_with_teacher / "teacher_resnet18").glob("version_*/checkpoints/best.ckpt")))
    assert summary["status"] == "complete" and summary["teacher"]["source"] == found
    import yaml

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["teacher"]
    assert saved["class_path"] == "kdbias.teacher.CheckpointTeacher" and saved["init_args"]["path"] == found
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert hparams["teacher"] == {
        "class_path": "kdbias.teacher.CheckpointTeacher",
        "init_args": spec["init_args"] | {"path": found},
    }
