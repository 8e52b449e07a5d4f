"""The report shows a top eigenvalue only where it is certified and every CKA value next to its floor."""

from __future__ import annotations

import math
import re

import numpy as np
from report_fixtures import cka_entry, write_run
from scipy import stats as scipy_stats

from kdbias.report import load_runs, render_report


def _rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the table rows whose first cell is ``first_cell``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    return [cells for cells in rows if cells[0] == first_cell]


def _section(text: str, heading: str) -> str:
    rest = text[text.index(heading) + len(heading) :]
    match = re.search(r"\n#{2,3} ", rest)
    return rest if match is None else rest[: match.start()]


def test_every_cka_value_stands_next_to_its_permutation_floor(tmp_path):
    runs = tmp_path / "runs"
    floors = (0.001, 0.003, 0.002)
    for seed, f in enumerate(floors):
        write_run(runs, "baseline", seed=seed, val_acc=0.8, cka={"exp3": cka_entry(0.03, "dinov2", 0.6, 0.01, f)})
        entry = cka_entry(0.2 + seed / 100, "dinov2", 0.9, 0.05, floor=f, source="random")
        write_run(runs, "exp3", seed=seed, val_acc=0.8, cka={"exp3": entry})
        write_run(runs, "exp1", seed=seed, val_acc=0.8, cka={"exp1": cka_entry(0.1, "resnet18_cifar")})  # no floor
    text = render_report(load_runs(runs))
    half = scipy_stats.t.ppf(0.975, 2) * np.std(floors, ddof=1) / math.sqrt(3)
    floor_cell = f"floor {np.mean(floors):.3f} [{np.mean(floors) - half:.3f}, {np.mean(floors) + half:.3f}]"
    teacher = "dinov2 (random weights: not a result)"  # a random-weight teacher is labelled
    (contrast,) = _rows(text, f"EXP-3 student vs {teacher}: contrast")
    assert contrast[1].endswith("; " + floor_cell) and contrast[2].endswith("; " + floor_cell)
    assert contrast[1].startswith("0.210 [")
    (trained,) = _rows(text, f"EXP-3 vs {teacher}: trained pairs (mean CKA)")
    half2 = scipy_stats.t.ppf(0.975, 2) * np.std(2 * np.array(floors), ddof=1) / math.sqrt(3)
    low2, high2 = 2 * np.mean(floors) - half2, 2 * np.mean(floors) + half2
    assert trained[1] == f"0.900 (no spread); floor {2 * np.mean(floors):.3f} [{low2:.3f}, {high2:.3f}]"
    (exp1,) = _rows(text, "EXP-1 student vs resnet18_cifar: contrast")  # a run from before floors were kept
    assert exp1[1].endswith("; floor not recorded") and "random weights" not in exp1[0]
    assert "permutation floor" in _section(text, "### CKA Heatmaps")
    (finding,) = [line for line in text.splitlines() if line.startswith("3. EXP-3's CKA diagonal contrast")] or [
        line for line in text.splitlines() if "EXP-3's CKA diagonal contrast" in line and "floors" in line
    ]
    assert f"permutation floors (unpaired images): EXP-3 {np.mean(floors):+.3f}, Baseline {np.mean(floors):+.3f}" in (
        finding
    )


def test_top_eigenvalue_averages_only_certified_runs(tmp_path):
    """Certified = converged with >= 2 agreeing starts; a mean over seeds uses those runs only and
    says how many of n they are; none certified: "not converged", never a number."""
    runs = tmp_path / "runs"
    certified = dict(hessian_top_eig_converged=True, hessian_top_eig_starts=2, hessian_top_eig_residual=1e-4)
    for seed, (value, ok) in enumerate([(10.0, True), (14.0, True), (99.0, False)]):
        flags = certified if ok else dict(certified, hessian_top_eig_converged=False)
        write_run(runs, "exp1", seed=seed, val_acc=0.8, hessian_top_eig=value, **flags)
    for seed, value in enumerate((50.0, 60.0)):  # every run unconverged
        write_run(runs, "exp2", seed=seed, val_acc=0.8, hessian_top_eig=value, hessian_top_eig_converged=False,
                  hessian_top_eig_starts=2)  # fmt: skip
    write_run(runs, "exp3", seed=0, val_acc=0.8, hessian_top_eig=7.5, **certified)
    write_run(runs, "exp3", seed=1, val_acc=0.8, hessian_top_eig=8.0, hessian_top_eig_converged=True)  # one start
    hessian = _section(render_report(load_runs(runs)), "### Hessian Analysis")
    half = scipy_stats.t.ppf(0.975, 1) * np.std([10.0, 14.0], ddof=1) / np.sqrt(2)
    (exp1,) = _rows(hessian, "EXP-1")
    assert exp1[2].startswith(f"12 ± {half:.4g} (n=2; seeds 0, 1)") and exp1[2].endswith(
        "over the 2 of 3 runs that converged"
    )
    assert "99" not in exp1[2]
    (exp2,) = _rows(hessian, "EXP-2")
    assert exp2[2] == "**not converged** (0 of 2 runs certified: the starts did not converge or agree; no value shown)"
    (exp3,) = _rows(hessian, "EXP-3")
    assert exp3[2] == "7.5 (n=1 of 2: the others did not converge; 2 starts agree, residual 0.0001)"
