"""The study's declared hypotheses (:data:`kdbias.registry.HYPOTHESES`) answered from the runs.

Each hypothesis is a contrast of test accuracies computed image by image on the same test images
and paired by seed (:func:`contrast`), decided by
:func:`~kdbias.report.engine.decide`. The confirmatory hypotheses of the row groups that have runs
form one family: their p-values are adjusted together (Holm, :func:`~kdbias.report.engine.holm`);
every other hypothesis is exploratory (uncorrected, and labelled so). A comparison at matched
teacher accuracy first tests that the two teachers' held-out accuracies are equivalent (TOST within
the margin); when they are not shown equivalent it reads "not matched" and gives no verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kdbias import registry
from kdbias.report.aggregate import Aggregate
from kdbias.report.engine import MARGIN, Decision, decide, holm, tost
from kdbias.report.load import read_scalars
from kdbias.report.stats import Estimate, contrast_estimate, finite, p_value, proportions_difference, summarize

__all__ = ["Answer", "answers", "contrast", "groups_run", "matched_teachers", "teacher_heldout"]


@dataclass(frozen=True)
class Answer:
    """One hypothesis, its estimate (``None``: no seed has every run) and its decision."""

    hypothesis: registry.Hypothesis
    estimate: Estimate | None
    decision: Decision
    family: str  # "confirmatory" | "exploratory"
    family_size: int  # hypotheses corrected together (1 for an exploratory one)
    matched: Decision | None = None  # the teachers' held-out equivalence test, where the hypothesis needs one
    matched_estimate: Estimate | None = None


def groups_run(agg: Aggregate) -> tuple[str, ...]:
    """Row groups with at least one selected run of a student of theirs (order of the registry)."""
    students = {e.name: e.group for e in registry.ALL_EXPERIMENTS.values() if e.role == "student"}
    return tuple(g for g in registry.GROUPS if any(students.get(n) == g and agg.has(n) for n in agg.runs))


def contrast(agg: Aggregate, weights: dict[str, float]) -> Estimate | None:
    """``Σ weight · test_acc`` over the experiments of ``weights``, paired by seed: image by image
    (:func:`~kdbias.report.stats.contrast_estimate`) when every run has per-image predictions on
    the same test images; else over seeds only (no test-image term: never decides a verdict)."""
    accs = {name: agg.by_seed(name, "test_acc") for name in weights}
    seeds = sorted(set.intersection(*(set(a) for a in accs.values()))) if accs else []
    if not seeds:
        return None
    per_image = agg.per_image(list(weights), seeds)
    if per_image is not None:
        return contrast_estimate(per_image, weights)
    values = {s: sum(w * accs[n][s] for n, w in weights.items()) for s in seeds}
    return summarize(values.values(), seeds=values.keys())


def teacher_heldout(agg: Aggregate, name: str) -> dict[int, tuple[float, int]]:
    """Per seed: ``(held-out accuracy, held-out images)`` of the frozen teacher ``name``'s runs
    distilled from, as the run measured it (``val/teacher_acc``, logged once per process, on the
    run's ``val_images`` held-out images); seeds without it are left out."""
    out = {}
    for run in agg.runs.get(name, []):
        values = read_scalars(run["run_dir"], "val/teacher_acc")
        images = run.get("val_images")
        if values and isinstance(images, int) and images > 0 and finite(values[0][1]) is not None:
            out[run["seed"]] = (values[0][1], images)
    return out


def matched_teachers(agg: Aggregate, pair: tuple[str, str], margin: float = MARGIN) -> tuple[Estimate | None, Decision]:
    """Held-out accuracy of ``pair[0]``'s teacher minus ``pair[1]``'s, averaged over the seeds both
    measured, with a normal interval from the binomial variances of the two measurements
    (``p (1 - p) / n`` each; the teachers are fixed checkpoints, so seeds only repeat the images)
    and the TOST verdict ``no difference`` (matched) within ``±margin``."""
    a, b = teacher_heldout(agg, pair[0]), teacher_heldout(agg, pair[1])
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None, Decision("not measured", None, None, None, margin, "no held-out teacher accuracy recorded")
    seed = seeds[0]  # one frozen checkpoint per teacher: the first seed's measurement stands for all
    est = proportions_difference(a[seed], b[seed], seeds=(seed,))
    p = tost(est, margin)
    word = "no difference" if p is not None and p < 0.05 else "not matched"
    reason = f"teachers differ by {est.mean * 100:+.2f} pp held-out (TOST ±{margin * 100:g} pp: p = {p:.2g})"
    return est, Decision(word, None, None, p, margin, reason)


def answers(agg: Aggregate, margin: float = MARGIN) -> list[Answer]:
    """Every declared hypothesis of the groups that have runs, decided; confirmatory ones Holm-adjusted."""
    chosen = registry.hypotheses(groups_run(agg))
    estimates = [contrast(agg, dict(h.contrast)) for h in chosen]
    family = [i for i, h in enumerate(chosen) if h.confirmatory]
    raw = [p_value(est, h.threshold) for h, est in zip(chosen, estimates)]  # the p decide reports, computed once
    adjusted = dict(zip(family, holm([raw[i] for i in family])))
    out = []
    for i, (h, est) in enumerate(zip(chosen, estimates)):
        confirmatory = i in adjusted
        decision = decide(
            est,
            h.claim,
            h.threshold,
            accuracy=True,
            margin=margin,
            p_adjusted=adjusted.get(i) if confirmatory else None,
        )
        matched = matched_est = None
        if h.matched is not None:
            matched_est, matched = matched_teachers(agg, h.matched, margin)
            if matched.verdict != "no difference" and decision.verdict != "not measured":
                decision = replace(decision, verdict="not matched", reason=matched.reason)
        out.append(
            Answer(h, est, decision, "confirmatory" if confirmatory else "exploratory",
                   len(family) if confirmatory else 1, matched, matched_est)
        )  # fmt: skip
    return out
