"""Statistics of the report: pure functions on numbers and arrays, SciPy's distributions.

Two sources vary in an accuracy: the training seed and the finite test set (the same
test images for every run). The intervals (all two-sided, 95 % by default):

- :func:`summarize`: mean ± Student-t half-width over seeds, ``t_{0.975, S-1} · s / √S``
  (figures that have no test-image error: Hessian, attention distance, CKA, times).
- :func:`accuracy_estimate` / :func:`paired_accuracy_delta` / :func:`contrast_estimate`: from
  per-image values ``x[s, i]`` (seed ``s``, test image ``i``; for a Δ, ``c_a[s, i] - c_b[s, i]`` on
  the same image; for a 2 × 2 effect, the contrast of four cells image by image). The estimate is
  the grand mean. Its two variance parts are a seed term ``a = var_s(row means) / S`` and a
  test-image term ``b = var_i(column means) / N`` (ddof = 1). Each part gets its own Student-t
  half-width, ``h_seed = t_{0.975, S-1} √a`` and ``h_test = t_{0.975, N-1} √b``, and the interval's
  half-width is their root sum of squares ``√(h_seed² + h_test²)``: never narrower than either
  part (a seed term estimated from 2 seeds keeps its 1 degree of freedom however small the draw),
  and within a factor √2 of the wider part. Welch–Satterthwaite's pooled degrees of freedom are
  not used: with 2–3 seeds they grow exactly when the seed variance is under-estimated, and the
  interval then under-covers (87 % at 2 seeds in simulation). Coverage of this rule is measured
  by :mod:`kdbias.report.simulate` (README: Statistics).
  With one seed only the image term exists and the seed spread is unknown: no verdict.
- :func:`accuracy_estimate_binomial`: without per-image data, the image term is bounded by
  ``p̄ (1 - p̄) / (N - 1)`` (a variance of numbers in [0, 1] with mean p̄ is at most p̄ (1 - p̄)).
- :func:`binomial_interval`: a quantity measured once on ``n`` images (a teacher's
  accuracy): Clopper–Pearson (exact) interval from Beta quantiles.
- :func:`half_width_at` and :func:`p_value`: the same rule at any confidence, and the p-value
  that inverts it (the smallest α whose ``1 - α`` interval excludes the null value), so an
  interval and its p-value never disagree.
- :func:`proportions_difference`: two proportions each measured once (two teachers' held-out
  accuracies): their difference with a normal (Wald) interval.

Verdicts are decided by :func:`kdbias.report.engine.decide` (one rule for every claim).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize, special
from scipy import stats as scipy_stats

from kdbias.schema import finite

__all__ = [
    "CONFIDENCE",
    "MIN_DECIDING_IMAGES",
    "Estimate",
    "accuracy_estimate",
    "seeds_and_images",
    "accuracy_estimate_binomial",
    "binomial_interval",
    "contrast_estimate",
    "finite",
    "half_width_at",
    "p_value",
    "paired_accuracy_delta",
    "paired_delta",
    "paired_delta_binomial",
    "proportions_difference",
    "summarize",
    "t_ppf",
]

CONFIDENCE = 0.95
MIN_DECIDING_IMAGES = 3  # an accuracy Δ of fewer net test images per seed is never a yes/no


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf``'s value)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    return float(special.stdtrit(df, p))  # the ufunc behind scipy.stats.t.ppf, without its argument checks


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
        df: degrees of freedom of the seed term's t quantile (``S - 1``; ``N - 1`` with one seed).
        var_seed, var_test: the variance parts ``a`` (seeds, ``S - 1`` df) and ``b`` (test images,
            ``N - 1`` df) the interval is built from (module docstring); ``None`` where absent.
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
    var_seed: float | None = None
    var_test: float | None = None

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
    return Estimate(mean, n, sd, half, values, seeds, confidence, seed_half=half, df=n - 1, var_seed=sd**2 / n)


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


def _halves(n: int, var_seed: float | None, images: int | None, var_test: float | None, confidence: float):
    """``(seed_half, test_half, half)`` of the rule in the module docstring at ``confidence``."""
    q = 0.5 + confidence / 2.0
    seed_half = t_ppf(q, n - 1) * math.sqrt(var_seed) if var_seed is not None and n > 1 else None
    test_half = t_ppf(q, images - 1) * math.sqrt(var_test) if var_test is not None and images and images > 1 else None
    parts = [h for h in (seed_half, test_half) if h is not None]
    return seed_half, test_half, (math.hypot(*parts) if parts else None)


def half_width_at(est: Estimate, confidence: float) -> float | None:
    """The half-width of ``est``'s interval at another ``confidence`` (same rule, same parts)."""
    if est.var_seed is None and est.var_test is None:
        return None
    return _halves(est.n, est.var_seed, est.images, est.var_test, confidence)[2]


def p_value(est: Estimate | None, null: float = 0.0) -> float | None:
    """Two-sided p-value of ``Δ = null`` that inverts the interval rule: the smallest ``α`` whose
    ``1 - α`` interval excludes ``null`` (``None`` without an interval or with one seed)."""
    if est is None or est.n < 2 or half_width_at(est, CONFIDENCE) is None:
        return None
    gap = abs(est.mean - null)
    if gap == 0.0:
        return 1.0
    if half_width_at(est, 1.0 - 1e-15) < gap:  # type: ignore[operator]
        return 0.0
    if (half_width_at(est, 1e-12) or 0.0) >= gap:
        return 1.0
    level = optimize.brentq(lambda c: half_width_at(est, c) - gap, 1e-12, 1.0 - 1e-15, xtol=1e-14, rtol=1e-12)
    return float(min(1.0, max(0.0, 1.0 - level)))


def _two_way(matrix: np.ndarray, seeds: tuple[Hashable, ...], confidence: float) -> Estimate:
    """Grand mean of ``matrix`` ``[S, N]`` with the seed + test-image interval (module docstring)."""
    S, N = matrix.shape
    rows = matrix.mean(axis=1)
    cols = matrix.mean(axis=0)
    mean = float(matrix.mean())
    b = float(cols.var(ddof=1)) / N if N > 1 else None
    sd = float(rows.std(ddof=1)) if S > 1 else None
    a = sd**2 / S if sd is not None else None
    seed_half, test_half, half = _halves(S, a, N, b, confidence)
    df = float(S - 1) if S > 1 else (float(N - 1) if N > 1 else None)
    return Estimate(
        mean, S, sd, half, tuple(rows.tolist()), seeds, confidence, seed_half, test_half, "per-image", N,
        df=df, var_seed=a, var_test=b,
    )  # fmt: skip


def accuracy_estimate(correct: Mapping[Hashable, np.ndarray], confidence: float = CONFIDENCE) -> Estimate | None:
    """Mean accuracy over seeds from per-image correctness ``{seed: bool[N]}`` (the same N
    test images in the same order for every seed), with the seed + test-image interval."""
    seeds = tuple(_sorted(correct))
    if not seeds:
        return None
    matrix = np.stack([np.asarray(correct[s], dtype=np.float64) for s in seeds])
    return _two_way(matrix, seeds, confidence)


def seeds_and_images(
    values: Mapping[Hashable, float], images: Mapping[Hashable, np.ndarray], confidence: float = CONFIDENCE
) -> Estimate | None:
    """Mean over seeds of a per-run figure ``{seed: value}``: with the seed + test-image interval of
    :func:`accuracy_estimate` when every seed also has its per-image values ``{seed: [N]}`` on the
    same number of images, else over seeds only (:func:`summarize`); ``None`` without values."""
    if values and set(images) == set(values) and len({len(v) for v in images.values()}) == 1:
        return accuracy_estimate(images, confidence)
    return summarize(values.values(), seeds=values.keys())


def contrast_estimate(
    arms: Mapping[str, Mapping[Hashable, np.ndarray]], weights: Mapping[str, float], confidence: float = CONFIDENCE
) -> Estimate | None:
    """``Σ_k w_k acc_k`` on the seeds every arm has, image by image: ``x[s, i] = Σ_k w_k c_k[s][i]``
    (per-image values of each arm ``k`` on the same test images), with the seed + test-image
    interval, the images where ``x`` is non-zero in any seed (``disagree``) and the mean over seeds
    of ``Σ_i x[s, i]`` (``net_images``). A pair is ``{a: 1, b: -1}``; a 2 × 2 interaction
    ``{BC: 1, BK: -1, AC: -1, AK: 1}``; a main effect has weights ±1/2."""
    names = list(weights)
    missing = [n for n in names if n not in arms]
    if missing:
        raise ValueError(f"no per-image values for {missing}")
    seeds = tuple(_sorted(set.intersection(*(set(arms[n]) for n in names)))) if names else ()
    if not seeds:
        return None
    stacked = [np.stack([np.asarray(arms[n][s], dtype=np.float64) for s in seeds]) for n in names]
    if len({m.shape for m in stacked}) != 1:
        raise ValueError(f"per-image arrays differ in shape: {[m.shape for m in stacked]}")
    x = sum(float(weights[n]) * m for n, m in zip(names, stacked))
    est = _two_way(x, seeds, confidence)  # type: ignore[arg-type]
    return replace(est, disagree=int(np.any(x != 0, axis=0).sum()), net_images=float(x.sum(axis=1).mean()))


def paired_accuracy_delta(
    a: Mapping[Hashable, np.ndarray], b: Mapping[Hashable, np.ndarray], confidence: float = CONFIDENCE
) -> Estimate | None:
    """``acc_a - acc_b`` on the seeds both have, image by image (:func:`contrast_estimate` with
    weights ``{a: 1, b: -1}``)."""
    return contrast_estimate({"a": a, "b": b}, {"a": 1.0, "b": -1.0}, confidence)


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
    return _with_test_bound(base, base.mean * (1.0 - base.mean) / (images - 1), images, confidence)


def _with_test_bound(base: Estimate, var_test: float, images: int, confidence: float) -> Estimate:
    """``base`` (seed part only) with a bounded test-image variance ``var_test`` added."""
    seed_half, test_half, half = _halves(base.n, base.var_seed, images, var_test, confidence)
    return replace(
        base, half_width=half, seed_half=seed_half, test_half=test_half, test_kind="binomial bound",
        images=images, var_test=var_test, df=float(base.n - 1) if base.n > 1 else float(images - 1),
    )  # fmt: skip


def paired_delta_binomial(
    a: Mapping[Hashable, object], b: Mapping[Hashable, object], images: int, confidence: float = CONFIDENCE
) -> Estimate | None:
    """``acc_a - acc_b`` paired by seed without per-image data: the seed interval of
    :func:`paired_delta` widened by a test-image term bounded by ``(err_a + err_b) / (N - 1)``
    (the two can disagree only on images one of them gets wrong). Never decides a verdict."""
    base = paired_delta(a, b, confidence)
    if base is None or images < 2:
        return base
    err = math.fsum(2.0 - float(finite(a[s])) - float(finite(b[s])) for s in base.seeds) / len(base.seeds)  # type: ignore[arg-type]
    return _with_test_bound(base, min(err, 1.0) / (images - 1), images, confidence)


def proportions_difference(
    a: tuple[float, int], b: tuple[float, int], seeds: tuple[Hashable, ...] = (), confidence: float = CONFIDENCE
) -> Estimate:
    """``p_a - p_b`` of two proportions each measured once, ``a = (p_a, n_a)`` on ``n_a`` images and ``b``
    likewise: a normal (Wald, large-sample) interval of variance ``p_a (1 - p_a) / n_a + p_b (1 - p_b) / n_b``,
    floored at ``1 / (4 max(n_a, n_b)²)`` so that a proportion at 0 or 1 keeps a non-zero variance. ``n`` = 2
    (the two measurements); the interval is the test-image term at 10⁹ degrees of freedom (the normal quantile)."""
    (pa, na), (pb, nb) = a, b
    var = max(pa * (1 - pa) / na + pb * (1 - pb) / nb, 0.25 / max(na, nb) ** 2)
    mean = pa - pb
    images = 10**9  # the normal quantile: t at 10⁹ - 1 degrees of freedom
    est = _with_test_bound(Estimate(mean, 2, None, None, (mean,), seeds, confidence), var, images, confidence)
    return replace(est, df=float(images - 1))


def binomial_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper–Pearson interval of a proportion ``k / n``: ``(Beta(α/2; k, n-k+1),
    Beta(1-α/2; k+1, n-k))`` quantiles, 0 and 1 at the ends."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(scipy_stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(scipy_stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high
