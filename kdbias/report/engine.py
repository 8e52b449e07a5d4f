"""The comparison engine: every verdict of the report is decided here, from per-unit data.

A comparison is a contrast of experiments (a pair ``{a: 1, b: -1}``, a 2 × 2 effect) on per-unit
data: per-image correctness for accuracies (seeds and test images vary), per-image agreement for
fidelity, per-seed values for analytics (seeds vary; a Hessian estimate's probes are nested in its
seed). :mod:`kdbias.report.stats` builds the estimate and its interval; this module adds

- :func:`p_value` (two-sided, inverting the interval rule) and one-sided p-values;
- :func:`tost`: the equivalence test of ``|Δ| < margin`` (two one-sided tests, Schuirmann 1987):
  ``p = max(p(Δ <= -margin), p(Δ >= +margin))``; "no difference" is said only when it is below α;
- :func:`holm`: Holm's step-down adjustment of a declared family of p-values;
- :func:`decide`: the verdict: ``yes`` / ``no`` (the claim holds / its opposite holds, at level α
  after adjustment for a confirmatory hypothesis), ``no difference`` (TOST within the margin, for a
  claim about 0), ``inconclusive`` (data exist but decide nothing), ``not measured`` (no data).

Pure functions (NumPy, SciPy): no Lightning, no timm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kdbias.report.stats import CONFIDENCE, MIN_DECIDING_IMAGES, Estimate, p_value

__all__ = [
    "ALPHA",
    "MARGIN",
    "NOT_MEASURED",
    "Decision",
    "decide",
    "holm",
    "one_sided_p",
    "tost",
    "verdict",
]

ALPHA = 1.0 - CONFIDENCE  # two-sided level of every test (0.05)
MARGIN = 0.01  # default equivalence margin of an accuracy Δ: ±1 pp (report flag --margin)
NOT_MEASURED = "not measured"
CLAIMS = (">", ">=", "<", "<=")


def one_sided_p(est: Estimate | None, null: float, greater: bool) -> float | None:
    """p-value of ``H0: Δ <= null`` (``greater``) or ``H0: Δ >= null``: half the two-sided
    p-value on the estimate's side, one minus that on the other."""
    p = p_value(est, null)
    if p is None or est is None:
        return None
    above = est.mean > null
    return p / 2.0 if above == greater else 1.0 - p / 2.0


def tost(est: Estimate | None, margin: float) -> float | None:
    """Two one-sided tests of equivalence: ``max(p(Δ <= -margin), p(Δ >= margin))``; below α means
    ``|Δ| < margin`` at level α (equivalently: the ``1 - 2α`` interval lies inside ±margin)."""
    if not margin > 0:
        raise ValueError(f"an equivalence margin must be > 0, got {margin}")
    low, high = one_sided_p(est, -margin, greater=True), one_sided_p(est, margin, greater=False)
    return None if low is None or high is None else max(low, high)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order: with the ``m`` values
    sorted ``p_(1) <= ... <= p_(m)``, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``. A
    missing p-value (a hypothesis with no data) counts as 1 in ``m`` and stays ``None``."""
    m = len(pvalues)
    filled = [1.0 if p is None else float(p) for p in pvalues]
    order = sorted(range(m), key=lambda i: filled[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * filled[i]))
        adjusted[i] = running
    return [None if p is None else a for p, a in zip(pvalues, adjusted)]


@dataclass(frozen=True)
class Decision:
    """A verdict and the numbers that decided it.

    ``p``: two-sided p-value of ``Δ = threshold``; ``p_adjusted``: Holm-adjusted (confirmatory
    only); ``p_equivalence``: TOST p-value within ``±margin`` (claims about 0 only); ``reason``:
    why the data decide nothing (empty when decisive)."""

    verdict: str
    p: float | None
    p_adjusted: float | None
    p_equivalence: float | None
    margin: float | None
    reason: str


def decide(
    est: Estimate | None,
    claim: str = ">",
    threshold: float = 0.0,
    *,
    accuracy: bool = False,
    margin: float | None = None,
    p_adjusted: float | None = None,
    alpha: float = ALPHA,
) -> Decision:
    """The verdict on ``Δ <claim> threshold`` (``claim``: ``">"``, ``">="``, ``"<"`` or ``"<="``).

    Decisive when the p-value (``p_adjusted`` where given: a confirmatory hypothesis) is below
    ``alpha``: ``yes`` when the estimate lies on the claimed side of ``threshold``, else ``no``.
    Otherwise, for a claim about 0 with a ``margin``, ``no difference`` when the TOST p-value is
    below ``alpha``; else ``inconclusive``. Never decisive with one seed, without an interval, or
    for an accuracy Δ without per-image data or with fewer than :data:`MIN_DECIDING_IMAGES` net
    test images per seed (a normal interval on a handful of discordant images is not trusted).
    """
    if claim not in CLAIMS:
        raise ValueError(f"claim must be one of {CLAIMS}, got {claim!r}")
    if est is None:
        return Decision(NOT_MEASURED, None, None, None, None, "no data")
    p = p_value(est, threshold)
    equivalence = tost(est, margin) if margin is not None and threshold == 0.0 else None
    if est.n < 2 or p is None:
        reason = "one seed: the seed spread is unknown" if est.n < 2 else "no interval"
        return Decision("inconclusive", p, p_adjusted, equivalence, margin, reason)
    if accuracy and est.test_kind != "per-image":
        reason = "no per-image predictions: the images on which the runs differ are unknown"
        return Decision("inconclusive", p, p_adjusted, equivalence, margin, reason)
    if accuracy and abs(est.net_images or 0.0) < MIN_DECIDING_IMAGES:
        reason = f"< {MIN_DECIDING_IMAGES} net test images per seed"
        return Decision("inconclusive", p, p_adjusted, equivalence, margin, reason)
    deciding = p if p_adjusted is None else p_adjusted
    if deciding < alpha:
        above = est.mean > threshold
        word = ("yes" if above else "no") if claim in (">", ">=") else ("no" if above else "yes")
        return Decision(word, p, p_adjusted, equivalence, margin, "")
    if equivalence is not None and equivalence < alpha:
        return Decision("no difference", p, p_adjusted, equivalence, margin, "")
    reason = f"p{' (Holm)' if p_adjusted is not None else ''} = {deciding:.2g}" + (
        f"; TOST ±{margin * 100:g} pp: p = {equivalence:.2g}"
        if equivalence is not None and margin is not None and accuracy
        else ""
    )
    return Decision("inconclusive", p, p_adjusted, equivalence, margin, reason)


def verdict(est: Estimate | None, claim: str = ">", threshold: float = 0.0, accuracy: bool = False) -> str:
    """The verdict word of :func:`decide` on ``Δ <claim> threshold`` (no margin, no adjustment):
    ``yes`` / ``no`` / ``inconclusive``, ``not measured`` without an estimate."""
    return decide(est, claim, threshold, accuracy=accuracy).verdict
