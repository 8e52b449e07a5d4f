"""Statistics of the report: pure functions on numbers and arrays, SciPy's distributions.

Two sources vary in an accuracy: the training seed and the finite test set (the same
test images for every run). The intervals (all two-sided, 95 % by default):

- :func:`summarize`: mean ± Student-t half-width over seeds, ``t_{0.975, n-1} · s / √n``
  (figures that have no test-image error: Hessian, attention distance, CKA, times).
- :func:`accuracy_estimate` / :func:`paired_accuracy_delta`: from per-image correctness
  ``c[s, i]`` (seed ``s``, test image ``i``; for a Δ, ``x[s, i] = c_a[s, i] - c_b[s, i]`` on
  the same image). The estimate is the grand mean; its variance is the sum of a seed term
  ``var_s(row means) / S`` and a test-image term ``var_i(column means) / N`` (both with
  ddof = 1; the crossed two-way random-effects approximation, which counts the seed × image
  residual in both terms and so errs on the wide side). Because every seed is tested on
  the same images, the image term does not shrink with more seeds. The half-width is
  ``t_{0.975, ν} · √(a + b)`` with Welch–Satterthwaite ``ν = (a + b)² / (a² / (S-1) + b² / (N-1))``.
  With one seed only the image term exists (``ν = N - 1``) and the seed spread is unknown.
- :func:`accuracy_estimate_binomial`: without per-image data, the image term is bounded by
  ``p̄ (1 - p̄) / (N - 1)`` (a variance of numbers in [0, 1] with mean p̄ is at most p̄ (1 - p̄)).
- :func:`binomial_interval`: a quantity measured once on ``n`` images (a teacher's
  accuracy): Clopper–Pearson (exact) interval from Beta quantiles.
- :func:`verdict`: yes / no / inconclusive on a claim about a Δ; an accuracy Δ also needs
  per-image data and more than :data:`MIN_DECIDING_IMAGES` images of net difference.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from kdbias.schema import finite

__all__ = [
    "CONFIDENCE",
    "MIN_DECIDING_IMAGES",
    "VERDICTS",
    "Estimate",
    "accuracy_estimate",
    "accuracy_estimate_binomial",
    "binomial_interval",
    "finite",
    "paired_accuracy_delta",
    "paired_delta",
    "paired_delta_binomial",
    "summarize",
    "t_ppf",
    "verdict",
]

CONFIDENCE = 0.95
VERDICTS = ("yes", "no", "inconclusive")
MIN_DECIDING_IMAGES = 3  # an accuracy Δ of fewer net test images per seed is never a yes/no


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    return float(scipy_stats.t.ppf(p, df))


@dataclass(frozen=True)
class Estimate:
    """A mean with the half-width of its confidence interval.

    Attributes:
        mean: the estimate (a fraction for accuracies).
        n: number of seeds (for a Δ: seeds both runs have).
        sd: sample standard deviation over seeds (ddof = 1; ``None`` when n = 1).
        half_width: half-width of the whole interval (``None``: no interval).
        values: per-seed values (per-seed differences for a Δ), in ``seeds`` order.
        seeds: the seeds, sorted.
        seed_half, test_half: the parts from seeds alone (``t_{n-1} √a``) and from test
            images alone (``t_{N-1} √b``); ``None`` where that source is not included.
        test_kind: how the test-set error entered: ``"per-image"``, ``"binomial bound"``,
            or ``None`` (not included: seeds only).
        images: test images per seed (N).
        disagree: test images on which the two runs' correctness differs in at least one
            seed (a Δ with per-image data).
        net_images: mean over seeds of (images only ``a`` got right − images only ``b`` got right).
        df: degrees of freedom of the t quantile.
    """

    mean: float
    n: int
    sd: float | None
    half_width: float | None
    values: tuple[float, ...]
    seeds: tuple[Hashable, ...] = ()
    confidence: float = CONFIDENCE
    seed_half: float | None = None
    test_half: float | None = None
    test_kind: str | None = None
    images: int | None = None
    disagree: int | None = None
    net_images: float | None = None
    df: float | None = None

    @property
    def low(self) -> float | None:
        """Lower end of the interval (``None`` without one)."""
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        """Upper end of the interval (``None`` without one)."""
        return None if self.half_width is None else self.mean + self.half_width


def _sorted(seeds: Iterable[Hashable]) -> list[Hashable]:
    return sorted(seeds, key=lambda s: (str(type(s)), s))


def _seed_only(values: tuple[float, ...], seeds: tuple[Hashable, ...], confidence: float) -> Estimate | None:
    n = len(values)
    if n == 0:
        return None
    mean = math.fsum(values) / n
    if n == 1:
        return Estimate(mean, 1, None, None, values, seeds, confidence)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, n, sd, half, values, seeds, confidence, seed_half=half, df=n - 1)


def summarize(
    values: Iterable[object], confidence: float = CONFIDENCE, seeds: Iterable[Hashable] = ()
) -> Estimate | None:
    """Mean ± ``t_{(1+c)/2, n-1} · s / √n`` of the finite values (``s``: ddof = 1);
    ``None`` when there is none; no interval when n = 1. ``seeds``: names of the values
    (kept only when every value is finite)."""
    raw = list(values)
    kept = tuple(v for v in (finite(x) for x in raw) if v is not None)
    names = tuple(seeds)
    return _seed_only(kept, names if len(names) == len(kept) == len(raw) else (), confidence)


def paired_delta(
    a: Mapping[Hashable, object], b: Mapping[Hashable, object], confidence: float = CONFIDENCE
) -> Estimate | None:
    """``a - b`` paired by key (seed): :func:`summarize` of ``a[s] - b[s]`` over the seeds
    where both are finite; ``None`` when no seed is shared. Seed spread only."""
    kept = []
    for s in _sorted(s for s in a if s in b):
        x, y = finite(a[s]), finite(b[s])
        if x is not None and y is not None:
            kept.append((s, x - y))
    return _seed_only(tuple(d for _, d in kept), tuple(s for s, _ in kept), confidence)


def _two_way(matrix: np.ndarray, seeds: tuple[Hashable, ...], confidence: float) -> Estimate:
    """Grand mean of ``matrix`` ``[S, N]`` with the seed + test-image interval (module docstring)."""
    S, N = matrix.shape
    rows = matrix.mean(axis=1)
    cols = matrix.mean(axis=0)
    mean = float(matrix.mean())
    b = float(cols.var(ddof=1)) / N if N > 1 else 0.0
    q = 0.5 + confidence / 2.0
    test_half = t_ppf(q, N - 1) * math.sqrt(b) if N > 1 else None
    if S == 1:
        df = float(N - 1) if N > 1 else None
        half = test_half
        return Estimate(
            mean, 1, None, half, tuple(rows.tolist()), seeds, confidence, None, test_half, "per-image", N, df=df
        )
    sd = float(rows.std(ddof=1))
    a = sd**2 / S
    if a + b == 0.0:
        df = float(S - 1)
    else:
        df = (a + b) ** 2 / (a**2 / (S - 1) + (b**2 / (N - 1) if N > 1 else 0.0))
    half = t_ppf(q, df) * math.sqrt(a + b)
    seed_half = t_ppf(q, S - 1) * math.sqrt(a)
    return Estimate(
        mean, S, sd, half, tuple(rows.tolist()), seeds, confidence, seed_half, test_half, "per-image", N, df=df
    )


def accuracy_estimate(correct: Mapping[Hashable, np.ndarray], confidence: float = CONFIDENCE) -> Estimate | None:
    """Mean accuracy over seeds from per-image correctness ``{seed: bool[N]}`` (the same N
    test images in the same order for every seed), with the seed + test-image interval."""
    seeds = tuple(_sorted(correct))
    if not seeds:
        return None
    matrix = np.stack([np.asarray(correct[s], dtype=np.float64) for s in seeds])
    return _two_way(matrix, seeds, confidence)


def paired_accuracy_delta(
    a: Mapping[Hashable, np.ndarray], b: Mapping[Hashable, np.ndarray], confidence: float = CONFIDENCE
) -> Estimate | None:
    """``acc_a - acc_b`` on the seeds both have, image by image: ``x[s, i] = a[s][i] - b[s][i]``
    (per-image correctness on the same test images), with the seed + test-image interval,
    the number of images where the two disagree (in any seed) and the mean net count."""
    seeds = tuple(_sorted(s for s in a if s in b))
    if not seeds:
        return None
    ca = np.stack([np.asarray(a[s], dtype=np.int64) for s in seeds])
    cb = np.stack([np.asarray(b[s], dtype=np.int64) for s in seeds])
    if ca.shape != cb.shape:
        raise ValueError(f"per-image arrays differ in shape: {ca.shape} vs {cb.shape}")
    x = (ca - cb).astype(np.float64)
    est = _two_way(x, seeds, confidence)
    disagree = int(np.any(x != 0, axis=0).sum())
    net = float(x.sum(axis=1).mean())
    return Estimate(**{**est.__dict__, "disagree": disagree, "net_images": net})


def accuracy_estimate_binomial(
    accs: Mapping[Hashable, object], images: int, confidence: float = CONFIDENCE
) -> Estimate | None:
    """Mean accuracy over seeds from per-seed accuracies on ``images`` test images, the
    test-image term bounded by ``p̄ (1 - p̄) / (N - 1)`` (no per-image data)."""
    seeds = tuple(s for s in _sorted(accs) if finite(accs[s]) is not None)
    if not seeds or images < 2:
        return None
    values = tuple(float(finite(accs[s])) for s in seeds)  # type: ignore[arg-type]
    base = _seed_only(values, seeds, confidence)
    assert base is not None
    p = base.mean
    S, q = len(values), 0.5 + confidence / 2.0
    b = p * (1.0 - p) / (images - 1)
    a = 0.0 if base.sd is None else base.sd**2 / S
    if S == 1 or a + b == 0.0:
        df = float(images - 1) if S == 1 else float(S - 1)
    else:
        df = (a + b) ** 2 / (a**2 / (S - 1) + b**2 / (images - 1))
    return Estimate(
        **{
            **base.__dict__,
            "half_width": t_ppf(q, df) * math.sqrt(a + b),
            "test_half": t_ppf(q, images - 1) * math.sqrt(b),
            "test_kind": "binomial bound",
            "images": images,
            "df": df,
        }
    )


def paired_delta_binomial(
    a: Mapping[Hashable, object], b: Mapping[Hashable, object], images: int, confidence: float = CONFIDENCE
) -> Estimate | None:
    """``acc_a - acc_b`` paired by seed without per-image data: the seed interval of
    :func:`paired_delta` widened by a test-image term bounded by ``(err_a + err_b) / (N - 1)``
    (the two can disagree only on images one of them gets wrong). Never decides a verdict."""
    base = paired_delta(a, b, confidence)
    if base is None or images < 2:
        return base
    seeds = base.seeds
    err = math.fsum(2.0 - float(finite(a[s])) - float(finite(b[s])) for s in seeds) / len(seeds)  # type: ignore[arg-type]
    bound = min(err, 1.0) / (images - 1)
    S, q = base.n, 0.5 + confidence / 2.0
    var_seed = 0.0 if base.sd is None else base.sd**2 / S
    if S == 1 or var_seed + bound == 0.0:
        df = float(images - 1) if S == 1 else float(S - 1)
    else:
        df = (var_seed + bound) ** 2 / (var_seed**2 / (S - 1) + bound**2 / (images - 1))
    return Estimate(
        **{
            **base.__dict__,
            "half_width": t_ppf(q, df) * math.sqrt(var_seed + bound),
            "test_half": t_ppf(q, images - 1) * math.sqrt(bound),
            "test_kind": "binomial bound",
            "images": images,
            "df": df,
        }
    )


def binomial_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper–Pearson interval of a proportion ``k / n``: ``(Beta(α/2; k, n-k+1),
    Beta(1-α/2; k+1, n-k))`` quantiles, 0 and 1 at the ends."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(scipy_stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(scipy_stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def verdict(estimate: Estimate | None, claim: str = ">", threshold: float = 0.0, accuracy: bool = False) -> str:
    """Verdict on the claim ``Δ <claim> threshold`` (``claim`` is ``">"``, ``">="`` or ``"<"``).

    ``"inconclusive"`` when there is no estimate, n < 2, no interval, or the closed
    interval contains ``threshold``; for an accuracy Δ (``accuracy=True``) also without
    per-image data or when fewer than :data:`MIN_DECIDING_IMAGES` net images per seed
    decide it. Otherwise ``"yes"`` when the whole interval lies on the claimed side and
    ``"no"`` when it lies on the other.
    """
    if claim not in (">", ">=", "<"):
        raise ValueError(f"claim must be '>', '>=' or '<', got {claim!r}")
    if estimate is None or estimate.n < 2 or estimate.half_width is None:
        return "inconclusive"
    if accuracy and (estimate.test_kind != "per-image" or abs(estimate.net_images or 0.0) < MIN_DECIDING_IMAGES):
        return "inconclusive"
    low, high = estimate.low, estimate.high
    assert low is not None and high is not None
    if low <= threshold <= high:
        return "inconclusive"
    above = low > threshold
    return ("yes" if above else "no") if claim in (">", ">=") else ("no" if above else "yes")
