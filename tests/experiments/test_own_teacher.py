"""Any teacher: a PretrainedTeacher keeps a head that fits the dataset, a soft-KL student refuses a
headless one in one line before anything is built, and a teacher run of your own
(experiments/teacher.py --name) is named by students with --model.teacher run:NAME."""

from __future__ import annotations

import json
import time

import pytest
import timm
import torch
from helpers import read_summary, run_experiment
from safetensors.torch import save_file

from kdbias.cli import main, own_teacher
from kdbias.data import CIFARDataModule
from kdbias.models import head_classes
from kdbias.teacher import PretrainedTeacher

ARCH = "test_resnet"  # timm's 0.4 M-parameter ResNet: a real timm network, seconds to build


def _weights(tmp_path, num_classes: int, head: bool = True, suffix: str = ".safetensors"):
    torch.manual_seed(7)
    model = timm.create_model(ARCH, num_classes=num_classes).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if head or not k.startswith("fc.")}
    path = tmp_path / f"{ARCH}_{num_classes}_{'head' if head else 'nohead'}{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path, model


def test_head_classes_reads_the_file(tmp_path):
    assert head_classes(ARCH, _weights(tmp_path, 10)[0]) == 10
    assert head_classes(ARCH, _weights(tmp_path, 1000)[0]) == 1000
    assert head_classes(ARCH, _weights(tmp_path, 10, head=False)[0]) == 0
    assert head_classes(ARCH, _weights(tmp_path, 7, suffix=".pth")[0]) == 7
    assert head_classes(ARCH, None) == 0


def test_a_matching_head_is_kept_with_its_weights(tmp_path, digits_dm):
    path, reference = _weights(tmp_path, 10)
    teacher = PretrainedTeacher(ARCH, str(path)).build("digits", 10)
    assert teacher.has_head and teacher.num_classes == 10
    images = digits_dm.normalize_images(digits_dm.test_images[:8])
    with torch.no_grad():
        expected = reference(teacher.adapt(images))  # the saved network, head included, on the same input
    torch.testing.assert_close(teacher.logits(images), expected)
    # Another class count: headless (embeddings only), and a soft-KL student refuses it.
    other = PretrainedTeacher(ARCH, str(_weights(tmp_path, 1000)[0]))
    assert not other.build("digits", 10).has_head
    with pytest.raises(ValueError, match="a 1000-class head"):
        other.check_logits(10)


def test_headless_teacher_is_refused_in_one_line_before_any_network(tmp_path, capsys):
    path, _ = _weights(tmp_path, 10, head=False)
    teacher = json.dumps({"class_path": "PretrainedTeacher", "init_args": {"arch": ARCH, "weights": str(path)}})
    start = time.perf_counter()
    with pytest.raises(SystemExit) as code:
        run_experiment("exp1", tmp_path / "runs", "--model.teacher", teacher)
    took = time.perf_counter() - start
    assert code.value.code == 2 and took < 30
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no classification head" in err and "experiments/teacher.py --name" in err and "run:" in err
    assert not (tmp_path / "runs" / "exp1").exists()  # nothing claimed, nothing built


def test_a_matching_head_trains(tmp_path):
    path, _ = _weights(tmp_path, 10)
    teacher = json.dumps({"class_path": "PretrainedTeacher", "init_args": {"arch": ARCH, "weights": str(path)}})
    run_dir = run_experiment("exp1", tmp_path / "runs", "--model.teacher", teacher)
    summary = read_summary(run_dir)
    assert summary["status"] == "complete" and summary["teacher"]["name"] == ARCH
    assert 0.0 <= summary["teacher_acc"] <= 1.0


def test_own_teacher_run_is_filed_and_named_by_students(tmp_path):
    fast = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    fast += ["--trainer.limit_test_batches", "1", "--data.batch_size", "16", "--analytics.enabled", "false"]
    runs = tmp_path / "runs"
    teacher_dir = main(own_teacher("my_t"), ["--smoke", "--runs_dir", str(runs), "--model.arch", ARCH, *fast])
    assert teacher_dir.parent == runs / "my_t" and read_summary(teacher_dir)["experiment"] == "my_t"
    student = run_experiment("exp1", runs, "--model.teacher", "run:my_t")
    summary = read_summary(student)
    assert set(summary["fidelity"]) == {"my_t"}  # keyed by the teacher run's name
    assert str(teacher_dir) in summary["teacher"]["source"]
    with pytest.raises(ValueError, match="an experiment of the matrix"):
        own_teacher("exp1")


def test_run_prefix_names_a_missing_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as code:
        run_experiment("exp1", tmp_path / "runs", "--model.teacher", "run:nobody")
    assert code.value.code == 2 and "no complete nobody run" in capsys.readouterr().err


def test_folder_dataset_classes_reach_the_module(tmp_path):
    """The command line's class count follows the folder (3 classes here), not a built-in table."""
    from PIL import Image

    from kdbias import registry
    from kdbias.cli import KDBiasCLI

    for c in "abc":
        for split in ("train", "test"):
            (tmp_path / "f" / split / c).mkdir(parents=True)
            for k in range(4):
                Image.new("RGB", (32, 32), (k * 40, 0, 0)).save(tmp_path / "f" / split / c / f"{k}.png")
    args = ["--smoke", "--data.dataset", "folder", "--data.data_dir", str(tmp_path / "f")]
    config = KDBiasCLI(registry.get("baseline"), args, parse_only=True).config
    assert config.model.num_classes == 3 and config.model.dataset == "folder"
    assert CIFARDataModule("folder", data_dir=tmp_path / "f").num_classes == 3


@pytest.mark.parametrize("case", ["missing", "one_class", "ignored_data_dir"])
def test_bad_folder_on_the_command_line_is_one_line_exit_2(tmp_path, capsys, case):
    from PIL import Image

    folder = tmp_path / "imgs"
    if case == "one_class":
        (folder / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "a" / "x.png")
    dataset = [] if case == "ignored_data_dir" else ["--data.dataset", "folder"]
    with pytest.raises(SystemExit) as code:
        run_experiment("baseline", tmp_path / "runs", *dataset, "--data.data_dir", str(folder))
    err = capsys.readouterr().err.strip()
    assert code.value.code == 2 and len(err.splitlines()) == 1 and "compute_fn" not in err
    words = {"missing": "no such folder", "one_class": "one class folder", "ignored_data_dir": "not read by dataset"}
    assert words[case] in err and str(folder) in err
