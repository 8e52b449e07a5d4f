"""``python -m kdbias.evaluate`` and the README's "Evaluate and predict" section on a real tiny
smoke run: the test accuracy its summary.json holds, numpy accuracy of the predicted logits."""

from __future__ import annotations

import json
import logging
import re
import shlex

import lightning as L
import numpy as np
import pytest
import torch
from helpers import ROOT, kl_module, quiet_trainer, read_summary, run_experiment, teacher_checkpoint
from lightning.pytorch.callbacks import ModelCheckpoint

from kdbias import evaluate
from kdbias.teacher import FrozenTeacher

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
README = (ROOT / "README.md").read_text()
SECTION = README.split("## Evaluate and predict", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def exp3_root(tmp_path_factory):
    """A folder holding ``runs/exp3/version_0``: a tiny ``exp3 --smoke`` run tested on the whole test split."""
    root = tmp_path_factory.mktemp("evaluate")
    run_experiment("exp3", root / "runs", "--trainer.limit_test_batches", "1.0")
    return root


def _no_teacher_builds(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was built")

    monkeypatch.setattr(FrozenTeacher, "from_checkpoint", refuse)
    monkeypatch.setattr(FrozenTeacher, "from_pretrained", refuse)


def test_readme_command_prints_the_summarys_test_accuracy(exp3_root, monkeypatch, capsys):
    (command,) = [line for line in SECTION.splitlines() if line.startswith("python -m kdbias.evaluate")]
    args = shlex.split(command.split("#")[0])[3:]
    monkeypatch.chdir(exp3_root)
    _no_teacher_builds(monkeypatch)
    summary = read_summary(exp3_root / "runs" / "exp3" / "version_0")
    assert args == [f"runs/exp3/version_0/{summary['selected_checkpoint']}"]
    capsys.readouterr()
    evaluate.main(args)
    (line,) = capsys.readouterr().out.splitlines()
    assert f"test_acc {summary['test_acc']:.4f} " in line and f"test_loss {summary['test_loss']:.4f} " in line
    assert "360 images, digits test split, CKADistillModule" in line
    evaluate.main([*args, "--json", "--batch_size", "90"])
    result = json.loads(capsys.readouterr().out)
    assert result["test_acc"] == pytest.approx(summary["test_acc"], abs=1e-7)
    assert result["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    assert result["images"] == summary["test_images"] == 360


def test_readme_snippet_predicts_the_summarys_accuracy(exp3_root, monkeypatch):
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", SECTION, flags=re.S)]
    monkeypatch.chdir(exp3_root)
    _no_teacher_builds(monkeypatch)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    logits, dm = namespace["logits"], namespace["dm"]
    assert namespace["module"].teacher is None and logits.shape == (360, 10) and logits.dtype == torch.float32
    accuracy = np.mean(logits.numpy().argmax(axis=1) == dm.test_labels.numpy())
    assert accuracy == pytest.approx(read_summary(exp3_root / "runs" / "exp3" / "version_0")["test_acc"], abs=1e-7)
    torch.testing.assert_close(namespace["first"], logits[:8], atol=1e-5, rtol=1e-5)


def test_a_checkpoint_outside_a_run_names_its_module(digits_dm, tmp_path):
    """A KL student's checkpoint with no run folder: its class from the checkpoint, no teacher read."""
    module = kl_module(str(teacher_checkpoint(tmp_path / "teacher", digits_dm)))
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "student", filename="last")],
    )
    trainer.fit(module, datamodule=digits_dm)
    (tmp_path / "teacher" / "last.ckpt").unlink()  # evaluating the student must not need it
    result = evaluate.evaluate(tmp_path / "student" / "last.ckpt", accelerator="cpu")
    module.eval()
    with torch.no_grad():
        logits = module(digits_dm.test_images)
    expected = np.mean(logits.numpy().argmax(axis=1) == digits_dm.test_labels.numpy())
    assert result["module"] == "KLDistillModule" and result["images"] == 360
    assert result["test_acc"] == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("kind", ["missing", "not_torch", "not_kdbias"])
def test_bad_checkpoint_is_one_line_exit_2(kind, tmp_path, capsys):
    path = tmp_path / "model.ckpt"
    if kind == "not_torch":
        path.write_text("not a checkpoint\n")
    elif kind == "not_kdbias":
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([str(path)])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("python -m kdbias.evaluate: error: ") and str(path) in line
    assert ("not found" if kind == "missing" else "not a") in line


def test_measurement_trainer_prints_no_setup_lines_and_restores_lightnings_logger(caplog, tmp_path):
    """A throwaway measurement Trainer says nothing about its devices or batch limits; the
    training Trainer afterwards still does (the logger's level is restored)."""
    source = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    before = source.level
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        level = source.level
        evaluate.measurement_trainer({}, "cpu", limit_val_batches=1)
        assert not [r for r in caplog.records if "available" in r.getMessage() or "limit_val" in r.getMessage()]
        assert source.level == level
        L.Trainer(
            default_root_dir=tmp_path,
            accelerator="cpu",
            devices=1,
            logger=False,
            limit_val_batches=1,
            enable_checkpointing=False,
        )
        assert any("GPU available" in r.getMessage() for r in caplog.records)
    assert source.level == before
