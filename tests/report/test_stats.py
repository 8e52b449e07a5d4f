"""kdbias.report.stats against formulas written out here with scipy.stats.t."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdbias.report.stats import betainc, normal_interval, paired_delta, summarize, t_cdf, t_ppf, verdict

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 29, 200])
@pytest.mark.parametrize("p", [0.975, 0.995, 0.9, 0.025])
def test_t_ppf_matches_scipy(p, df):
    assert t_ppf(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-10)
    assert t_cdf(t_ppf(p, df), df) == pytest.approx(p, rel=1e-10)


def test_betainc_matches_scipy():
    from scipy.special import betainc as reference

    for a, b in [(0.5, 0.5), (1.5, 0.5), (0.5, 7.0), (4.0, 0.5)]:
        for x in (1e-9, 0.01, 0.3, 0.5, 0.77, 0.999):
            assert betainc(a, b, x) == pytest.approx(reference(a, b, x), rel=1e-11, abs=1e-300)


def test_summarize_is_mean_and_student_t_half_width():
    values = [0.8602, 0.8571, 0.8633]
    est = summarize([*values, None, float("nan"), True])  # non-numbers and non-finite values are left out
    n, mean, sd = 3, np.mean(values), np.std(values, ddof=1)
    assert (est.n, est.mean) == (n, pytest.approx(mean))
    assert est.sd == pytest.approx(sd)
    assert est.half_width == pytest.approx(scipy_stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    assert (est.low, est.high) == (pytest.approx(mean - est.half_width), pytest.approx(mean + est.half_width))
    single = summarize([0.5])
    assert single.n == 1 and single.half_width is None and single.low is None
    assert summarize([None, float("inf")]) is None


def test_paired_delta_uses_common_seeds_only():
    exp1 = {0: 0.80, 1: 0.82, 3: 0.79, 4: 0.81}
    baseline = {1: 0.80, 2: 0.70, 3: 0.78, 4: 0.77}
    delta = paired_delta(exp1, baseline)
    diffs = np.array([0.82 - 0.80, 0.79 - 0.78, 0.81 - 0.77])  # seeds 1, 3, 4; 0 and 2 have no partner
    n = len(diffs)
    assert delta.seeds == (1, 3, 4) and delta.n == n
    assert delta.mean == pytest.approx(diffs.mean())
    half = scipy_stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / math.sqrt(n)
    assert delta.half_width == pytest.approx(half)
    assert paired_delta({0: 0.8}, {1: 0.7}) is None  # no common seed: no comparison at all
    one = paired_delta({0: 0.8, 1: 0.9}, {1: 0.7, 2: 0.1})
    assert (one.n, one.mean, one.half_width) == (1, pytest.approx(0.2), None)


def test_verdicts():
    separated = paired_delta({0: 0.90, 1: 0.91, 2: 0.92}, {0: 0.80, 1: 0.80, 2: 0.81})
    assert separated.low > 0 and verdict(separated, ">") == "yes" and verdict(separated, "<") == "no"
    overlapping = paired_delta({0: 0.81, 1: 0.79, 2: 0.80}, {0: 0.80, 1: 0.80, 2: 0.80})
    assert overlapping.low < 0 < overlapping.high
    assert verdict(overlapping, ">") == verdict(overlapping, "<") == "inconclusive"
    single = paired_delta({0: 0.99}, {0: 0.10})
    assert verdict(single, ">") == "inconclusive"  # n = 1: no interval, no verdict
    assert verdict(None, ">") == "inconclusive"
    # a threshold claim: inconclusive while the CI contains the threshold
    gain = paired_delta({0: 0.84, 1: 0.835, 2: 0.83}, {0: 0.80, 1: 0.80, 2: 0.80})
    assert gain.low > 0.03 - 0.01 and verdict(gain, ">=", 0.03) == "inconclusive"
    assert verdict(gain, ">=", 0.01) == "yes" and verdict(gain, ">=", 0.05) == "no"
    with pytest.raises(ValueError):
        verdict(gain, "!=")


def test_normal_interval():
    assert normal_interval(10.0, 2.0) == pytest.approx((10.0 - 3.92, 10.0 + 3.92))
