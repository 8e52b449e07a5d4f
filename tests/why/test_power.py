"""The detectable difference of a paired t-test against SciPy's noncentral t."""

import math

import pytest
from scipy import stats

from kdbias.report.power import detectable_difference, paired_power, seeds_needed


def scipy_power(delta: float, sd: float, n: int) -> float:
    df, nc = n - 1, delta * math.sqrt(n) / sd
    tc = stats.t.ppf(0.975, df)
    lower = stats.nct.cdf(-tc, df, nc)
    return stats.nct.sf(tc, df, nc) + (0.0 if math.isnan(lower) else lower)  # SciPy: NaN for a negligible tail


@pytest.mark.parametrize("n", [2, 3, 5, 10, 40])
@pytest.mark.parametrize("delta", [0.0, 0.005, 0.02, 0.06])
def test_power_matches_noncentral_t(n, delta):
    assert paired_power(delta, 0.01, n) == pytest.approx(scipy_power(delta, 0.01, n), abs=2e-6)


def test_power_at_zero_is_the_level_and_is_symmetric():
    assert paired_power(0.0, 1.0, 4) == pytest.approx(0.05, abs=1e-6)
    assert paired_power(-0.3, 1.0, 6) == pytest.approx(paired_power(0.3, 1.0, 6))


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_detectable_difference_has_80_percent_power(n):
    sd = 0.013
    delta = detectable_difference(sd, n)
    assert scipy_power(delta, sd, n) == pytest.approx(0.8, abs=1e-5)
    assert scipy_power(0.97 * delta, sd, n) < 0.8


def test_detectable_difference_scales_with_sd_and_falls_with_n():
    assert detectable_difference(0.02, 5) == pytest.approx(2 * detectable_difference(0.01, 5), rel=1e-6)
    values = [detectable_difference(0.01, n) for n in (2, 3, 5, 10)]
    assert values == sorted(values, reverse=True)
    assert detectable_difference(0.0, 3) == 0.0


def test_seeds_needed_is_the_first_n_below_the_target():
    sd = 0.015
    n = seeds_needed(sd, 0.01)
    assert scipy_power(0.01, sd, n) >= 0.8 - 1e-5
    assert scipy_power(0.01, sd, n - 1) < 0.8
    assert seeds_needed(0.0) == 2


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="n >= 2"):
        detectable_difference(0.01, 1)
    with pytest.raises(ValueError, match="sd"):
        detectable_difference(-1.0, 3)
