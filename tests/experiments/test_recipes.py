import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kdbias.recipes import RECIPES, find_teacher_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "1", "--limit-train-batches", "2", "--limit-val-batches", "1", "--batch-size", "16"]


def scalar_tags(run_dir: Path) -> set[str]:
    tags: set[str] = set()
    for events in run_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def test_every_script_lists_its_options():
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "exp3.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--smoke", "--resume", "--lr", "--batch-size", "--teacher-image-size", "--lambda-cka",
                 "--layer-pairs", "--compile", "--precision", "--devices"):
        assert flag in out, flag
    assert set(RECIPES) == {"teacher_resnet18", "teacher_convnextv2", "baseline", "exp1", "exp2", "exp3"}
    for name in RECIPES:
        assert (ROOT / "experiments" / f"{name}.py").is_file()


def test_paper_and_smoke_presets_follow_the_plan():
    paper = RECIPES["exp1"].parse([])
    assert (paper.epochs, paper.batch_size, paper.lr, paper.weight_decay) == (200, 1024, 5e-4, 0.05)
    assert (paper.temperature, paper.alpha, paper.dataset, paper.preset) == (4.0, 0.5, "cifar10", "paper")
    exp3 = RECIPES["exp3"].parse([])
    assert (exp3.batch_size, exp3.lambda_cka, exp3.lambda_tok, exp3.teacher_image_size) == (512, 0.5, 0.5, 224)
    assert exp3.layer_pairs == [(3, 3), (6, 6), (9, 9), (11, 11)]
    smoke = RECIPES["exp3"].parse(["--smoke", "--lr", "0.01"])
    assert (smoke.dataset, smoke.teacher_pretrained, smoke.teacher_image_size, smoke.lr) == ("digits", None, 112, 0.01)
    teacher = RECIPES["teacher_resnet18"].parse([])
    assert (teacher.optimizer, teacher.mix, teacher.epochs) == ("sgd", "cutmix", 200)


def test_exp3_smoke_leaves_run_with_tags_and_summary(tmp_path, capsys):
    run_dir = RECIPES["exp3"].run(["--smoke", "--runs-dir", str(tmp_path / "runs"), *TINY])
    assert run_dir == tmp_path / "runs" / "exp3" / "version_0"
    assert "RANDOM weights" in capsys.readouterr().out  # a random teacher is announced
    tags = scalar_tags(run_dir)
    for tag in ("train/loss", "train/loss_ce", "train/loss_cka", "train/loss_tok", "val/acc", "val/loss"):
        assert tag in tags, (tag, sorted(tags))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["experiment"] == "exp3" and summary["preset"] == "smoke" and summary["dataset"] == "digits"


def test_exp1_finds_the_latest_teacher_of_the_same_dataset(tmp_path):
    runs = tmp_path / "runs"
    for version, dataset in ((0, "digits"), (1, "cifar10"), (2, "digits")):
        run = runs / "teacher_resnet18" / f"version_{version}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "best.ckpt").write_bytes(b"x")
        (run / "summary.json").write_text(json.dumps({"dataset": dataset}))
    assert find_teacher_checkpoint(runs, "teacher_resnet18", "digits") == (
        runs / "teacher_resnet18" / "version_2" / "checkpoints" / "best.ckpt")
    assert "version_1" in str(find_teacher_checkpoint(runs, "teacher_resnet18", "cifar10"))
    with pytest.raises(FileNotFoundError, match="python experiments/teacher_resnet18.py --smoke"):
        find_teacher_checkpoint(runs, "teacher_resnet18", "cifar100", smoke=True)
