"""Teacher specs are checked like the student: a random teacher refuses weight-loading
arguments (it would distil from a trained net while recording "random weights"), every spec
refuses arguments its network does not take, soft KL refuses a headless teacher, all in one
line (exit 2) before any folder is claimed; ``--model.teacher random:<arch>`` (the README's
form) is a random teacher, not a checkpoint path."""

from __future__ import annotations

import json

import pytest
from helpers import TINY_RESNET, read_summary, run_experiment
from resilience_helpers import cli_error, smoke_args, versions

from kdbias.teacher import CheckpointTeacher, PretrainedTeacher, RandomTeacher, teacher_spec

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _spec(cls: str, **init_args) -> str:
    return json.dumps({"class_path": f"kdbias.teacher.{cls}", "init_args": init_args})


BAD_SPECS = {
    "random-checkpoint_path": (
        _spec("RandomTeacher", arch_kwargs={"checkpoint_path": "trained.pth"}),
        "checkpoint_path",
    ),
    "random-pretrained": (_spec("RandomTeacher", arch_kwargs={"pretrained": True}), "pretrained"),
    "random-num_classes": (_spec("RandomTeacher", arch_kwargs={"num_classes": 1000}), "num_classes"),
    "random-bogus": (_spec("RandomTeacher", arch_kwargs={"bogus_kw": 1}), "bogus_kw"),
    "pretrained-checkpoint_path": (
        _spec("PretrainedTeacher", arch="resnet18_cifar", weights=None, arch_kwargs={"checkpoint_path": "x.pth"}),
        "checkpoint_path",
    ),
    "pretrained-bogus": (_spec("PretrainedTeacher", arch="resnet18_cifar", arch_kwargs={"bogus_kw": 1}), "bogus_kw"),
    "headless-for-soft-kl": (_spec("PretrainedTeacher", arch="resnet18_cifar", weights=None), "headless"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS), ids=list(BAD_SPECS))
def test_bad_teacher_spec_is_one_line_before_anything_is_claimed(tmp_path, capsys, case):
    spec, says = BAD_SPECS[case]
    runs = tmp_path / "runs"
    trained = tmp_path / "trained.pth"  # never read: its absence is not what is reported
    line = cli_error("exp1", smoke_args("exp1", runs, "--model.teacher", spec), capsys)
    assert says in line and "Traceback" not in line
    assert versions(runs, "exp1") == [] and not trained.exists()


def test_random_teacher_refuses_weight_loading_arguments_directly():
    for kwargs in ({"checkpoint_path": "trained.pth"}, {"pretrained": True}, {"pretrained_cfg_overlay": {}}):
        with pytest.raises(ValueError, match="Weights come only from"):
            RandomTeacher("resnet18_cifar", kwargs)
    assert RandomTeacher("resnet18_cifar", TINY_RESNET).arch_kwargs == TINY_RESNET  # shape arguments are fine


def test_random_shorthand_is_a_random_teacher():
    assert teacher_spec("random:resnet18_cifar") == RandomTeacher("resnet18_cifar")
    assert teacher_spec("runs/x/checkpoints/best.ckpt") == CheckpointTeacher("runs/x/checkpoints/best.ckpt")
    assert isinstance(teacher_spec({"class_path": "PretrainedTeacher", "init_args": {}}), PretrainedTeacher)


def test_readme_random_teacher_command_works_as_printed(tmp_path):
    """``--model.teacher random:resnet18_cifar`` trains exp1 from the untrained network (no
    teacher run exists under this runs folder) and records it as random."""
    run_dir = run_experiment("exp1", tmp_path / "runs", "--model.teacher", "random:resnet18_cifar")
    summary = read_summary(run_dir)
    assert summary["status"] == "complete"
    assert summary["teacher"]["source"] == "random" and summary["teacher"]["family"] == "ResNet"
