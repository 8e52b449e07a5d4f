"""``python -m kdbias.controls`` on a run it cannot measure: one line naming the file, exit 2,
before any measurement; never "every control is measured already" for a run it could not
read, and never another run's weights measured into this run's summary."""

from __future__ import annotations

import json
import shutil

import pytest
from resilience_helpers import write_payload

from kdbias import controls, runs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def run_dir(tmp_path, baseline_run):
    """A copy of the complete baseline run that still owes its fidelity to the random teacher."""
    target = tmp_path / "runs" / "baseline" / "version_0"
    shutil.copytree(baseline_run, target)
    (target / runs.LOCK_FILE).unlink(missing_ok=True)
    summary = json.loads((target / runs.SUMMARY_FILE).read_text())
    summary["fidelity"] = {}
    (target / runs.SUMMARY_FILE).write_text(json.dumps(summary))
    return target


def _edit_summary(run_dir, **items):
    summary = json.loads((run_dir / runs.SUMMARY_FILE).read_text())
    (run_dir / runs.SUMMARY_FILE).write_text(json.dumps({**summary, **items}))


def _one_line(run_dir, capsys) -> str:
    capsys.readouterr()
    assert controls.main([str(run_dir), "--accelerator", "cpu"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("python -m kdbias.controls: error: "), err
    return err[0]


def _selected(run_dir):
    return run_dir / json.loads((run_dir / runs.SUMMARY_FILE).read_text())["selected_checkpoint"]


def test_truncated_selected_checkpoint(run_dir, capsys):
    path = _selected(run_dir)
    path.write_bytes(path.read_bytes()[:1000])
    before = (run_dir / runs.SUMMARY_FILE).read_bytes()
    assert f"cannot load checkpoint {path}" in _one_line(run_dir, capsys)
    assert (run_dir / runs.SUMMARY_FILE).read_bytes() == before


def test_crafted_selected_checkpoint_runs_no_code(run_dir, capsys, tmp_path):
    marker = tmp_path / "payload-ran"
    write_payload(_selected(run_dir), "in-hyper_parameters", marker)
    assert "cannot load checkpoint" in _one_line(run_dir, capsys)
    assert not marker.exists()


def test_foreign_selected_checkpoint_is_not_measured(run_dir, capsys, tmp_path, baseline_run):
    """A selected checkpoint that links to another run's weights: refused naming the summary;
    nothing measured or written into this run's summary."""
    path = _selected(run_dir)
    path.unlink()
    path.symlink_to(_selected(baseline_run))
    before = (run_dir / runs.SUMMARY_FILE).read_bytes()
    line = _one_line(run_dir, capsys)
    assert f"{run_dir / runs.SUMMARY_FILE} names" in line and "leads outside its run" in line
    assert (run_dir / runs.SUMMARY_FILE).read_bytes() == before


@pytest.mark.parametrize(
    "case, says",
    [
        ("fidelity-list", "fidelity is not a JSON object"),
        ("unknown-dataset", "unknown experiment or dataset"),
        ("config-missing", "config.yaml is missing"),
        ("config-tagged", "config.yaml holds a YAML tag"),
        ("unknown-data-key", "config.yaml: data:"),
    ],
)
def test_unreadable_run_is_one_line_not_measured_already(run_dir, capsys, case, says):
    config = run_dir / runs.CONFIG_FILE
    if case == "fidelity-list":
        _edit_summary(run_dir, fidelity=[1, 2])
    elif case == "unknown-dataset":
        _edit_summary(run_dir, dataset="imagenet")
    elif case == "config-missing":
        config.unlink()
    elif case == "config-tagged":
        config.write_text("data: !!python/object/apply:os.system [true]\n")
    else:
        config.write_text(config.read_text().replace("data:\n", "data:\n  bogus_key: 1\n", 1))
    line = _one_line(run_dir, capsys)
    assert says in line and "measured already" not in line
