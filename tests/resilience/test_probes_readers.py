"""Readers of runs/ that no single file can break: a summary.json nested 200,000 levels deep, a
FIFO named summary.json, an oversized file, a config.yaml with a YAML tag. Each is ignored with
a warning naming it (and why); the teacher lookup, --resume and run_all go on."""

from __future__ import annotations

import os
import shutil
import threading

import pytest
from helpers import run_experiment
from resilience_helpers import interrupted_run, versions

from kdbias import runs


def _run_all():
    from kdbias.launch import run_all

    return run_all


def _bad_run(root, experiment: str, version: int, kind: str):
    run_dir = root / experiment / f"version_{version}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed_everything: 0\npreset: smoke\ndata: {dataset: digits}\n")
    path = run_dir / "summary.json"
    if kind == "deep":
        path.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "huge":
        path.write_text('{"status": "complete", "pad": "' + "x" * (runs.MAX_SUMMARY_BYTES + 1) + '"}')
    return path


@pytest.mark.parametrize("kind,why", [("deep", "nested too deeply"), ("fifo", "not a regular file"), ("huge", "limit")])
def test_one_bad_summary_is_a_warning_naming_it(tmp_path, kind, why):
    path = _bad_run(tmp_path, "teacher_resnet18", 3, kind)
    result: dict = {}
    reader = threading.Thread(target=lambda: result.update(summary=runs.read_summary_checked(path.parent)))
    reader.start()
    reader.join(timeout=120)  # a FIFO must not hang the reader (safety net, not a timing assertion)
    assert not reader.is_alive() and result["summary"][0] is None and why in result["summary"][1]
    assert runs.read_summary(path.parent) is None  # the plain reader: None, no exception
    with pytest.warns(runs.RunsWarning, match=f"ignoring {path.parent}: its summary.json .*{why}"):
        assert runs.latest_complete_run(tmp_path, "teacher_resnet18") is None


def test_lookups_run_all_and_the_report_go_on_past_bad_files(tmp_path, teacher_run, capsys):
    root = tmp_path / "runs"
    good = root / "teacher_resnet18" / teacher_run.name
    shutil.copytree(teacher_run, good)
    deep = _bad_run(root, "teacher_resnet18", 7, "deep")  # newest: read first
    fifo = _bad_run(root, "exp1", 0, "fifo")
    with pytest.warns(runs.RunsWarning, match="nested too deeply"):
        assert (
            runs.teacher_checkpoint(root, "teacher_resnet18", "digits", "smoke") == good / "checkpoints" / "best.ckpt"
        )
    with pytest.warns(runs.RunsWarning):
        assert runs.resumable_run(root, "exp1", 0, "digits", "smoke") is None
    args = ["--smoke", "--seeds", "1", "--only", "teacher_resnet18", "exp1", "--runs_dir", str(root), "--dry-run"]
    assert _run_all().main(args) == 0
    err = capsys.readouterr().err
    assert f"run_all: warning: ignoring {deep.parent}: its summary.json is nested too deeply" in err
    assert f"run_all: warning: ignoring {fifo.parent}: its summary.json is not a regular file" in err
    # the report reads summaries through runs.read_summary (its own re-read for the warning text,
    # kdbias.report.load._why_unreadable, is the report's to route through runs.read_summary_checked)
    deep.unlink()
    fifo.unlink()
    fifo.write_text("[" * 200_000 + "]" * 200_000)
    assert runs.read_summary(fifo.parent) is None
    assert "nested too deeply" in runs.read_summary_checked(fifo.parent)[1]


def test_resume_says_why_a_run_with_a_tagged_config_is_ignored(tmp_path, capsys):
    root = tmp_path / "runs"
    crashed = interrupted_run("baseline", root, epochs=2, crash_epoch=1)
    marker = tmp_path / "pwned"
    (crashed / "config.yaml").write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    capsys.readouterr()
    run_dir = run_experiment("baseline", root, "--trainer.max_epochs", "2", "--resume")
    out = capsys.readouterr().out
    assert f"--resume: warning: ignoring {crashed}: its config.yaml holds a YAML tag" in out
    assert "--resume: no unfinished run of baseline seed 0" in out and "starting a new run" in out
    assert run_dir.name == "version_1" and versions(root, "baseline") == ["version_0", "version_1"]
    assert not marker.exists() and runs.has_checkpoint(crashed)  # nothing ran, nothing was lost
