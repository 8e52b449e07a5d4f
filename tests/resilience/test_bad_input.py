"""Bad input: each a clear error naming the cause and the fix, raised before training.

The command line (``Experiment.main``, what ``experiments/*.py`` call) prints the message
on stderr and exits with status 2, without a traceback; as a library (``Experiment.run``,
the modules) the same errors propagate as exceptions.
"""

from __future__ import annotations

import subprocess
import urllib.error

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from resilience_helpers import REPO, script, script_env

from kdbias.data import CIFARDataModule
from kdbias.models import MODEL_NAMES, build_model
from kdbias.modules import CKADistillModule, TeacherModule
from kdbias.recipes import BASELINE, EXP1, EXP3

TINY_VIT = dict(depth=1, embed_dim=48, num_heads=3)


@pytest.fixture(autouse=True)
def _no_traceback_env(monkeypatch):
    monkeypatch.delenv("KDBIAS_TRACEBACK", raising=False)


def _cli_error(experiment, argv: list[str], capsys) -> str:
    """Run ``experiment.main(argv)``; assert exit status 2 and no traceback; return stderr."""
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{experiment.name}.py: error: " in err and "Traceback" not in err
    return err


def _smoke(runs) -> list[str]:
    return ["--smoke", "--no-analytics", "--runs-dir", str(runs)]


def test_unknown_dataset_lists_the_valid_ones(tmp_path, capsys):
    err = _cli_error(BASELINE, [*_smoke(tmp_path), "--dataset", "cifar11"], capsys)
    assert "unknown dataset 'cifar11'" in err and "cifar10, cifar100, digits" in err
    assert not (tmp_path / "baseline").exists()  # before any run directory, let alone training
    with pytest.raises(ValueError, match="unknown dataset"):  # as a library: an exception
        BASELINE.run([*_smoke(tmp_path), "--dataset", "cifar11"])


def test_unknown_architecture_lists_the_valid_ones(tmp_path, capsys):
    err = _cli_error(BASELINE, [*_smoke(tmp_path), "--model", "resnet19"], capsys)
    assert "unknown model 'resnet19'" in err and all(name in err for name in MODEL_NAMES)
    assert not (tmp_path / "baseline").exists()


def test_cifar_missing_offline_names_the_fixes(tmp_path, capsys, monkeypatch):
    import torchvision.datasets.cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known (offline test)")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    err = _cli_error(BASELINE, [*_smoke(tmp_path / "runs"), "--dataset", "cifar10", "--data-dir",
                                str(tmp_path / "nodata")], capsys)
    assert "Dataset 'cifar10' not found" in err and "download failed" in err
    assert "cifar-10-batches-py" in err and 'dataset="digits"' in err  # where to put the files; the offline data
    assert not list((tmp_path / "runs").rglob("*.ckpt")) and not list((tmp_path / "runs").rglob("events.*"))


def test_teacher_checkpoint_missing(tmp_path, capsys):
    missing = tmp_path / "nope" / "best.ckpt"
    err = _cli_error(EXP1, [*_smoke(tmp_path), "--teacher-ckpt", str(missing)], capsys)
    assert f"Teacher checkpoint not found: {missing}" in err
    assert "experiments/teacher_resnet18.py" in err and "--teacher-ckpt" in err
    assert not (tmp_path / "exp1").exists()


def test_teacher_checkpoint_corrupt(tmp_path, capsys):
    corrupt = tmp_path / "best.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint \x00\xff" * 64)
    err = _cli_error(EXP1, [*_smoke(tmp_path), "--teacher-ckpt", str(corrupt)], capsys)
    assert f"Teacher checkpoint {corrupt} could not be read" in err and "corrupt" in err
    assert "re-run the teacher" in err
    assert not (tmp_path / "exp1").exists()


def test_teacher_checkpoint_for_another_number_of_classes(tmp_path, capsys):
    teacher = TeacherModule("deit_tiny_p4", num_classes=100, dataset="cifar100", model_kwargs=TINY_VIT)
    path = tmp_path / "cifar100_teacher.ckpt"
    torch.save({"state_dict": teacher.state_dict(), "hyper_parameters": dict(teacher.hparams)}, path)
    err = _cli_error(EXP1, [*_smoke(tmp_path), "--teacher-ckpt", str(path)], capsys)
    assert "predicts 100 classes but the student's dataset has 10" in err
    assert "--dataset cifar100" in err
    assert not (tmp_path / "exp1").exists()


def test_weights_file_of_another_architecture(tmp_path, capsys):
    path = tmp_path / "resnet18.pth"
    torch.save(build_model("resnet18_cifar", num_classes=10).state_dict(), path)
    err = _cli_error(BASELINE, [*_smoke(tmp_path), "--pretrained", str(path)], capsys)
    assert f"weights file {path} does not fit timm architecture 'deit_tiny_patch16_224" in err
    assert "Pass a weights file saved from 'deit_tiny_patch16_224'" in err
    assert not (tmp_path / "baseline").exists()


def test_layer_index_beyond_the_depth(tmp_path, capsys):
    err = _cli_error(EXP3, [*_smoke(tmp_path), "--layer-pairs", "3:3,12:11"], capsys)
    assert "block index 12 is out of range" in err and "12 blocks" in err and "valid indices 0..11" in err
    assert not (tmp_path / "exp3").exists()


class _CountBatches(Callback):
    batches = 0

    def on_train_batch_start(self, *args, **kwargs):
        type(self).batches += 1


def test_cka_batch_below_4_with_the_unbiased_estimator():
    module = CKADistillModule(
        student="deit_tiny_p4", teacher="dinov2_vits14", teacher_pretrained=None, teacher_image_size=56,
        layer_pairs=[(0, 0)], unbiased_cka=True, num_classes=10, dataset="digits", model_kwargs=TINY_VIT,
        teacher_kwargs=TINY_VIT,
    )
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[_CountBatches()])
    with pytest.raises(ValueError, match=r"needs at least 4 images per device per step, but the batch is 3") as info:
        trainer.fit(module, datamodule=CIFARDataModule("digits", batch_size=3))
    assert "Raise --batch-size" in str(info.value) and "unbiased_cka=False" in str(info.value)
    assert _CountBatches.batches == 0  # raised in setup, before the sanity check and training


def test_global_batch_not_divisible_by_the_devices(tmp_path, capsys):
    err = _cli_error(BASELINE, [*_smoke(tmp_path), "--global-batch-size", "30", "--devices", "4",
                                "--num-nodes", "2"], capsys)
    assert "--global-batch-size 30 does not divide over 8 processes (--devices 4 x --num-nodes 2)" in err
    assert "multiple of 8 (e.g. 24 or 32)" in err and "--batch-size" in err
    assert not (tmp_path / "baseline").exists()


def test_global_batch_sets_the_per_device_batch():
    from kdbias.experiment import resolve_batch_size

    config = BASELINE.parse(["--smoke", "--global-batch-size", "2048", "--devices", "2", "--num-nodes", "2"])
    resolve_batch_size(config)
    assert config.batch_size == 512


def test_exp1_without_teacher_run_names_the_command_that_makes_one(tmp_path):
    """The real script: exit status 2, the message on stderr, no traceback."""
    done = subprocess.run(script("exp1") + ["--smoke", "--runs-dir", str(tmp_path)], cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    message = [line for line in done.stderr.splitlines() if "exp1.py: error:" in line]
    assert len(message) == 1, done.stderr[-3000:]
    assert "No completed teacher_resnet18 run on 'digits'" in message[0]
    assert "`python experiments/teacher_resnet18.py --smoke`" in message[0] and "--teacher-ckpt" in message[0]
    assert not (tmp_path / "exp1").exists()
