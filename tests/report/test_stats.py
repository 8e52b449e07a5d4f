"""kdbias.report.stats against formulas written out here with numpy and scipy.stats."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as scipy_stats

from kdbias.report.engine import verdict
from kdbias.report.stats import (
    accuracy_estimate,
    accuracy_estimate_binomial,
    binomial_interval,
    paired_accuracy_delta,
    paired_delta,
    paired_delta_binomial,
    proportions_difference,
    summarize,
    t_ppf,
)


def test_t_ppf_is_scipy_and_checks_its_arguments():
    assert t_ppf(0.975, 3) == pytest.approx(3.182446305284263, rel=1e-12)  # printed tables: 3.182
    assert t_ppf(0.975, 1e9) == pytest.approx(1.959963984540054, rel=1e-8)  # the normal quantile
    with pytest.raises(ValueError):
        t_ppf(1.0, 3)
    with pytest.raises(ValueError):
        t_ppf(0.9, 0)


def test_summarize_is_mean_and_student_t_half_width():
    values = [0.8602, 0.8571, 0.8633]
    est = summarize([*values, None, float("nan"), True, 10**401])  # non-numbers, non-finite, huge ints left out
    n, mean, sd = 3, np.mean(values), np.std(values, ddof=1)
    assert (est.n, est.mean) == (n, pytest.approx(mean))
    assert est.sd == pytest.approx(sd)
    assert est.half_width == pytest.approx(scipy_stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    single = summarize([0.5])
    assert single.n == 1 and single.half_width is None and single.low is None
    assert summarize([None, float("inf")]) is None


def test_paired_delta_uses_common_seeds_only():
    exp1 = {0: 0.80, 1: 0.82, 3: 0.79, 4: 0.81}
    baseline = {1: 0.80, 2: 0.70, 3: 0.78, 4: 0.77}
    delta = paired_delta(exp1, baseline)
    diffs = np.array([0.82 - 0.80, 0.79 - 0.78, 0.81 - 0.77])
    n = len(diffs)
    assert delta.seeds == (1, 3, 4) and delta.n == n
    assert delta.half_width == pytest.approx(scipy_stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / math.sqrt(n))
    assert paired_delta({0: 0.8}, {1: 0.7}) is None


def _reference_two_way(x: np.ndarray) -> tuple[float, float, float, float]:
    """Mean, half-width, seed half-width, image half-width written out: seed part
    t(S-1) sqrt(var_s(row means)/S), image part t(N-1) sqrt(var_i(column means)/N), the whole
    half-width the root sum of their squares."""
    S, N = x.shape
    a = np.var(x.mean(axis=1), ddof=1) / S
    b = np.var(x.mean(axis=0), ddof=1) / N
    seed = scipy_stats.t.ppf(0.975, S - 1) * np.sqrt(a)
    test = scipy_stats.t.ppf(0.975, N - 1) * np.sqrt(b)
    return x.mean(), math.hypot(seed, test), seed, test


def test_paired_accuracy_delta_matches_the_written_out_variance_formula():
    rng = np.random.default_rng(0)
    N = 500
    a = {s: rng.random(N) < 0.80 + 0.01 * s for s in range(4)}
    b = {s: rng.random(N) < 0.75 for s in range(4)}
    est = paired_accuracy_delta(a, b)
    x = np.stack([a[s].astype(float) - b[s].astype(float) for s in range(4)])
    mean, half, seed_half, test_half = _reference_two_way(x)
    assert est.mean == pytest.approx(mean) and est.half_width == pytest.approx(half)
    assert est.seed_half == pytest.approx(seed_half) and est.test_half == pytest.approx(test_half)
    assert est.disagree == int((x != 0).any(axis=0).sum())
    assert est.net_images == pytest.approx(x.sum(axis=1).mean())
    assert est.values == pytest.approx(list(x.mean(axis=1)))  # per-seed accuracy differences
    assert est.images == N and est.test_kind == "per-image"


def test_accuracy_interval_covers_like_a_bootstrap_over_seeds_and_images():
    """The analytic half-width agrees with a two-way bootstrap (seeds and images resampled)
    to within the bootstrap's noise on a case with both sources of variation."""
    rng = np.random.default_rng(1)
    S, N = 5, 400
    ease = rng.random(N)  # image difficulty: shared by every seed
    skill = 0.7 + 0.03 * rng.standard_normal(S)
    correct = {s: rng.random(N) < np.clip(skill[s] + 0.4 * (ease - 0.5), 0, 1) for s in range(S)}
    est = accuracy_estimate(correct)
    c = np.stack([correct[s].astype(float) for s in range(S)])
    boot = []
    for _ in range(4000):
        rows = rng.integers(0, S, S)
        cols = rng.integers(0, N, N)
        boot.append(c[np.ix_(rows, cols)].mean())
    sd_boot = np.std(boot, ddof=1)
    sd_formula = est.half_width / scipy_stats.t.ppf(0.975, est.df)
    assert sd_formula == pytest.approx(sd_boot, rel=0.2)


def test_one_image_per_seed_gives_a_non_zero_interval_and_no_verdict():
    """The issue's case: three seeds that each differ by one test image (per-seed Δ identical)."""
    N = 360
    base = np.zeros(N, dtype=bool)
    base[:324] = True  # 90 %
    a, b = {}, {}
    for s in range(3):
        other = base.copy()
        other[324 + s] = True  # one more image right, a different one per seed
        a[s], b[s] = base, other
    est = paired_accuracy_delta(a, b)
    assert est.values == pytest.approx([-1 / N] * 3)
    assert paired_delta({s: a[s].mean() for s in a}, {s: b[s].mean() for s in b}).half_width == pytest.approx(0.0)
    assert est.half_width > 0 and est.low < 0 < est.high
    assert est.disagree == 3 and est.net_images == pytest.approx(-1.0)
    assert verdict(est, "<", accuracy=True) == "inconclusive"


def test_twenty_percent_of_images_decide():
    N = 360
    a = {s: np.ones(N, dtype=bool) for s in range(3)}
    b = {}
    for s in range(3):
        wrong = np.ones(N, dtype=bool)
        wrong[:72] = False  # b misses 20 % of the images
        b[s] = wrong
    est = paired_accuracy_delta(a, b)
    assert est.mean == pytest.approx(0.2) and est.disagree == 72
    assert verdict(est, ">", accuracy=True) == "yes" and verdict(est, "<", accuracy=True) == "no"


def test_few_deciding_images_are_never_a_verdict():
    # 3 seeds, net 2 images each, tiny variance: the interval excludes 0 but 2 images decide it
    N = 100_000
    a = {s: np.zeros(N, dtype=bool) for s in range(3)}
    b = {s: np.zeros(N, dtype=bool) for s in range(3)}
    for s in range(3):
        a[s][:2] = True
    est = paired_accuracy_delta(a, b)
    assert abs(est.net_images) == 2
    assert verdict(est, ">", accuracy=True) == "inconclusive"


def test_binomial_bound_and_its_verdict():
    accs = {0: 0.8, 1: 0.81, 2: 0.79}
    est = accuracy_estimate_binomial(accs, 1000)
    p = np.mean(list(accs.values()))
    a, b = np.var(list(accs.values()), ddof=1) / 3, p * (1 - p) / 999
    seed, test = scipy_stats.t.ppf(0.975, 2) * math.sqrt(a), scipy_stats.t.ppf(0.975, 999) * math.sqrt(b)
    assert est.half_width == pytest.approx(math.hypot(seed, test))
    assert est.test_kind == "binomial bound"
    delta = paired_delta_binomial({0: 0.9, 1: 0.91}, {0: 0.5, 1: 0.5}, 1000)
    assert delta.test_kind == "binomial bound" and delta.half_width > 0
    assert verdict(delta, ">") == "yes"
    assert verdict(delta, ">", accuracy=True) == "inconclusive"  # no per-image data: no accuracy verdict


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (36, 360), (344, 360), (360, 360), (9550, 10000)])
def test_binomial_interval_is_scipys_clopper_pearson(k, n):
    reference = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = binomial_interval(k, n)
    assert low == pytest.approx(reference.low, abs=1e-12) and high == pytest.approx(reference.high, abs=1e-12)
    with pytest.raises(ValueError):
        binomial_interval(11, 10)


def test_verdicts():
    separated = paired_delta({0: 0.90, 1: 0.91, 2: 0.92}, {0: 0.80, 1: 0.80, 2: 0.81})
    assert verdict(separated, ">") == "yes" and verdict(separated, "<") == "no"
    overlapping = paired_delta({0: 0.81, 1: 0.79, 2: 0.80}, {0: 0.80, 1: 0.80, 2: 0.80})
    assert verdict(overlapping, ">") == verdict(overlapping, "<") == "inconclusive"
    assert verdict(paired_delta({0: 0.99}, {0: 0.10}), ">") == "inconclusive"
    assert verdict(None, ">") == "not measured"
    gain = paired_delta({0: 0.84, 1: 0.835, 2: 0.83}, {0: 0.80, 1: 0.80, 2: 0.80})
    assert verdict(gain, ">=", 0.03) == "inconclusive"
    assert verdict(gain, ">=", 0.01) == "yes" and verdict(gain, ">=", 0.05) == "no"
    with pytest.raises(ValueError):
        verdict(gain, "!=")


def test_a_difference_of_two_proportions_measured_once_is_the_wald_interval():
    est = proportions_difference((0.90, 2000), (0.95, 1000), seeds=(0,))
    se = math.sqrt(0.9 * 0.1 / 2000 + 0.95 * 0.05 / 1000)
    assert est.mean == pytest.approx(-0.05) and est.n == 2 and est.seeds == (0,)
    assert est.half_width == pytest.approx(scipy_stats.norm.ppf(0.975) * se, rel=1e-6)
    assert est.low < -0.05 < est.high and est.test_kind == "binomial bound"
    at_one = proportions_difference((1.0, 400), (1.0, 100))  # both at 1: the floored variance 1 / (4 · 400²)
    assert at_one.mean == 0.0 and at_one.half_width == pytest.approx(scipy_stats.norm.ppf(0.975) / 800, rel=1e-6)


def test_seeds_and_images_falls_back_to_seeds_only_without_matching_per_image_values():
    """Per-image values on different numbers of images (or missing for a seed): the interval is the
    seed-only t interval, written out here; matching ones: the two-part interval (wider)."""
    from kdbias.report.stats import seeds_and_images

    values = {0: 0.5, 1: 0.7, 2: 0.6}
    seed_only = scipy_stats.t.ppf(0.975, 2) * np.std(list(values.values()), ddof=1) / np.sqrt(3)
    for images in ({0: np.ones(4), 1: np.ones(5), 2: np.ones(4)}, {0: np.ones(4), 1: np.ones(4)}):
        est = seeds_and_images(values, images)
        assert est.mean == pytest.approx(0.6) and est.half_width == pytest.approx(seed_only)
    rng = np.random.default_rng(0)
    per_image = {s: (rng.random(50) < v).astype(float) for s, v in values.items()}
    both = seeds_and_images({s: float(a.mean()) for s, a in per_image.items()}, per_image)
    assert both.test_half is not None and both.half_width >= both.seed_half
    assert seeds_and_images({}, {}) is None
