"""Coverage of the report's intervals and verdicts, measured on simulated studies with a known truth.

``python -m kdbias.report.simulate [--studies 1000]`` prints the table quoted in the README.

Each simulated study has four arms, a 2 × 2 ``{A, B} × {K, C}`` (``AK``, ``AC``, ``BK``, ``BC``),
``S`` seeds and ``N`` test images, and per-image correctness from a probit model::

    c[k, s, i] = 1[ mu_k + d_i + g[k, i] + u[k, s] + e[k, s, i] > 0 ]

``d_i ~ N(0, 1)`` (image difficulty, shared by the arms), ``g[k, i] ~ N(0, tau²)`` (the arms differ
on particular images), ``u[k, s] ~ N(0, sigma²)`` correlated ``rho`` across the arms of one seed
(paired seeds), ``e ~ N(0, 1)`` (which images one network gets right). Every draw of a study is
new (images included), so the truth is the population value: an arm's accuracy is
``Phi(mu_k / sqrt(2 + tau² + sigma²))`` in closed form, and so is every contrast. The estimates are
the library's own (:func:`~kdbias.report.stats.contrast_estimate`, :func:`~kdbias.report.engine.decide`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from kdbias.console import emit
from kdbias.report.engine import decide
from kdbias.report.stats import contrast_estimate

__all__ = ["CONTRASTS", "REGIMES", "Regime", "coverage", "main", "regimes"]

ARMS = ("AK", "AC", "BK", "BC")
#: The contrasts checked: the plan's pair (C − K with teacher A) and the 2 × 2 effects.
CONTRASTS: dict[str, dict[str, float]] = {
    "pair": {"AC": 1.0, "AK": -1.0},
    "loss": {"AC": 0.5, "AK": -0.5, "BC": 0.5, "BK": -0.5},
    "teacher": {"BK": 0.5, "AK": -0.5, "BC": 0.5, "AC": -0.5},
    "interaction": {"BC": 1.0, "BK": -1.0, "AC": -1.0, "AK": 1.0},
}
BASE_ACC = 0.85  # accuracy of arm AK


@dataclass(frozen=True)
class Regime:
    """One simulated design: which source dominates, seeds, test images and the spreads (probit units)."""

    name: str
    seeds: int
    images: int
    sigma: float  # seed effect SD
    tau: float  # arm-specific image effect SD
    rho: float = 0.5  # correlation of one seed's effects across arms


REGIMES = {"image-dominated": (0.01, 1.0), "seed-dominated": (0.2, 0.0)}


def regimes(seeds: Sequence[int] = (2, 3, 5), images: Sequence[int] = (360, 10_000)) -> list[Regime]:
    """Every ``(variance regime, S, N)`` combination."""
    return [Regime(name, s, n, sigma, tau) for name, (sigma, tau) in REGIMES.items() for s in seeds for n in images]


def _means(regime: Regime, shift: float) -> dict[str, float]:
    """Probit intercepts: AK at :data:`BASE_ACC`; ``shift`` (probit units) moves AC and BK by
    ``shift`` and BC by ``3 shift`` (so the pair, both main effects and the interaction are non-zero)."""
    scale = math.sqrt(2.0 + regime.tau**2 + regime.sigma**2)
    base = float(scipy_stats.norm.ppf(BASE_ACC)) * scale
    return {"AK": base, "AC": base + shift, "BK": base + shift, "BC": base + 3.0 * shift}


def truth(regime: Regime, shift: float) -> dict[str, float]:
    """The population value of every contrast (accuracy fractions)."""
    scale = math.sqrt(2.0 + regime.tau**2 + regime.sigma**2)
    acc = {k: float(scipy_stats.norm.cdf(mu / scale)) for k, mu in _means(regime, shift).items()}
    return {name: sum(w * acc[k] for k, w in weights.items()) for name, weights in CONTRASTS.items()}


def _study(regime: Regime, means: dict[str, float], rng: np.random.Generator) -> dict[str, dict[int, np.ndarray]]:
    S, N = regime.seeds, regime.images
    d = rng.standard_normal(N)
    shared = rng.standard_normal(S)
    out = {}
    for k in ARMS:
        u = regime.sigma * (math.sqrt(regime.rho) * shared + math.sqrt(1.0 - regime.rho) * rng.standard_normal(S))
        g = regime.tau * rng.standard_normal(N)
        latent = means[k] + d + g + u[:, None] + rng.standard_normal((S, N))
        out[k] = {s: latent[s] > 0 for s in range(S)}
    return out


def coverage(regime: Regime, studies: int, shift: float, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per contrast: ``coverage`` (share of 95 % intervals holding the true value), ``decisive``
    (share of yes/no verdicts on ``Δ > 0``), ``narrower`` (share of intervals narrower than their
    own seed part: must be 0) over ``studies`` simulated studies."""
    rng = np.random.default_rng(seed)
    means, true = _means(regime, shift), truth(regime, shift)
    counts = {name: np.zeros(3) for name in CONTRASTS}
    for _ in range(studies):
        arms = _study(regime, means, rng)
        for name, weights in CONTRASTS.items():
            est = contrast_estimate(arms, weights)
            assert est is not None and est.low is not None and est.high is not None
            verdict = decide(est, ">", accuracy=True).verdict
            counts[name] += (
                est.low <= true[name] <= est.high,
                verdict in ("yes", "no"),
                est.half_width < (est.seed_half or 0.0),  # type: ignore[operator]
            )
    return {
        name: {"coverage": c[0] / studies, "decisive": c[1] / studies, "narrower": c[2] / studies}
        for name, c in counts.items()
    }


def table(studies: int, shift: float = 0.1, seed: int = 0) -> str:
    """Markdown table: per regime, coverage of the true Δ (shift ≠ 0) for the pair and the worst
    2 × 2 effect, and the decisive rate at Δ = 0 (shift 0)."""
    lines = [
        "| variance | seeds | test images | coverage: pair Δ | coverage: worst 2 × 2 effect | "
        "yes/no at Δ = 0: pair | yes/no at Δ = 0: worst effect |",
        "|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, regime in enumerate(regimes()):
        live = coverage(regime, studies, shift, seed + i)
        null = coverage(regime, studies, 0.0, seed + 1000 + i)
        effects = [n for n in CONTRASTS if n != "pair"]
        worst_cov = min(live[n]["coverage"] for n in effects)
        worst_null = max(null[n]["decisive"] for n in effects)
        lines.append(
            f"| {regime.name} | {regime.seeds} | {regime.images:,} | {live['pair']['coverage']:.1%} | "
            f"{worst_cov:.1%} | {null['pair']['decisive']:.1%} | {worst_null:.1%} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print :func:`table` (``--studies`` per regime and truth)."""
    parser = argparse.ArgumentParser(prog="python -m kdbias.report.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000, help="simulated studies per regime and truth")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.studies < 1:
        parser.error("--studies must be >= 1")
    emit(table(args.studies, seed=args.seed))  # the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
