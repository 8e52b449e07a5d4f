"""How small a difference a design can detect, from the same variance parts as its verdict.

The seed part: for ``n`` seeds whose per-seed values have standard deviation ``sd``, the
two-sided paired t-test at level ``alpha`` rejects when ``|mean| / (sd / sqrt(n)) > t_c``,
``t_c = t_{1 - alpha/2, n-1}``; its power at a true difference ``delta`` is
``P(|T'| > t_c)`` with ``T'`` noncentral t (``df = n - 1``, noncentrality
``delta sqrt(n) / sd``; :data:`scipy.stats.nct`).

- :func:`detectable_difference`: the smallest ``delta`` with power >= 80 % (units of ``sd``);
- :func:`design_detectable`: the detectable difference of an estimate whose interval has a seed
  part and a test-image part (:mod:`kdbias.report.stats`): the two parts' detectable differences
  combined like the interval's half-widths (root sum of squares), the image part
  ``(z_{1-alpha/2} + z_{power}) sqrt(var_test)``;
- :func:`seeds_for`: the smallest number of seeds whose design detects a target (1 pp) at the
  observed seed SD, with the test-image part held fixed: ``None`` when the test images alone make
  the target unreachable (the image part does not shrink with more seeds: every seed is tested on
  the same images).

Stated beside a verdict, never used to change it.
"""

from __future__ import annotations

import math

from scipy import optimize
from scipy import stats as scipy_stats

from kdbias.report.stats import Estimate, t_ppf

__all__ = ["MAX_SEEDS", "POWER", "design_detectable", "detectable_difference", "paired_power", "seeds_for"]

POWER = 0.8
ALPHA = 0.05
MAX_SEEDS = 10_000


def paired_power(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power in [0, 1] of the two-sided paired t-test with ``n >= 2`` pairs at a true mean
    difference ``delta`` when the differences have standard deviation ``sd > 0``."""
    if n < 2:
        raise ValueError(f"a paired t-test needs n >= 2 pairs, got {n}")
    if not sd > 0:
        raise ValueError(f"sd must be > 0, got {sd}")
    df, critical = n - 1, t_ppf(1.0 - alpha / 2.0, n - 1)
    shift = abs(delta) * math.sqrt(n) / sd
    lower = float(scipy_stats.nct.cdf(-critical, df, shift))
    power = float(scipy_stats.nct.sf(critical, df, shift)) + (
        0.0 if math.isnan(lower) else lower
    )  # NaN: a tail < 1e-300
    return min(1.0, max(0.0, power))


def detectable_difference(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest ``|delta|`` (units of ``sd``) the paired t-test with ``n`` pairs detects with
    probability ``power`` at two-sided level ``alpha``; 0 when ``sd == 0``."""
    if sd < 0 or not math.isfinite(sd):
        raise ValueError(f"sd must be finite and >= 0, got {sd}")
    if n < 2:
        raise ValueError(f"a paired t-test needs n >= 2 pairs, got {n}")
    if sd == 0:
        return 0.0
    high = sd
    while paired_power(high, sd, n, alpha) < power:
        high *= 2.0
    return float(optimize.brentq(lambda d: paired_power(d, sd, n, alpha) - power, 0.0, high, xtol=1e-9 * sd))


def _image_part(var_test: float | None, power: float, alpha: float) -> float:
    if not var_test:
        return 0.0
    z = scipy_stats.norm.ppf
    return float((z(1.0 - alpha / 2.0) + z(power)) * math.sqrt(var_test))


def design_detectable(est: Estimate, seeds: int | None = None, power: float = POWER, alpha: float = ALPHA) -> float:
    """The detectable difference of ``est``'s design (with ``seeds`` seeds instead of ``est.n``):
    ``sqrt(seed_part² + image_part²)`` (module docstring). Needs ``est.sd`` (two or more seeds)."""
    n = est.n if seeds is None else seeds
    if est.sd is None:
        raise ValueError("the seed part needs at least two seeds")
    seed_part = detectable_difference(est.sd, n, power, alpha)
    return math.hypot(seed_part, _image_part(est.var_test, power, alpha))


def seeds_for(est: Estimate, target: float = 0.01, power: float = POWER, alpha: float = ALPHA) -> int | None:
    """The smallest ``n >= 2`` with ``design_detectable(est, n) <= target``; ``None`` when the
    test-image part alone reaches ``target`` (no number of seeds can) or beyond :data:`MAX_SEEDS`."""
    if not target > 0:
        raise ValueError(f"target must be > 0, got {target}")
    if _image_part(est.var_test, power, alpha) >= target:
        return None
    if design_detectable(est, MAX_SEEDS, power, alpha) > target:
        return None
    low, high = 1, 2
    while design_detectable(est, high, power, alpha) > target:
        low, high = high, min(2 * high, MAX_SEEDS)
    while high - low > 1:
        mid = (low + high) // 2
        if design_detectable(est, mid, power, alpha) <= target:
            high = mid
        else:
            low = mid
    return high
