"""Statistics of the report: pure functions, no I/O, no SciPy at run time.

- :func:`summarize`: mean ± half-width of the Student-t confidence interval over seeds.
- :func:`paired_delta`: the same over the per-seed differences of two experiments, on
  the seeds they share (an unpaired comparison is never made).
- :func:`verdict`: ``"yes"``, ``"no"`` or ``"inconclusive"`` for a claim about a paired
  difference: inconclusive when n < 2 or when the interval contains the threshold.
- :func:`normal_interval`: value ± z · standard error (Hutchinson's estimate of one run).

The t quantile (:func:`t_ppf`) inverts the Student-t distribution through the regularised
incomplete beta function (continued fraction, Lentz's method); it agrees with
``scipy.stats.t.ppf`` to about 1e-12 relative.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "CONFIDENCE",
    "Estimate",
    "HUTCHINSON_Z",
    "VERDICTS",
    "betainc",
    "finite",
    "normal_interval",
    "paired_delta",
    "summarize",
    "t_cdf",
    "t_ppf",
    "verdict",
]

CONFIDENCE = 0.95
HUTCHINSON_Z = 1.96  # two-sided 95 % of a normal estimate (the Hutchinson mean over many probes)
VERDICTS = ("yes", "no", "inconclusive")


def finite(value: object) -> float | None:
    """``value`` as a float when it is a finite real number (``bool`` is not), else ``None``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


# --------------------------------------------------------------------------- Student t


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0``, ``0 <= x <= 1``."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a, b > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t: the ``t`` with ``t_cdf(t, df) == p`` (``0 < p < 1``).

    Solves ``0.5 · I_x(df/2, 1/2) = 1 - p`` for ``x = df / (df + t²)`` by bisection to
    machine precision, then ``t = sqrt(df (1 - x) / x)``; near the centre (``p < 0.75``)
    the complementary ``I_y(1/2, df/2) = 2p - 1`` for ``y = 1 - x`` instead.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    if p < 0.75:  # near the centre: solve I_y(1/2, df/2) = 2p - 1 for y = t² / (df + t²)
        y = _bisect(lambda v: betainc(0.5, df / 2.0, v), 2.0 * p - 1.0)
        return math.sqrt(df * y / (1.0 - y))
    x = _bisect(lambda v: 0.5 * betainc(df / 2.0, 0.5, v), 1.0 - p)
    return math.sqrt(df * (1.0 - x) / x)


def _bisect(increasing, target: float) -> float:
    """The ``v`` in (0, 1) with ``increasing(v) == target``, to machine precision."""
    lo, hi = 0.0, 1.0
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if increasing(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class Estimate:
    """Mean of ``values`` with the half-width of its Student-t confidence interval.

    ``half_width`` is ``None`` when n = 1 (no interval). For a paired difference,
    ``seeds`` names the seeds whose differences are ``values`` (in that order).
    """

    mean: float
    n: int
    sd: float | None
    half_width: float | None
    values: tuple[float, ...]
    seeds: tuple[Hashable, ...] = ()
    confidence: float = CONFIDENCE

    @property
    def low(self) -> float | None:
        """Lower end of the interval (``None`` when n = 1)."""
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        """Upper end of the interval (``None`` when n = 1)."""
        return None if self.half_width is None else self.mean + self.half_width


def summarize(values: Iterable[object], confidence: float = CONFIDENCE) -> Estimate | None:
    """Mean ± ``t_{(1+c)/2, n-1} · s / sqrt(n)`` of the finite values (``s``: sample standard
    deviation, ddof = 1); ``None`` when there is none; no interval when n = 1."""
    kept = tuple(v for v in (finite(x) for x in values) if v is not None)
    return _estimate(kept, (), confidence)


def _estimate(values: tuple[float, ...], seeds: tuple[Hashable, ...], confidence: float) -> Estimate | None:
    n = len(values)
    if n == 0:
        return None
    mean = math.fsum(values) / n
    if n == 1:
        return Estimate(mean, 1, None, None, values, seeds, confidence)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, n, sd, half, values, seeds, confidence)


def paired_delta(
    a: Mapping[Hashable, object], b: Mapping[Hashable, object], confidence: float = CONFIDENCE
) -> Estimate | None:
    """``a - b`` paired by key (seed): :func:`summarize` of ``a[s] - b[s]`` over the seeds
    where both are finite (n = number of pairs); ``None`` when no seed is shared."""
    common = sorted((s for s in a if s in b), key=lambda s: (str(type(s)), s))
    pairs = [(s, finite(a[s]), finite(b[s])) for s in common]
    kept = [(s, x - y) for s, x, y in pairs if x is not None and y is not None]
    return _estimate(tuple(d for _, d in kept), tuple(s for s, _ in kept), confidence)


def verdict(estimate: Estimate | None, claim: str = ">", threshold: float = 0.0) -> str:
    """Verdict on the claim ``Δ <claim> threshold`` (``claim`` is ``">"``, ``">="`` or ``"<"``).

    ``"inconclusive"`` when there is no estimate, n < 2, or the closed interval contains
    ``threshold``; otherwise ``"yes"`` when the whole interval lies on the claimed side and
    ``"no"`` when it lies on the other (``">"`` and ``">="`` read the same: an interval that
    touches the threshold is inconclusive).
    """
    if claim not in (">", ">=", "<"):
        raise ValueError(f"claim must be '>', '>=' or '<', got {claim!r}")
    if estimate is None or estimate.n < 2 or estimate.half_width is None:
        return "inconclusive"
    low, high = estimate.low, estimate.high
    assert low is not None and high is not None
    if low <= threshold <= high:
        return "inconclusive"
    above = low > threshold
    return ("yes" if above else "no") if claim in (">", ">=") else ("no" if above else "yes")


def normal_interval(value: float, stderr: float, z: float = HUTCHINSON_Z) -> tuple[float, float]:
    """``(value - z · stderr, value + z · stderr)``: the 95 % interval of one Hutchinson estimate."""
    return value - z * stderr, value + z * stderr
