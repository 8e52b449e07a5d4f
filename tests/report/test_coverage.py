"""Coverage of the report's intervals on simulated studies with a known truth (kdbias.report.simulate),
and printed intervals never narrower than their own seed part."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_fixtures import write_run

from kdbias.report import load_runs, render_report
from kdbias.report.simulate import Regime, coverage, regimes, truth

STUDIES = 2000  # per regime and truth in the slow test


def test_truth_is_the_population_contrast_by_monte_carlo():
    """The closed form of the simulator's truth against a large draw of the same probit model."""
    regime = Regime("check", 2, 10, sigma=0.2, tau=0.7)
    rng = np.random.default_rng(0)
    n = 2_000_000
    scale_draws = rng.standard_normal((4, n)) * np.sqrt(1 + regime.tau**2 + regime.sigma**2)
    from kdbias.report.simulate import _means

    means = _means(regime, 0.1)
    acc = {k: float(np.mean(means[k] + d + rng.standard_normal(n) > 0)) for k, d in zip(means, scale_draws)}
    true = truth(regime, 0.1)
    assert true["pair"] == pytest.approx(acc["AC"] - acc["AK"], abs=0.003)
    assert true["interaction"] == pytest.approx(acc["BC"] - acc["BK"] - acc["AC"] + acc["AK"], abs=0.004)


@pytest.mark.parametrize(
    "regime", [Regime("seed-dominated", 2, 360, 0.2, 0.0), Regime("image-dominated", 3, 360, 0.01, 1.0)]
)
def test_coverage_on_a_few_hundred_studies(regime):
    """CI-sized: 300 studies per truth (binomial SE of a 95 % coverage ≈ 1.3 pp)."""
    live = coverage(regime, 300, 0.1, seed=11)
    null = coverage(regime, 300, 0.0, seed=12)
    for name in live:
        assert live[name]["coverage"] >= 0.92, (name, live[name])
        assert null[name]["decisive"] <= 0.08, (name, null[name])
        assert live[name]["narrower"] == 0.0 and null[name]["narrower"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("regime", regimes(), ids=lambda r: f"{r.name}-S{r.seeds}-N{r.images}")
def test_coverage_in_every_regime(regime):
    """2,000 studies per regime and truth (binomial SE of a 95 % coverage ≈ 0.5 pp): coverage of the true Δ
    and of every 2 × 2 effect ≥ 94 %, a yes/no verdict at Δ = 0 in ≤ 6 % of studies, no interval narrower
    than its seed part."""
    live = coverage(regime, STUDIES, 0.1, seed=regime.seeds * 100 + regime.images)
    null = coverage(regime, STUDIES, 0.0, seed=regime.seeds * 100 + regime.images + 1)
    for name in live:
        assert live[name]["coverage"] >= 0.94, (name, live[name])
        assert null[name]["coverage"] >= 0.94, (name, null[name])
        assert null[name]["decisive"] <= 0.06, (name, null[name])
        assert live[name]["narrower"] == null[name]["narrower"] == 0.0


def test_no_printed_interval_is_narrower_than_its_seed_part(tmp_path):
    """A runs folder whose seeds disagree a lot (2 seeds, 360 images): every accuracy cell's whole
    half-width is at least its seed half-width, and the seed half-width is the t(1) one written out."""
    rng = np.random.default_rng(5)
    accs = {}
    for name in ("baseline", "exp1", "exp2", "exp3", "baseline_b512"):
        for seed in range(2):
            correct = rng.random(360) < rng.uniform(0.3, 0.9)
            accs[name, seed] = correct.mean()
            write_run(tmp_path, name, seed, correct=correct)
    text = render_report(load_runs(tmp_path))
    cells = re.findall(r"± ([0-9.]+) (?:%|pp) \(n=2; half-widths: seeds ([0-9.]+), test set ([0-9.]+)", text)
    assert len(cells) >= 5
    for whole, seed, test in cells:
        assert float(whole) >= float(seed) - 0.01 and float(whole) >= float(test) - 0.01
    base = np.array([accs["baseline", s] for s in range(2)])
    seed_half = stats.t.ppf(0.975, 1) * base.std(ddof=1) / np.sqrt(2) * 100
    assert f"seeds {seed_half:.2f}" in text
    assert not re.search(r"± 0\.00 %", text)
