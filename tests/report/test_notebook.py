"""notebooks/analysis.py: in sync with analysis.ipynb, executes on fake runs and on none;
plus the slow end-to-end smoke matrix."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdbias import registry
from kdbias.report import aggregate, load_runs, render_report
from kdbias.report.phases import teacher_accuracy_cell

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_PY = ROOT / "notebooks" / "analysis.py"
NOTEBOOK_IPYNB = ROOT / "notebooks" / "analysis.ipynb"


def _cells(notebook):
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_ipynb_matches_py_source():
    py, ipynb = jupytext.read(NOTEBOOK_PY), jupytext.read(NOTEBOOK_IPYNB)
    assert _cells(py) == _cells(ipynb), (
        "notebooks/analysis.ipynb is out of date: run `jupytext --to ipynb notebooks/analysis.py`"
    )


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernelspec in tmp_path that runs this interpreter (the venv), found via JUPYTER_PATH."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "kdbias-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "kdbias test",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KDBIAS_FIG_DIR", str(tmp_path / "figures"))  # never into the repository
    return "kdbias-test"


def _execute(kernel_name: str):
    notebook = jupytext.read(NOTEBOOK_PY)
    client = nbclient.NotebookClient(
        notebook, kernel_name=kernel_name, timeout=300, resources={"metadata": {"path": str(NOTEBOOK_PY.parent)}}
    )
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    text = "".join(out.get("text", "") for out in outputs if out.get("output_type") == "stream")
    images = sum("image/png" in out.get("data", {}) for out in outputs)
    return text, images


def test_notebook_executes_on_runs(full_matrix, kernel_name, monkeypatch):
    (full_matrix / "exp2" / "version_0" / "analytics" / "cka_heatmaps" / "exp2" / "epoch_2.json").unlink()  # a gap
    monkeypatch.setenv("KDBIAS_RUNS_DIR", str(full_matrix))
    text, images = _execute(kernel_name)
    runs = load_runs(full_matrix)
    agg, report = aggregate(runs), render_report(runs)
    for teacher in registry.TEACHERS:  # the report's own cell, character for character
        cell = teacher_accuracy_cell(agg, teacher)
        assert "Clopper–Pearson" in cell and cell in report and f"test acc {cell}\n" in text
    assert "17 completed run(s)" in text and "Source: digits / smoke" in text
    assert (
        "[confirmatory] Does the ConvNeXt V2 teacher transfer better than ResNet-18? EXP-2 − EXP-1: yes (+4.00 pp ["
        in text
    )
    assert "EXP-3 − Baseline (b512): yes (" in text and "Holm" in text
    assert "skipped" not in text and "left out" not in text
    assert images == 5  # comparisons, learning curves, attention distance, CKA heatmaps with controls, Hessian


def test_notebook_links_nothing_outside_the_repository():
    text = NOTEBOOK_PY.read_text() + NOTEBOOK_IPYNB.read_text()
    assert "../shared" not in text and "http" not in text and "seed/" not in text


def test_notebook_executes_without_runs(tmp_path, kernel_name, monkeypatch):
    monkeypatch.setenv("KDBIAS_RUNS_DIR", str(tmp_path / "nothing_here"))
    text, images = _execute(kernel_name)
    assert "0 completed run(s)" in text
    for plot in ("Learning curves", "Attention-distance plot", "CKA heatmaps", "Hessian plot"):
        assert f"{plot} skipped" in text
    assert images == 0


@pytest.mark.slow
def test_smoke_matrix_end_to_end(tmp_path):
    """The real smoke matrix: every cell filled; a second call trains nothing."""
    runs, out = tmp_path / "runs", tmp_path / "RESULTS.md"
    command = [
        sys.executable,
        str(ROOT / "experiments" / "run_all.py"),
        "--smoke",
        "--runs_dir",
        str(runs),
        "--out",
        str(out),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=tmp_path)
    elapsed = time.perf_counter() - start
    text = out.read_text()
    cells = [line for line in text.splitlines() if line.startswith("|") or line[:3].rstrip(". ").isdigit()]
    assert not [line for line in cells if "pending" in line], text
    versions = sorted(str(p) for p in runs.glob("*/version_*"))
    second = subprocess.run(command, check=True, cwd=tmp_path, capture_output=True, text=True)
    matrix = len(registry.TEACHERS) + 2 * len(registry.STUDENTS)  # the smoke default: two seeds per student
    plan_line = f"{matrix} runs in the matrix, {matrix} complete, 0 running elsewhere, 0 to train"
    assert plan_line in second.stdout, second.stdout
    assert sorted(str(p) for p in runs.glob("*/version_*")) == versions
    print(f"smoke matrix: {elapsed:.0f} s")
