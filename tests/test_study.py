"""Studies as data (:mod:`kdbias.study`): the shipped plan and why rows, a user's own study file
(its rows, presets beside it, overrides, hypotheses), and every bad file refused in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import FAST, ROOT, TINY_VIT, read_summary

from kdbias import registry
from kdbias.study import SHIPPED, SHIPPED_CONFIGS, StudyError
from kdbias.study_files import load_study

#: The research plan's numbers (seed/plan text): its confirmatory claims and thresholds.
PLAN_CLAIMS = {
    "exp1_negative": (("exp1", "baseline"), "<", 0.0),
    "exp2_over_exp1": (("exp2", "exp1"), ">", 0.0),
    "exp3_gain": (("exp3", "baseline_b512"), ">=", 0.03),
}

USER_STUDY = """
study: temperature
description: EXP-1 at a higher temperature.
group: mine
include: [plan]
rows:
  - name: exp1_hot
    label: EXP-1 hot
    module: kdbias.modules.KLDistillModule
    pieces: [student, soft_kl, exp1, hot]
    overrides: {model.alpha: 0.25}
    teacher: teacher_resnet18
    teacher_family: ResNet
    depends_on: [teacher_resnet18]
    description: EXP-1 with tau from hot.yaml and alpha from the row.
hypotheses:
  - key: hot_over_exp1
    question: Does a hotter teacher beat EXP-1?
    contrast: {exp1_hot: 1, exp1: -1}
    claim: ">"
"""


def write_study(folder: Path, text: str = USER_STUDY, hot: float = 6.0) -> Path:
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "configs" / "hot.yaml").write_text(f"model:\n  temperature: {hot}\n")
    path = folder / "study.yaml"
    path.write_text(text)
    return path


def test_shipped_studies_hold_the_plan():
    plan = load_study("plan")
    assert [r.name for r in plan.rows] == [
        "teacher_resnet18", "teacher_convnextv2", "baseline", "baseline_b512", "exp1", "exp2", "exp3",
    ]  # fmt: skip
    assert plan.groups == ("plan",)
    for key, (rows, claim, threshold) in PLAN_CLAIMS.items():
        h = next(h for h in plan.hypotheses if h.key == key)
        assert (h.experiments, h.claim, h.threshold, h.confirmatory) == (rows, claim, threshold, True)
    assert {r.name: r.target for r in plan.rows if r.target} == {"teacher_resnet18": 0.94, "teacher_convnextv2": 0.95}
    both = load_study()  # the default: why.yaml includes plan.yaml
    assert both.groups == ("plan", "why") and [r.name for r in both.rows[: len(plan.rows)]] == [
        r.name for r in plan.rows
    ]
    assert [h.key for h in both.hypotheses if h.confirmatory] == [
        "exp1_negative", "exp2_over_exp1", "exp3_gain", "interaction", "bias_at_matched_accuracy",
    ]  # fmt: skip
    for h in both.hypotheses:  # every contrast is a difference: its weights sum to 0
        assert sum(w for _, w in h.contrast) == pytest.approx(0.0)
    assert registry.get("exp3").fidelity_against == ("teacher_dinov2_probe",)  # declared by why.yaml


def test_presets_ship_inside_the_package():
    assert SHIPPED_CONFIGS.parent == SHIPPED and SHIPPED.parent == Path(registry.__file__).parent
    assert not (ROOT / "experiments" / "configs").exists()
    for row in load_study().rows:
        for preset in ("paper", "smoke"):
            assert all(path.is_file() and path.is_relative_to(SHIPPED_CONFIGS) for path in row.config_files(preset))
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"studies/*.yaml", "studies/configs/*.yaml", "studies/configs/smoke/*.yaml"' in pyproject


def test_a_user_study_finds_its_pieces_then_the_shipped_ones(tmp_path):
    study = load_study(write_study(tmp_path))
    row = study.row("exp1_hot")
    files = row.config_files("paper")
    assert files[-1] == tmp_path / "configs" / "hot.yaml"
    assert files[-2] == SHIPPED_CONFIGS / "exp1.yaml"
    assert row.override_args() == ["--model.alpha=0.25"]
    assert study.own_groups == ("mine",) and study.groups == ("plan", "mine")
    assert row.module_class.__name__ == "KLDistillModule"
    registry.activate(study)
    assert registry.select("mine") == (("teacher_resnet18",), ("exp1_hot",))
    assert [h.key for h in registry.hypotheses(["mine"])] == ["hot_over_exp1"]


TWO = (
    "rows:\n  - {name: a, module: kdbias.modules.TeacherModule}\n  - {name: b, module: kdbias.modules.TeacherModule}\n"
)
BAD = {
    "an unknown key": ("rows:\n  - {name: a, module: kdbias.modules.TeacherModule, colour: red}\n", "unknown key"),
    "a module outside the allow-list": (
        "rows:\n  - {name: a, module: antigravity.Geohash}\n",
        "must be a class path under kdbias.",
    ),
    "an unknown teacher": (
        "rows:\n  - {name: a, module: kdbias.modules.KLDistillModule, teacher: nobody}\n",
        "teacher names nobody",
    ),
    "a contrast that is not a difference": (
        TWO + "hypotheses:\n  - {key: h, contrast: {a: 1, b: 1}}\n",
        "must sum to 0",
    ),
    "a row declared twice": (
        TWO.replace("name: b", "name: a"),
        "declared twice",
    ),
    "a name that is no folder": ("rows:\n  - {name: ../a, module: kdbias.modules.TeacherModule}\n", "folder name"),
    "an include cycle": ("include: [study.yaml]\n", "includes itself"),
    "an alias bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nrows: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
        "more than",
    ),
    "a threshold in percent": (
        TWO + "hypotheses:\n  - {key: h, contrast: {a: 1, b: -1}, threshold: 3}\n",
        "fraction",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_study_files_are_one_line(tmp_path, case):
    text, words = BAD[case]
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(StudyError) as caught:
        load_study(path)
    message = str(caught.value)
    assert words in message and str(path.name) in message and "\n" not in message
    assert "antigravity" not in sys.modules


def test_a_missing_study_names_the_shipped_ones(tmp_path):
    with pytest.raises(StudyError, match=r"does not exist; .*plan, why"):
        load_study(tmp_path / "nope.yaml")


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_python_m_kdbias_run_trains_a_row_of_a_user_study(tmp_path):
    """``python -m kdbias.run --study FILE ROW``: the row's pieces (one beside the study file), its
    overrides, then the command line; filed under its own name."""
    from kdbias.run import main

    study = write_study(tmp_path / "mine", hot=6.0)
    runs = tmp_path / "runs"
    tiny = ["--model.arch_kwargs", yaml.safe_dump(TINY_VIT, default_flow_style=True).strip()]
    argv = ["--study", str(study), "exp1_hot", "--smoke", "--runs_dir", str(runs), *FAST, *tiny]
    argv += ["--model.teacher", "random:resnet18_cifar"]
    run_dir = main(argv)
    assert run_dir is not None and run_dir.parent == runs / "exp1_hot"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["temperature"] == 6.0  # hot.yaml, beside the study
    assert config["model"]["alpha"] == 0.25  # the row's override
    assert read_summary(run_dir)["experiment"] == "exp1_hot"


def test_kdbias_run_refuses_an_unknown_row_and_a_bad_study_in_one_line(tmp_path, capsys):
    from kdbias.run import main

    for argv, words in (
        (["no_such_row", "--smoke"], "unknown experiment 'no_such_row'"),
        (["--study", str(tmp_path / "nope.yaml"), "exp1"], "does not exist"),
        (["--study"], "--study needs a study file"),
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1


def test_run_all_plans_a_user_study_with_its_file(tmp_path, capsys):
    from kdbias.launch.run_all import main

    study = write_study(tmp_path / "mine")
    assert (
        main(["--study", str(study), "--smoke", "--runs_dir", str(tmp_path / "runs"), "--seeds", "1", "--dry-run"]) == 0
    )
    out = capsys.readouterr().out
    planned = [line for line in out.splitlines() if line.startswith("would run:")]
    assert [line.split("--study ")[1].split()[1] for line in planned] == ["teacher_resnet18", "exp1_hot"]
    assert all(f"-m kdbias.run --study {study.resolve()}" in line for line in planned)


def _isolation() -> list[str]:
    """``--no-build-isolation`` where this environment's setuptools builds the project (offline),
    else nothing (pip fetches a build backend from the package index)."""
    try:
        import setuptools
    except ImportError:
        return []
    return ["--no-build-isolation"] if int(setuptools.__version__.split(".")[0]) >= 77 else []


@pytest.mark.subprocess
def test_a_non_editable_install_plans_trains_and_reports_from_any_folder(tmp_path):
    """``pip install .`` (not editable): the studies and presets are package data, so a run starts,
    the matrix is planned (``python -m kdbias.launch``) and reported from any folder (here: the
    package installed into a folder of its own, run from ``tmp_path``)."""
    source, target = tmp_path / "source", tmp_path / "site"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "kdbias", source / "kdbias", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(  # from a copy: the build writes build/ and *.egg-info beside the sources
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *_isolation(), "--target", str(target),
         str(source)],
        check=True, cwd=tmp_path, capture_output=True,
    )  # fmt: skip
    assert (target / "kdbias" / "studies" / "configs" / "smoke" / "common.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    tiny = ["--model.arch_kwargs", yaml.safe_dump(TINY_VIT, default_flow_style=True).strip()]
    done = subprocess.run(
        [sys.executable, "-m", "kdbias.run", "baseline", "--smoke", "--runs_dir", "runs", *FAST, *tiny,
         "--analytics.enabled", "false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = read_summary(tmp_path / "runs" / "baseline" / "version_0")
    assert summary["status"] == "complete"
    planned = subprocess.run(
        [sys.executable, "-m", "kdbias.launch", "--smoke", "--groups", "plan,why", "--runs_dir", "runs", "--dry-run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert planned.returncode == 0 and "baseline seed 0" in planned.stdout and "exp3_kl seed 1" in planned.stdout
    reported = subprocess.run(
        [sys.executable, "-m", "kdbias.report", "runs", "--out", "R.md"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert reported.returncode == 0, reported.stderr[-2000:]
    assert "Does distilling a ResNet-18 into the DeiT student hurt it" in (tmp_path / "R.md").read_text()
    probe = "import kdbias.study as s; print(s.SHIPPED)"
    where = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.stdout.strip() == str(target / "kdbias" / "studies")


@pytest.mark.subprocess
def test_a_refused_config_file_ends_before_lightning_is_imported(tmp_path):
    """``experiments/<name>.py --config BAD``: the file is checked before Lightning is imported, so
    an alias bomb ends in one line and exit status 2 within the interpreter's start-up."""
    bomb = tmp_path / "bomb.yaml"
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 9)}]" for k in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\n")
    probe = (
        "import sys\nfrom kdbias.run import run_row\ntry:\n    run_row('baseline', ['--config', sys.argv[1]])\n"
        "except SystemExit as stop:\n    print(stop.code, 'lightning' in sys.modules, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(bomb)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "more than 100000 values" in done.stderr
