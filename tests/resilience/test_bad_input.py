"""Bad input that names files or architectures: a clear error naming the cause and the fix,
raised before training (one line, exit status 2, no run folder).

The command line (``kdbias.cli.main``, what ``experiments/*.py`` call) prints the message
on stderr; as a library (the modules, ``FrozenTeacher``) the same errors are exceptions.
The flag ranges are ``test_probes_flags.py``.
"""

from __future__ import annotations

import subprocess

import pytest
import torch
from helpers import TINY_VIT
from resilience_helpers import REPO, cli_error, error_lines, script, script_env, smoke_args, versions

from kdbias.models import MODEL_NAMES, build_model
from kdbias.modules import TeacherModule
from kdbias.runs import CheckpointError
from kdbias.teacher import FrozenTeacher

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_unknown_architecture_lists_the_valid_ones(tmp_path, capsys):
    line = cli_error("baseline", smoke_args("baseline", tmp_path, "--model.arch", "resnet19"), capsys)
    assert "unknown model 'resnet19'" in line and all(name in line for name in MODEL_NAMES)
    assert versions(tmp_path, "baseline") == []


def test_teacher_checkpoint_missing_names_the_fix(tmp_path, capsys):
    missing = tmp_path / "nope" / "best.ckpt"
    line = cli_error("exp1", smoke_args("exp1", tmp_path, "--model.teacher", str(missing)), capsys)
    assert str(missing) in line and "not found" in line
    assert "experiments/teacher_resnet18.py" in line
    assert versions(tmp_path, "exp1") == []


def test_teacher_checkpoint_missing_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope" / "best.ckpt"
    line = cli_error("exp1", smoke_args("exp1", tmp_path, "--model.teacher", str(missing)), capsys)
    assert f"checkpoint not found: {missing}" in line
    assert versions(tmp_path, "exp1") == []


def test_teacher_checkpoint_corrupt(tmp_path, capsys):
    corrupt = tmp_path / "best.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint \x00\xff" * 64)
    line = cli_error("exp1", smoke_args("exp1", tmp_path, "--model.teacher", str(corrupt)), capsys)
    assert f"cannot load checkpoint {corrupt}" in line and "re-run the experiment" in line
    assert versions(tmp_path, "exp1") == []


def test_teacher_checkpoint_for_another_dataset(tmp_path, capsys):
    teacher = TeacherModule("deit_tiny_p4", num_classes=100, dataset="cifar100", arch_kwargs=TINY_VIT)
    path = tmp_path / "cifar100_teacher.ckpt"
    torch.save({"state_dict": teacher.state_dict(), "hyper_parameters": dict(teacher.hparams)}, path)
    line = cli_error("exp1", smoke_args("exp1", tmp_path, "--model.teacher", str(path)), capsys)
    assert f"teacher checkpoint {path} was trained on 'cifar100' with 100 classes" in line
    assert "this run needs 'digits' with 10" in line
    assert versions(tmp_path, "exp1") == []
    with pytest.raises(CheckpointError, match="trained on 'cifar100'"):  # as a library: an exception
        FrozenTeacher.from_checkpoint(path, "digits", 10)


@pytest.mark.parametrize("key", ["checkpoint_path", "pretrained_cfg_overlay", "pretrained_cfg"])
def test_teacher_checkpoint_arch_kwargs_that_load_files_are_refused(tmp_path, capsys, key):
    """A checkpoint's ``arch_kwargs`` may only shape the network: a key that makes timm read a
    file is refused in one line before any network is built (the named file is never read)."""
    teacher = TeacherModule("deit_tiny_p4", dataset="digits", arch_kwargs=TINY_VIT)
    hparams = dict(teacher.hparams)
    elsewhere = str(tmp_path / "never_read.pth")
    hparams["arch_kwargs"] = {**TINY_VIT, key: elsewhere if key == "checkpoint_path" else {"file": elsewhere}}
    path = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": teacher.state_dict(), "hyper_parameters": hparams}, path)
    line = cli_error("exp1", smoke_args("exp1", tmp_path, "--model.teacher", str(path)), capsys)
    assert f"teacher checkpoint {path}: arch_kwargs {key} are not arguments of VisionTransformer" in line
    with pytest.raises(CheckpointError, match=key):
        FrozenTeacher.from_checkpoint(path, "digits", 10)


def test_student_checkpoint_as_teacher_is_refused(tmp_path, capsys):
    """A distilled student's checkpoint is not a teacher (the KL student of an exp1 run)."""
    from helpers import kl_module

    student = kl_module()
    path = tmp_path / "student.ckpt"
    torch.save({"state_dict": student.state_dict(), "hyper_parameters": dict(student.hparams)}, path)
    line = cli_error("exp1", smoke_args("exp1", tmp_path, "--model.teacher", str(path)), capsys)
    assert f"{path} is a distilled student's checkpoint" in line


def test_weights_file_of_another_architecture(tmp_path, capsys):
    path = tmp_path / "resnet18.pth"
    torch.save(build_model("resnet18_cifar", num_classes=10).state_dict(), path)
    line = cli_error("baseline", smoke_args("baseline", tmp_path, "--model.pretrained", str(path)), capsys)
    assert f"weights file {path} does not fit timm architecture 'deit_tiny_patch16_224" in line
    assert "Pass a weights file saved from 'deit_tiny_patch16_224'" in line
    assert versions(tmp_path, "baseline") == []


def test_weights_file_missing(tmp_path, capsys):
    path = tmp_path / "nope.safetensors"
    line = cli_error("baseline", smoke_args("baseline", tmp_path, "--model.pretrained", str(path)), capsys)
    assert f"pretrained weights file not found: {path}" in line
    assert versions(tmp_path, "baseline") == []


def test_layer_index_beyond_the_depth(tmp_path, capsys):
    """The tiny smoke exp3 student and teacher have 2 blocks each."""
    line = cli_error("exp3", smoke_args("exp3", tmp_path, "--model.layer_pairs", "[[0, 0], [5, 1]]"), capsys)
    assert "block index 5 is out of range" in line and "2 blocks" in line and "valid indices 0..1" in line
    assert versions(tmp_path, "exp3") == []


@pytest.mark.subprocess
def test_exp1_script_without_teacher_run_names_the_command_that_makes_one(tmp_path):
    """The real script: exit status 2, one error line on stderr, no traceback, no folder."""
    done = subprocess.run(
        script("exp1") + ["--smoke", "--runs_dir", str(tmp_path)],
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = error_lines(done.stderr, "exp1")
    assert len(lines) == 1, done.stderr
    others = [line for line in done.stderr.splitlines() if line.strip() and line not in lines]
    assert all(line.startswith("Seed set to") for line in others), done.stderr  # Lightning's log, not an error
    assert "no complete teacher_resnet18 run on 'digits' (smoke preset)" in lines[0]
    assert "`python experiments/teacher_resnet18.py --smoke`" in lines[0] and "--model.teacher" in lines[0]
    assert not (tmp_path / "exp1").exists()
