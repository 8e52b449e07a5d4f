"""The detectable difference against Monte Carlo: simulated paired t-tests (and simulated two-source
studies) counted by hand, with the test's rule written out here."""

import math

import numpy as np
import pytest
from scipy import stats

from kdbias.report.power import design_detectable, detectable_difference, paired_power, seeds_for
from kdbias.report.stats import Estimate


def simulated_power(delta: float, sd: float, n: int, draws: int = 40_000, seed: int = 0) -> float:
    """Share of simulated paired t-tests (n normal differences) that reject Δ = 0 at two-sided 5 %."""
    rng = np.random.default_rng(seed)
    x = delta + sd * rng.standard_normal((draws, n))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
    return float(np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1)))


@pytest.mark.parametrize("n", [2, 3, 5, 10])
@pytest.mark.parametrize("delta", [0.0, 0.01, 0.03])
def test_power_matches_simulated_t_tests(n, delta):
    assert paired_power(delta, 0.01, n) == pytest.approx(simulated_power(delta, 0.01, n), abs=0.01)


def test_power_at_zero_is_the_level_and_is_symmetric():
    assert paired_power(0.0, 1.0, 4) == pytest.approx(0.05, abs=1e-9)
    assert paired_power(-0.3, 1.0, 6) == pytest.approx(paired_power(0.3, 1.0, 6))


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_detectable_difference_has_80_percent_power(n):
    sd = 0.013
    delta = detectable_difference(sd, n)
    assert simulated_power(delta, sd, n) == pytest.approx(0.8, abs=0.01)
    assert paired_power(0.97 * delta, sd, n) < 0.8


def test_detectable_difference_scales_with_sd_and_falls_with_n():
    assert detectable_difference(0.02, 5) == pytest.approx(2 * detectable_difference(0.01, 5), rel=1e-6)
    values = [detectable_difference(0.01, n) for n in (2, 3, 5, 10)]
    assert values == sorted(values, reverse=True)
    assert detectable_difference(0.0, 3) == 0.0


def _estimate(sd: float, n: int, images: int, var_test: float) -> Estimate:
    return Estimate(0.0, n, sd, None, (), var_seed=sd**2 / n, var_test=var_test, images=images, test_kind="per-image")


def test_design_detectable_combines_the_parts_like_the_interval():
    est = _estimate(0.01, 3, 10_000, 0.003**2)
    seed_part = detectable_difference(0.01, 3)
    image_part = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * 0.003
    assert design_detectable(est) == pytest.approx(math.hypot(seed_part, image_part), rel=1e-9)
    assert design_detectable(est) >= max(seed_part, image_part)


def test_design_detectable_finds_about_80_percent_in_simulated_two_source_studies():
    """Studies with a seed part (n seeds, sd) and an image part (se): rejected when |mean| exceeds the
    report's half-width sqrt((t_{n-1} s / sqrt n)^2 + (z se)^2); at the design's detectable Δ the
    rejection rate is near 80 % (at least 75 %: the rule is conservative where both parts matter)."""
    sd, n, se = 0.01, 3, 0.004
    delta = design_detectable(_estimate(sd, n, 10**9, se**2))
    rng = np.random.default_rng(1)
    draws = 40_000
    seed_values = delta + sd * rng.standard_normal((draws, n))
    mean = seed_values.mean(axis=1) + se * rng.standard_normal(draws)
    half = np.hypot(stats.t.ppf(0.975, n - 1) * seed_values.std(axis=1, ddof=1) / math.sqrt(n), 1.96 * se)
    rate = float(np.mean(np.abs(mean) > half))
    assert 0.75 <= rate <= 0.85


def test_seeds_for_is_the_first_n_below_the_target_and_none_when_images_forbid_it():
    est = _estimate(0.015, 3, 10_000, 0.001**2)
    n = seeds_for(est, 0.01)
    assert design_detectable(est, n) <= 0.01 < design_detectable(est, n - 1)
    # 360 test images: an image SE of 0.5 pp alone needs 2.8 x 0.5 = 1.4 pp: no number of seeds reaches 1 pp
    assert seeds_for(_estimate(0.015, 3, 360, 0.005**2), 0.01) is None


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="n >= 2"):
        detectable_difference(0.01, 1)
    with pytest.raises(ValueError, match="sd"):
        detectable_difference(-1.0, 3)
    with pytest.raises(ValueError, match="two seeds"):
        design_detectable(Estimate(0.0, 1, None, None, ()))
