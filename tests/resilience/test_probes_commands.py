"""The other commands' bad input is one line and exit 2 too: ``kdbias.evaluate`` with an
unknown precision, weights that do not fit their hyperparameters or that are all NaN;
``kdbias.report --out`` a folder or under a file."""

from __future__ import annotations

import shutil

import pytest
import torch

from kdbias import evaluate
from kdbias.report import cli as report_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def checkpoint(tmp_path, baseline_run):
    run_dir = tmp_path / "runs" / "baseline" / "version_0"
    shutil.copytree(baseline_run, run_dir)
    return run_dir / "checkpoints" / "best.ckpt"


def _evaluate_error(argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        evaluate.main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("python -m kdbias.evaluate: error: ") or ": error: " in lines[0]
    return lines[0]


def test_unknown_precision(checkpoint, capsys):
    line = _evaluate_error([str(checkpoint), "--precision", "bf17", "--accelerator", "cpu"], capsys)
    assert "'bf17' is invalid" in line


def _rewrite(path, change):
    data = torch.load(path, weights_only=True)
    data["state_dict"] = {k: change(k, v) for k, v in data["state_dict"].items()}
    torch.save(data, path)


def test_weights_that_do_not_fit_their_hyperparameters(checkpoint, capsys):
    first = next(iter(torch.load(checkpoint, weights_only=True)["state_dict"]))
    _rewrite(checkpoint, lambda k, v: torch.zeros(3, 3) if k == first else v)
    line = _evaluate_error([str(checkpoint), "--accelerator", "cpu"], capsys)
    assert "do not fit the network its hyperparameters describe" in line and "size mismatch" in line


def test_all_nan_weights_are_refused_not_reported(checkpoint, capsys):
    _rewrite(checkpoint, lambda k, v: torch.full_like(v, float("nan")) if v.is_floating_point() else v)
    line = _evaluate_error([str(checkpoint), "--accelerator", "cpu"], capsys)
    assert "holds non-finite weights" in line


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_report_out_that_cannot_be_a_file(tmp_path, capsys, where):
    (tmp_path / "a_file").write_text("keep\n")
    out = tmp_path if where == "folder" else tmp_path / "a_file" / "R.md"
    assert report_cli.main([str(tmp_path / "runs"), "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kdbias.report: error:")]
    assert len(err) == 1 and f"--out {out}" in err[0]
    assert (tmp_path / "a_file").read_text() == "keep\n"


@pytest.mark.parametrize(
    "name, extra, says",
    [
        (
            "baseline",
            ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint"],
            "trainer.callbacks: ModelCheckpoint is not needed",
        ),
        ("exp3", ["--model.teacher_kwargs", '{"bogus_kw": 1}'], "arch_kwargs bogus_kw are not arguments"),
    ],
    ids=["second-ModelCheckpoint", "exp3-teacher_kwargs"],
)
def test_experiment_settings_that_fail_late_are_one_line_early(tmp_path, capsys, name, extra, says):
    from resilience_helpers import cli_error, smoke_args, versions

    line = cli_error(name, smoke_args(name, tmp_path / "runs", *extra), capsys)
    assert says in line and versions(tmp_path / "runs", name) == []
