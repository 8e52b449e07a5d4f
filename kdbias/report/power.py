"""How many seeds a verdict needs: the detectable difference of a paired t-test.

For ``n`` seeds whose per-seed differences have standard deviation ``sd``, the two-sided
paired t-test at level ``alpha`` rejects ``Δ = 0`` when ``|mean| / (sd / sqrt(n)) > t_c``,
``t_c = t_{1 - alpha/2, n-1}``. Its power at a true difference ``delta`` is
``P(|T'| > t_c)`` with ``T' = (Z + lambda) / sqrt(V / df)`` noncentral t, ``lambda =
delta sqrt(n) / sd``, ``Z`` standard normal, ``V`` chi-squared with ``df = n - 1``.

It is computed by integrating the normal tail over the distribution of ``u = sqrt(V / df)``
(composite Simpson rule in float64 with ``torch.special.ndtr``, no SciPy at run time)::

    power = E_u[ Phi(-t_c u + lambda) + Phi(-t_c u - lambda) ]

- :func:`detectable_difference`: the smallest ``delta`` with power >= 80 % (same units as
  ``sd``, e.g. accuracy as a fraction);
- :func:`seeds_needed`: the smallest ``n`` whose detectable difference is at most a target
  (1 pp = 0.01) at that ``sd``.

Stated beside a verdict, never used to change it.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from kdbias.report.stats import t_ppf

__all__ = ["MAX_SEEDS", "POWER", "detectable_difference", "paired_power", "seeds_needed"]

POWER = 0.8
ALPHA = 0.05
MAX_SEEDS = 100_000
_STEPS = 4000  # Simpson intervals over u


@lru_cache(maxsize=256)
def _critical(df: int, alpha: float) -> float:
    return t_ppf(1.0 - alpha / 2.0, df)


@lru_cache(maxsize=256)
def _u_grid(df: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``u`` and Simpson weights times the density of ``u = sqrt(V / df)``, ``V ~ chi2(df)``:
    ``f(u) = 2 (df/2)^(df/2) / Gamma(df/2) u^(df-1) exp(-df u^2 / 2)`` (float64)."""
    spread = 12.0 / math.sqrt(df)
    low = 0.0 if df < 4 else max(0.0, 1.0 - spread)
    high = 1.0 + spread + (10.0 if df == 1 else 0.0)
    u = torch.linspace(low, high, _STEPS + 1, dtype=torch.float64)
    weights = torch.ones_like(u)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    weights *= (high - low) / _STEPS / 3.0
    log_front = math.log(2.0) + (df / 2.0) * math.log(df / 2.0) - math.lgamma(df / 2.0)
    density = torch.exp(log_front + (df - 1) * torch.log(u.clamp_min(1e-300)) - df * u * u / 2.0)
    if df == 1:
        density[u == 0] = math.exp(log_front)
    return u, weights * density


def paired_power(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power in [0, 1] of the two-sided paired t-test with ``n >= 2`` pairs at a true mean
    difference ``delta`` when the differences have standard deviation ``sd > 0``."""
    if n < 2:
        raise ValueError(f"a paired t-test needs n >= 2 pairs, got {n}")
    if not sd > 0:
        raise ValueError(f"sd must be > 0, got {sd}")
    df = n - 1
    critical = _critical(df, alpha)
    shift = abs(delta) * math.sqrt(n) / sd
    u, weighted = _u_grid(df)
    tail = torch.special.ndtr(-critical * u + shift) + torch.special.ndtr(-critical * u - shift)
    return min(1.0, max(0.0, float((tail * weighted).sum())))


def detectable_difference(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest ``|delta|`` (units of ``sd``'s values) the paired t-test with ``n`` pairs
    detects with probability ``power`` at two-sided level ``alpha``; 0 when ``sd == 0``."""
    if sd < 0 or not math.isfinite(sd):
        raise ValueError(f"sd must be finite and >= 0, got {sd}")
    if n < 2:
        raise ValueError(f"a paired t-test needs n >= 2 pairs, got {n}")
    if sd == 0:
        return 0.0
    lo, hi = 0.0, sd
    while paired_power(hi, sd, n, alpha) < power:
        lo, hi = hi, 2.0 * hi
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if paired_power(mid, sd, n, alpha) < power:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-7 * sd:
            break
    return 0.5 * (lo + hi)


def seeds_needed(sd: float, target: float = 0.01, power: float = POWER, alpha: float = ALPHA) -> int | None:
    """The smallest ``n >= 2`` whose :func:`detectable_difference` at ``sd`` is at most ``target``
    (``None`` beyond :data:`MAX_SEEDS`); 2 when ``sd == 0``."""
    if not target > 0:
        raise ValueError(f"target must be > 0, got {target}")
    if sd == 0:
        return 2

    def ok(n: int) -> bool:
        return detectable_difference(sd, n, power, alpha) <= target

    lo, hi = 1, 2  # ok(lo) is False by convention, find hi with ok(hi)
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > MAX_SEEDS:
            return None if not ok(MAX_SEEDS) else _first(ok, lo, MAX_SEEDS)
    return _first(ok, lo, hi)


def _first(ok, lo: int, hi: int) -> int:
    """The smallest n in (lo, hi] with ok(n), for ok monotone and ok(hi) true."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
