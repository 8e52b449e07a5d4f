"""README "Your own study": every command of its block is accepted by its own parser on tiny data
(fast); run for real on a folder of digit PNGs, a teacher of one's own and a sweep, then the
report covers them (slow)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from helpers import FAST, ROOT, TINY_ARGS, digits_folder

from kdbias import registry
from kdbias.cli import KDBiasCLI, main, own_teacher
from kdbias.launch.sweep import parse_sweeps

README = (ROOT / "README.md").read_text()


def commands() -> list[list[str]]:
    """The command lines of the section's bash block, comments dropped."""
    section = README.split("## Your own study", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip() and line[0] != "#"]


def _run_all():
    """The launcher behind ``experiments/run_all.py`` (a thin script over :mod:`kdbias.launch.run_all`)."""
    from kdbias.launch import run_all

    return run_all


def readme_study(folder: Path) -> Path:
    """The README's ``my_study.yaml`` (its yaml block) written to ``folder``, with the ``hot`` piece
    it names beside it; checked by the study loader."""
    from kdbias.study_files import load_study

    section = README.split("## Your own study", 1)[1].split("\n## ", 1)[0]
    (text,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "configs" / "hot.yaml").write_text("model:\n  temperature: 8.0\n")
    path = folder / "my_study.yaml"
    path.write_text(text)
    study = load_study(path)
    assert [r.name for r in study.rows][-1] == "exp1_hot" and study.own_groups == ("mine",)
    return path


def _localise(args: list[str], images: Path, runs: Path) -> list[str]:
    out = [str(images) if a == "my_images" else a for a in args]
    return out + ["--runs_dir", str(runs)]


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_every_command_is_accepted(tmp_path):
    images = digits_folder(tmp_path / "my_images", limit=3)
    lines = commands()
    assert [c[1] for c in lines] == [
        "experiments/teacher_resnet18.py",
        "experiments/baseline.py",
        "experiments/exp1.py",
        "-m",
        "experiments/teacher.py",
        "experiments/exp1.py",
        "experiments/run_all.py",
        "experiments/run_all.py",
        "-m",
    ]
    study = readme_study(tmp_path)
    for line in lines:
        script, args = line[1], line[2:]
        args = [str(study) if a == "my_study.yaml" else a for a in args]
        if script == "-m":
            from kdbias.report.cli import build_parser

            parsed = build_parser().parse_args(args[1:])
            assert parsed.dataset == "folder" or parsed.study == str(study)
        elif script.endswith("run_all.py") and "--study" in args:
            runs = ["--runs_dir", str(tmp_path / "runs"), "--dry-run"]
            assert _run_all().main([*args, *runs]) == 0  # the README's study file, planned
        elif script.endswith("run_all.py"):
            parsed = _run_all().build_parser().parse_args(args)
            assert parse_sweeps(parsed.sweep) == [("model.temperature", ["1", "2", "4"])] and parsed.seeds == 2
        else:
            name = Path(script).stem
            if name == "teacher":
                k = args.index("--name")
                experiment, args = own_teacher(args[k + 1]), args[:k] + args[k + 2 :]
            else:
                experiment = registry.get(name)
            config = KDBiasCLI(experiment, _localise(args, images, tmp_path), parse_only=True).config
            if "folder" in args:
                assert config.data.dataset == "folder" and config.model.num_classes == 10


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_the_study_runs_on_tiny_data(tmp_path, monkeypatch):
    """The block for real at the tiny scale: folder runs and their report, a teacher of one's own
    (timm's tiny test_resnet for resnet34) named by a student, and the sweep's table."""
    images = digits_folder(tmp_path / "my_images", limit=6)
    runs = tmp_path / "runs"
    lines = commands()
    for line in lines[:3]:  # teacher, baseline, exp1 on the folder
        name = Path(line[1]).stem
        run_dir = main(name, [*_localise(line[2:], images, runs), *FAST, *TINY_ARGS[name]])
    from kdbias.data import DATASETS
    from kdbias.evaluate import evaluate

    summary = json.loads((run_dir / "summary.json").read_text())
    DATASETS.pop("folder")  # as in a new process: the folder is found again from the run's config.yaml
    again = evaluate(run_dir / summary["selected_checkpoint"])
    assert again["dataset"] == "folder" and again["test_acc"] == pytest.approx(summary["test_acc"], abs=1e-6)
    from kdbias.report.cli import main as report

    out = tmp_path / "RESULTS.md"
    assert report([str(runs), "--dataset", "folder", "--out", str(out)]) == 0
    text = out.read_text()
    assert "folder / smoke" in text and "*pending*" in text  # exp2/exp3 never ran
    teacher_args = [a.replace("resnet34", "test_resnet") for a in lines[4][2:]]
    k = teacher_args.index("--name")
    rest = _localise(teacher_args[:k] + teacher_args[k + 2 :], images, runs)
    assert main(own_teacher(teacher_args[k + 1]), [*rest, *FAST]) == runs / "my_r34" / "version_0"
    student = main("exp1", [*_localise(lines[5][2:], images, runs), *FAST, *TINY_ARGS["exp1"]])
    assert '"my_r34"' in (student / "summary.json").read_text()
    monkeypatch.chdir(tmp_path)
    # The sweep's teacher first, tiny (the extra arguments after -- reach every script, so the
    # teacher is not among the --only rows here); then the README's sweep over exp1.
    tiny_teacher = [*FAST, *TINY_ARGS["teacher_resnet18"], "--smoke", "--runs_dir", str(tmp_path / "sweep")]
    assert main("teacher_resnet18", tiny_teacher) is not None
    sweep = [a for a in lines[6][2:] if a != "teacher_resnet18"]
    sweep += ["--runs_dir", str(tmp_path / "sweep"), "--out", str(tmp_path / "SWEEP.md"), "--", *FAST]
    sweep += TINY_ARGS["exp1"]
    assert _run_all().main(sweep) == 0
    table = (tmp_path / "SWEEP.md").read_text().split("Sweep: exp1", 1)[1]
    for row in ("| τ = 1 |", "| τ = 2 |", "| τ = 4 (preset) |"):
        assert row in table
    assert not re.search(r"\b[0-9a-f]{16}\b", table)
    # The README's study file: its own row trained (its teacher is the sweep's), then reported.
    study = readme_study(tmp_path)
    planned = [str(study) if a == "my_study.yaml" else a for a in lines[7][2:]]
    planned += ["--only", "exp1_hot", "--runs_dir", str(tmp_path / "sweep"), "--out", str(tmp_path / "STUDY.md")]
    assert _run_all().main([*planned, "--", *FAST, *TINY_ARGS["exp1"]]) == 0
    config = (next((tmp_path / "sweep" / "exp1_hot").glob("version_*")) / "config.yaml").read_text()
    assert "temperature: 8.0" in config and "alpha: 0.25" in config
    text = (tmp_path / "STUDY.md").read_text()
    assert "Does a hotter teacher beat EXP-1?" in text
