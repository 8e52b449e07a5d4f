"""Main effects and interaction of a 2 x 2 design, paired by seed.

Cells ``(teacher, loss)`` with teachers ``(A, B)`` (ResNet-18, DINOv2) and losses ``(K, C)``
(soft KL, CKA). For every seed present in all four cells (``y[t, l]`` its accuracy)::

    loss effect        = ((y[A, C] - y[A, K]) + (y[B, C] - y[B, K])) / 2   (C - K averaged over teachers)
    teacher effect     = ((y[B, K] - y[A, K]) + (y[B, C] - y[A, C])) / 2   (B - A averaged over losses)
    interaction        =   y[B, C] - y[B, K] - y[A, C] + y[A, K]

Each is summarised over seeds as a paired estimate (mean ± Student-t interval,
:func:`kdbias.report.stats.summarize`); seeds missing from any cell are left out.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace

from kdbias.report.stats import CONFIDENCE, Estimate, finite, summarize

__all__ = ["EFFECTS", "factorial_effects", "per_seed_effects"]

EFFECTS = ("loss", "teacher", "interaction")
Cells = Mapping[tuple[str, str], Mapping[Hashable, object]]


def per_seed_effects(cells: Cells, teachers: Sequence[str], losses: Sequence[str]) -> dict[str, dict[Hashable, float]]:
    """``{effect: {seed: value}}`` for the seeds whose four cells are all finite.

    ``cells[(teacher, loss)]`` maps seed -> accuracy; ``teachers = (A, B)``, ``losses = (K, C)``:
    the second of each is the "treatment" (an effect is second minus first).
    """
    if len(teachers) != 2 or len(losses) != 2:
        raise ValueError(f"a 2 x 2 design needs two teachers and two losses, got {teachers} and {losses}")
    (a, b), (k, c) = teachers, losses
    keys = [(a, k), (a, c), (b, k), (b, c)]
    missing = [key for key in keys if key not in cells]
    if missing:
        raise ValueError(f"2 x 2 cells missing: {missing}")
    seeds = set.intersection(*(set(cells[key]) for key in keys))
    out: dict[str, dict[Hashable, float]] = {name: {} for name in EFFECTS}
    for seed in sorted(seeds, key=lambda s: (str(type(s)), s)):
        y = {key: finite(cells[key][seed]) for key in keys}
        if any(v is None for v in y.values()):
            continue
        out["loss"][seed] = ((y[a, c] - y[a, k]) + (y[b, c] - y[b, k])) / 2.0
        out["teacher"][seed] = ((y[b, k] - y[a, k]) + (y[b, c] - y[a, c])) / 2.0
        out["interaction"][seed] = y[b, c] - y[b, k] - y[a, c] + y[a, k]
    return out


def factorial_effects(
    cells: Cells, teachers: Sequence[str], losses: Sequence[str], confidence: float = CONFIDENCE
) -> dict[str, Estimate | None]:
    """``{effect: paired Estimate over seeds, or None when no seed has all four cells}``."""
    out: dict[str, Estimate | None] = {}
    for name, by_seed in per_seed_effects(cells, teachers, losses).items():
        estimate = summarize(by_seed.values(), confidence)
        out[name] = None if estimate is None else replace(estimate, seeds=tuple(by_seed))
    return out
