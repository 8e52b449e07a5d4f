"""The report's comparisons carry the test set's own sampling error (issue: verdicts a referee accepts)."""

from __future__ import annotations

import re

import numpy as np
import scipy.stats as scipy_stats
from report_fixtures import write_run

from kdbias.report import load_runs, render_report

N = 360  # the digits test split's size


def _finding(text: str, start: str) -> str:
    (line,) = [line for line in text.splitlines() if start in line]
    return line


def _answer(text: str, question: str) -> list[str]:
    """The Answers-table row (cells) whose question contains ``question``."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()]
    (row,) = [r for r in rows if len(r) == 7 and question in r[0]]
    return row


def _matrix_cell(text: str, name: str, column: int) -> str:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == name:
            return cells[column]
    raise AssertionError(name)


def _runs(tmp_path, flip) -> str:
    """Baseline and EXP-1 over seeds 0..2; EXP-1 differs from the Baseline on the images
    ``flip(seed)`` (EXP-1 wrong where the Baseline is right)."""
    runs = tmp_path / "runs"
    base = np.zeros(N, dtype=bool)
    base[: int(0.9 * N)] = True
    for seed in range(3):
        exp1 = base.copy()
        exp1[flip(seed)] = False
        write_run(runs, "baseline", seed=seed, correct=base)
        write_run(runs, "exp1", seed=seed, correct=exp1, teacher_acc=0.95)
    return render_report(load_runs(runs))


def test_identical_per_seed_differences_of_one_image_are_inconclusive(tmp_path):
    """Each seed's EXP-1 misses one more image (another image per seed): the per-seed
    differences are identical (-1/360 three times), the seed interval alone has width 0."""
    text = _runs(tmp_path, lambda seed: [seed])
    row = _answer(text, "negative transfer")
    assert "**inconclusive**" in row[4]
    low, high = (float(x) for x in re.search(r"\[([-+0-9.]+), ([-+0-9.]+)\]", row[2]).groups())
    assert high - low > 0.1 and low < 0 < high  # the interval is not zero
    assert row[5] == "3 × 360; differ on 3"
    assert "< 3 net test images per seed" in row[4]
    line = row[2]
    # the written-out interval: x[s, i] = -1 at image s; var of the column means / N plus 0 from seeds
    x = np.zeros((3, N))
    x[[0, 1, 2], [0, 1, 2]] = -1
    b = np.var(x.mean(axis=0), ddof=1) / N
    half = scipy_stats.t.ppf(0.975, N - 1) * np.sqrt(b) * 100  # a = 0: the image part alone
    assert f"[{-100 / N - half:+.2f}, {-100 / N + half:+.2f}]" in line
    cell = _matrix_cell(text, "**EXP-1**", 5)
    assert cell == f"{-100 / N:+.2f} pp [{-100 / N - half:+.2f}, {-100 / N + half:+.2f}]"
    assert not re.search(r"± 0\.0+(?![0-9])", text)


def test_differences_on_a_fifth_of_the_images_decide(tmp_path):
    text = _runs(tmp_path, lambda seed: slice(0, N // 5))  # EXP-1 misses 72 images the Baseline gets
    row = _answer(text, "negative transfer")
    assert row[2].startswith("-20.00 pp [") and row[4] == "**yes**"
    assert row[5] == "3 × 360; differ on 72"


def test_teacher_accuracy_is_shown_once_with_a_binomial_interval(tmp_path):
    text = _runs(tmp_path, lambda seed: [seed])
    cell = _matrix_cell(text, "**EXP-1**", 3)
    k = round(0.95 * N)
    ci = scipy_stats.binomtest(k, N).proportion_ci(confidence_level=0.95, method="exact")
    assert cell == f"{k / N * 100:.2f} % [{ci.low * 100:.2f}, {ci.high * 100:.2f}]"


def test_analytics_that_did_not_run_read_not_measured(tmp_path):
    text = _runs(tmp_path, lambda seed: [seed])
    for start in ("EXP-1 attends more locally", "Hessian trace EXP-1 > EXP-2", "EXP-1's CKA diagonal contrast"):
        line = _finding(text, start)
        if "EXP-2" in start:
            assert "no completed run of EXP-2" in line
        else:
            assert "**not measured**" in line and "inconclusive" not in line, line
    assert _matrix_cell(text, "**EXP-1**", 8) == "*not measured*"  # generalisation gap
    assert _matrix_cell(text, "**EXP-1**", 9) == "*not measured*"  # Hessian trace


def test_tables_come_before_the_reading_guide_and_seeds_are_named(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1, 5):
        write_run(runs, "baseline", seed=seed, val_acc=0.8)
    for seed in (0, 1):
        write_run(runs, "exp1", seed=seed, val_acc=0.7)
    text = render_report(load_runs(runs))
    assert text.index("## Experimental Matrix") < text.index("## How to read the numbers")
    assert text.index("## Key Findings") < text.index("## How to read the numbers")
    assert _matrix_cell(text, "**EXP-1**", 4).endswith(" (seeds 0, 1)")  # not the experiment's full {0, 1, 5}
    assert _matrix_cell(text, "**EXP-1**", 5).endswith(" (seeds 0, 1)")
    assert "seeds" not in _matrix_cell(text, "**Baseline**", 4).split("half-widths")[-1].split(")")[-1]


def test_random_weight_teacher_is_labelled(tmp_path):
    runs = tmp_path / "runs"
    headless = {"name": "vit_small_patch14_dinov2", "family": "ViT", "source": "random"}
    write_run(runs, "exp3", val_acc=0.5, teacher_knn_acc=0.03, teacher=headless, teacher_knn_images=64)
    text = render_report(load_runs(runs))
    assert "**Random-weight teacher**: EXP-3" in text
    assert _matrix_cell(text, "**EXP-3**", 3) == "3.00 % [0.38, 10.84] (random-weight, k-NN)"


def test_methods_table_gives_the_held_out_images_each_run_evaluated(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "exp3", seed=0, val_acc=0.5, val_images=96)
    write_run(runs, "exp3", seed=1, val_acc=0.5, val_images=96)
    write_run(runs, "baseline", seed=0, val_acc=0.5)  # an older run: only the configured count
    text = render_report(load_runs(runs))
    methods = text[text.index("## Methods") :]
    assert _matrix_cell(methods, "EXP-3", 6) == "96"
    assert _matrix_cell(methods, "Baseline", 6) == "144 (configured; evaluated count not recorded)"
