"""The report's first screen: one row per declared hypothesis, confirmatory first.

Every number comes from :func:`kdbias.report.answers.answers`; how the intervals and p-values are
built is said once, under the table (:func:`method_note`), not in every cell.
"""

from __future__ import annotations

from fractions import Fraction

from kdbias.report.aggregate import Aggregate, label
from kdbias.report.answers import Answer
from kdbias.report.cells import table
from kdbias.report.engine import ALPHA, NOT_MEASURED
from kdbias.report.forest import ForestRow
from kdbias.report.power import design_detectable, seeds_for

__all__ = [
    "answers_table",
    "comparison_text",
    "delta_text",
    "detectable_text",
    "forest_rows",
    "forest_title",
    "method_note",
    "p_text",
]

RESOLVE = 0.01  # the ±1 pp a design is asked to resolve


def comparison_text(contrast: tuple[tuple[str, float], ...]) -> str:
    """``"EXP-1 − Baseline"``; a contrast with other weights: ``"½(EXP-1 CKA − EXP-1) + ..."`` written
    term by term (``"EXP-3 − EXP-3 KL − EXP-1 CKA + EXP-1"``; halves as ``½·``)."""
    parts = []
    for i, (name, weight) in enumerate(contrast):
        sign = "−" if weight < 0 else "+"
        size = Fraction(abs(weight)).limit_denominator(8)
        factor = "" if size == 1 else ("½·" if size == Fraction(1, 2) else f"{size}·")
        if i == 0:
            parts.append(("−" if weight < 0 else "") + factor + label(name))
        else:
            parts.append(f"{sign} {factor}{label(name)}")
    return " ".join(parts)


def delta_text(answer: Answer) -> str:
    """``"−1.23 pp [−2.50, +0.04]"`` (95 % interval); one seed: the estimate and why there is no interval."""
    est = answer.estimate
    if est is None:
        return NOT_MEASURED
    text = f"{est.mean * 100:+.2f} pp"
    if est.n < 2:
        return text + " (one seed: the seed spread is unknown, no interval)"
    if est.low is not None and est.high is not None:
        text += f" [{est.low * 100:+.2f}, {est.high * 100:+.2f}]"
    return text


def p_text(answer: Answer) -> str:
    """``"0.012; Holm 0.036"`` (confirmatory) or ``"0.21, uncorrected"``; ``—`` without a p-value."""
    decision = answer.decision
    if decision.p is None:
        return "—"
    if answer.family == "confirmatory" and decision.p_adjusted is not None:
        return f"{decision.p:.2g}; Holm {decision.p_adjusted:.2g}"
    return f"{decision.p:.2g}, uncorrected"


def detectable_text(answer: Answer) -> str:
    """The smallest Δ the design detects (80 % power, 95 %), from the same variance parts as the
    interval, and the seeds that would resolve ±1 pp (or why none can)."""
    est = answer.estimate
    if est is None:
        return NOT_MEASURED
    if est.sd is None:
        return "needs ≥ 2 seeds"
    if est.test_kind != "per-image":
        return "no per-image data"
    smallest = design_detectable(est)
    needed = seeds_for(est, RESOLVE)
    if needed is None:
        return f"±{smallest * 100:.2f} pp; ±1 pp unreachable"
    return f"±{smallest * 100:.2f} pp; ±1 pp: {needed} seeds"


def _verdict(answer: Answer) -> str:
    decision = answer.decision
    word = f"**{decision.verdict}**"
    if decision.reason and decision.verdict in ("inconclusive", "not matched"):
        word += f": {decision.reason}"
    return word


def _basis(answer: Answer) -> str:
    est = answer.estimate
    if est is None:
        return "—"
    if not (est.images and est.test_kind == "per-image"):
        return f"{est.n} (seeds only)"
    differ = f"; differ on {est.disagree}" if est.disagree is not None else ""
    return f"{est.n} × {est.images}{differ}"


def answers_table(answers: list[Answer], family: str) -> str:
    """The Markdown table of one family: question, comparison, Δ [95 % CI], p, verdict, seeds × images,
    detectable difference."""
    rows = []
    for a in (a for a in answers if a.family == family):
        h = a.hypothesis
        sign = {">=": "≥", "<=": "≤"}.get(h.claim, h.claim)
        claim = f"{sign} {h.threshold * 100:+g} pp" if h.threshold else f"{sign} 0"
        rows.append(
            [h.question, f"{comparison_text(h.contrast)} {claim}", delta_text(a), p_text(a), _verdict(a), _basis(a),
             detectable_text(a)]
        )  # fmt: skip
    header = ["Question", "Comparison", "Δ test acc [95 % CI]", "p", "Verdict", "Seeds × images", "Detectable"]
    return table(header, rows)


def method_note(answers: list[Answer], margin: float) -> str:
    """How every row was computed, said once."""
    k = sum(a.family == "confirmatory" for a in answers)
    two = any(a.estimate is not None and a.estimate.n == 2 for a in answers)
    few = (
        " With 2 seeds the seed part rests on one degree of freedom (t = 12.71): its intervals are wide by design, "
        "and what the seeds would do at 3 or more is not known."
        if two
        else ""
    )
    return (
        "Δ: test accuracy (selected checkpoint, official test split), image by image on the same test images and "
        "paired by seed; a 2 × 2 effect is the same contrast of four runs per image. Interval (95 %): a seed part "
        "(Student t, seeds − 1 degrees of freedom) and a test-image part (Student t, images − 1) combined as the "
        "root sum of squares, never narrower than either part; p inverts that interval. "
        f"Confirmatory: the study's {k} declared hypotheses, Holm-adjusted together (family-wise error "
        f"{ALPHA:g}); exploratory: uncorrected p, leads rather than findings. yes / no: the claim (or its "
        f"opposite) holds at {ALPHA:g}; no difference: equivalence within ±{margin * 100:g} pp (two one-sided "
        "tests) — never inferred from a non-significant test; inconclusive: data exist but decide neither; "
        "not measured: a run is missing. A comparison at matched teacher accuracy needs the two teachers' "
        "held-out accuracies to be equivalent first, else it reads not matched. Detectable: the smallest Δ "
        "found 80 % of the time with these seeds and test images, and the seeds that would resolve ±1 pp "
        "(unreachable: the test images alone forbid it, whatever the seeds)." + few
    )


def answers_section(answers: list[Answer], margin: float, skipped_groups: list[str]) -> list[str]:
    """``## Answers``: the confirmatory table (Holm), the exploratory one, the note; the groups never
    run are named in one line."""
    k = sum(a.family == "confirmatory" for a in answers)
    parts = [
        "## Answers\n",
        f"**Confirmatory** — the study's {k} declared hypotheses, Holm-adjusted together:\n",
        answers_table(answers, "confirmatory") + "\n",
        "**Exploratory** — uncorrected; leads, not findings:\n",
        answers_table(answers, "exploratory") + "\n",
        method_note(answers, margin) + "\n",
    ]
    if skipped_groups:
        parts.append(
            "Not run, so left out of this report: row group(s) "
            + ", ".join(f"`{g}`" for g in skipped_groups)
            + " (`python experiments/run_all.py --groups plan,why`).\n"
        )
    return parts


def forest_rows(answers: list[Answer]) -> list[ForestRow]:
    """One forest-plot row per answer with data (pp); one seed: a point without an interval."""
    words = {"no difference": "equivalent"}
    rows = []
    for a in answers:
        est = a.estimate
        if est is None or a.decision.verdict == NOT_MEASURED:
            continue
        has_interval = est.n >= 2 and est.low is not None and est.high is not None
        text = comparison_text(a.hypothesis.contrast)
        rows.append(
            ForestRow(
                label=text if len(text) <= 40 else a.hypothesis.key.replace("_", " "),
                family=a.family,
                unit="pp",
                estimate=est.mean * 100,
                low=est.low * 100 if has_interval else None,  # type: ignore[operator]
                high=est.high * 100 if has_interval else None,  # type: ignore[operator]
                threshold=a.hypothesis.threshold * 100 if a.hypothesis.threshold else None,
                verdict=words.get(a.decision.verdict, a.decision.verdict),
            )
        )
    return rows


def forest_title(agg: Aggregate) -> str:
    """``"Test-accuracy differences, 95 % CI — digits / smoke (offline smoke data; random-weight teacher: EXP-3)"``."""
    source = f"{agg.dataset} / {agg.preset}"
    notes = []
    if agg.dataset == "digits":
        notes.append("offline smoke data, not CIFAR")
    elif agg.preset != "paper":
        notes.append(f"reduced '{agg.preset}' preset")
    randoms = agg.random_teachers()
    if randoms:
        notes.append("random-weight teacher: " + ", ".join(label(n) for n in randoms))
    extra = f" ({'; '.join(notes)})" if notes else ""
    return f"Every declared comparison of test accuracy, 95 % CI — {source}{extra}"
