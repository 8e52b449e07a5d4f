"""Loading survives anything: damaged summaries are skipped or trimmed, each with a warning."""

from __future__ import annotations

import json
import math
import re
import sys
import warnings
from pathlib import Path

import pytest
from report_fixtures import write_run

from kdbias.report import ReportWarning, aggregate, load_runs, main, render_report


def _messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, ReportWarning)]


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """Two good runs and every kind of bad file next to them."""
    runs = tmp_path / "runs"
    write_run(runs, "baseline", seed=0, val_acc=0.80)
    write_run(runs, "baseline", seed=1, val_acc=0.81)
    write_run(runs, "exp1", seed=0, version=0, raw=b'{"status": "complete", "test_acc": 0.5, "na\xffme": 1}')
    write_run(runs, "exp1", seed=0, version=1, raw='{"status": "complete", "test_acc": 0.8')  # truncated
    write_run(runs, "exp1", seed=0, version=2, raw="[1, 2, 3]")
    write_run(runs, "exp1", seed=0, version=3, complete=False)  # no summary yet
    write_run(runs, "exp2", seed=0, status="trained", val_acc=0.5)
    write_run(runs, "exp2", seed=1, val_acc=0.5, test_acc=5.0)  # the accuracy itself is bad: run skipped
    write_run(
        runs,
        "exp3",
        seed=0,
        val_acc=5.0,
        test_acc=0.7,
        hessian_trace=float("nan"),
        attn_dist={"3": 6.0, "6": float("inf")},
        teacher_acc=-0.1,
    )
    return runs


def test_bad_files_are_skipped_with_one_warning_each(damaged):
    with pytest.warns(ReportWarning) as record:
        runs = load_runs(damaged)
    assert sorted((r["experiment"], r["seed"]) for r in runs) == [("baseline", 0), ("baseline", 1), ("exp3", 0)]
    messages = _messages(record)
    by_file = {m.split(":")[0].removeprefix("skipping ") for m in messages}
    assert len(messages) == len(by_file) == 7  # one warning per file
    exp1 = damaged / "exp1"

    def about(version: int) -> str:
        (message,) = [m for m in messages if f"{exp1}/version_{version}/summary.json" in m]
        return message

    assert "not UTF-8" in about(0)
    assert "not valid JSON" in about(1)
    assert "not a JSON object (a JSON list)" in about(2)
    assert "missing" in about(3)
    assert any("exp2/version_0" in m and "'trained', not 'complete'" in m for m in messages)
    assert any("exp2/version_1" in m and "test_acc=5.0 is not a number in [0, 1]" in m for m in messages)


def test_bad_fields_are_dropped_and_the_run_kept(damaged):
    with pytest.warns(ReportWarning) as record:
        runs = load_runs(damaged)
    (exp3,) = [r for r in runs if r["experiment"] == "exp3"]
    assert "val_acc" not in exp3 and "hessian_trace" not in exp3 and "teacher_acc" not in exp3
    assert exp3["attn_dist"] == {"3": 6.0} and exp3["test_acc"] == 0.7
    (message,) = [m for m in _messages(record) if "exp3" in m]
    for part in (
        "val_acc=5.0 (not a number in [0, 1])",
        "hessian_trace=nan (not a finite number)",
        "attn_dist.6=inf",
        "teacher_acc=-0.1",
    ):
        assert part in message
    text = render_report(runs)
    assert "500" not in text and "inf px" not in text and " nan" not in text
    exp3_table = text[text.index("### EXP-3") :]
    assert "| Held-out Best Val Accuracy | *pending* |" in exp3_table  # best_val_acc defaulted to the bad 5.0
    assert "| Student Test Accuracy | 70.00 ± " in exp3_table
    assert "(n=1; test set only, one seed; seeds 0) |" in exp3_table


def test_signed_figures_keep_their_sign(tmp_path):
    """A held-out loss below the training loss (negative ``gen_gap_loss``) and a negative trace
    estimate (Hutchinson on an indefinite Hessian) are measurements, not damage."""
    write_run(tmp_path, "baseline", gen_gap_loss=-0.02, hessian_trace=-3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportWarning)
        (run,) = load_runs(tmp_path)
    assert run["gen_gap_loss"] == -0.02 and run["hessian_trace"] == -3.0


def test_val_acc_of_five_never_prints_as_500_percent(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "teacher_resnet18", val_acc=5.0, best_val_acc=5.0, test_acc=0.9)
    with pytest.warns(ReportWarning, match="val_acc=5.0"):
        text = render_report(load_runs(runs))
    assert "500" not in text and '| Test Accuracy (the plan\'s "Val Accuracy") | 90.00 % (measured once, n=1; ' in text


def test_main_prints_a_line_per_skipped_file_and_exits_zero(damaged, tmp_path, capsys):
    out = tmp_path / "report" / "R.md"
    assert main([str(damaged), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    warning_lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warning_lines) == 7
    text = out.read_text()
    assert "Files skipped or fields dropped while loading:" in text and "not UTF-8" in text
    assert "| **Baseline** |" in text and "80.50 ±" in text  # the rest is still reported
    assert not list(out.parent.glob(".R.md.*.tmp"))  # written atomically, no temporary file left


def test_missing_runs_dir_gives_an_all_pending_report(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["nowhere", "--out", "R.md"]) == 0
    assert "does not exist" in capsys.readouterr().err
    text = (tmp_path / "R.md").read_text()
    assert "Note: the runs directory `nowhere` does not exist" in text
    assert "Source: no completed runs" in text
    for line in text.splitlines():
        if line.startswith("| **") or line[:3].rstrip(". ").isdigit():  # matrix rows and findings
            assert not re.search(r"\d+\.\d+|\(n=\d|\d %", line), line


def test_json_values_that_are_not_numbers(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "baseline", seed=0, val_acc=0.8, train_time_s="long", best_epoch=True, cka=[1])
    write_run(runs, "baseline", seed=3, val_acc=0.9, method="ce")  # a method that does not validate: left out
    write_run(runs, "baseline", seed=4, val_acc=0.9, method={"temperature": "hot", "alpha": [1]})
    write_run(runs, "baseline", seed="zero", val_acc=0.8)
    write_run(runs, "baseline", seed=2, val_acc=0.8, dataset=None)
    copied = write_run(runs, "exp1", seed=0, val_acc=0.8) / "summary.json"  # copied from another experiment
    copied.write_text(json.dumps({**json.loads(copied.read_text()), "experiment": "exp2"}))
    with pytest.warns(ReportWarning) as record:
        runs_loaded = load_runs(runs)
    (run,) = runs_loaded
    assert "train_time_s" not in run and "best_epoch" not in run and "cka" not in run
    messages = " ".join(_messages(record))
    assert "no integer seed" in messages and "no valid dataset" in messages and "not the folder's 'exp1'" in messages
    assert messages.count("its recorded method does not validate") == 2
    assert math.isclose(aggregate(runs_loaded).acc("baseline").mean, 0.8)


def test_report_module_runs_as_a_script(tmp_path):
    import subprocess

    runs = tmp_path / "runs"
    write_run(runs, "baseline", val_acc=0.8)
    (runs / "exp1" / "version_0").mkdir(parents=True)
    (runs / "exp1" / "version_0" / "summary.json").write_text(json.dumps({"status": "complete"})[:-3])
    result = subprocess.run(
        [sys.executable, "-m", "kdbias.report", str(runs), "--out", str(tmp_path / "R.md")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "warning: skipping" in result.stderr and "exp1/version_0/summary.json" in result.stderr
    assert "| **Baseline** |" in (tmp_path / "R.md").read_text()
