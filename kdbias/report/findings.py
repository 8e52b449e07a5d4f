"""The study's expectations on the analytics, each decided by the comparison engine
(:func:`kdbias.report.engine.decide`) and labelled exploratory (uncorrected): attention distance and
Hessian trace as the study declares them (``report.analytics``: :mod:`kdbias.report.declarations`),
and each distilled student's CKA contrast above its control (the reference student vs the same teacher).

The accuracy hypotheses are the study's declared ones (:data:`kdbias.registry.HYPOTHESES`), answered
once, in the report's Answers table (:mod:`kdbias.report.answers`).
"""

from __future__ import annotations

from kdbias import registry
from kdbias.report.aggregate import PLAN_LAYERS, Aggregate, label
from kdbias.report.cells import verdict_text
from kdbias.report.declarations import declarations
from kdbias.report.engine import decide
from kdbias.report.stats import Estimate

__all__ = ["attention_claims", "attention_label", "distilled", "findings"]

ATTENTION_MARGIN = 1.0  # px: "no difference" in attention distance needs an equivalence test within it
LAYERS = ", ".join(str(i) for i in PLAN_LAYERS)


def distilled() -> list[str]:
    """Students of the registry trained with a teacher (soft KL or CKA), in registry order."""
    return [e.name for e in registry.EXPERIMENTS.values() if e.role == "student" and e.module != "TeacherModule"]


def attention_claims() -> dict[str, tuple[str, str]]:
    """The active study's declared attention expectations against its reference student:
    ``{row: (claim, words)}``. The direction of every attention verdict comes from here, never from the data."""
    return declarations(registry.active()).attention(registry.reference())


def attention_label(delta: Estimate | None, margin: float = ATTENTION_MARGIN) -> str:
    """``"longer than baseline"`` / ``"shorter than baseline"`` from the verdict on the paired Δ of the
    four-layer mean attention distance; ``"≈ baseline (±1 px, TOST)"`` only when an equivalence test
    (TOST, ``margin`` px) shows it; else ``"inconclusive"``; ``*pending*`` without a pair."""
    if delta is None:
        return "*pending*"
    if delta.n < 2:
        return "one seed: no label"
    decision = decide(delta, ">", margin=margin)
    if decision.verdict == "yes":
        return "longer than baseline"
    if decision.verdict == "no":
        return "shorter than baseline"
    if decision.verdict == "no difference":
        return f"≈ baseline (±{margin:g} px, TOST)"
    return "inconclusive"


def _missing(agg: Aggregate, a: str, b: str) -> str:
    """Why a Δ has no estimate: which experiment has no run, or no seed in common."""
    absent = [label(n) for n in (a, b) if not agg.has(n)]
    if absent:
        return f"no completed run of {' and '.join(absent)}"
    return "the two experiments share no seed"


def _analytic(agg: Aggregate, a: str, b: str, delta: Estimate | None, what: str, **kw) -> str:
    """A verdict on an analytic's Δ; ``not measured`` when both experiments ran but the
    analytic did not (never "inconclusive" for a number nobody measured)."""
    if delta is None and agg.has(a) and agg.has(b):
        return f"**not measured** ({what} did not run in both {label(a)} and {label(b)})"
    return verdict_text(delta, full=agg.seed_set(), missing=_missing(agg, a, b), **kw)


def findings(agg: Aggregate) -> list[str]:
    """The plan's expectations on the analytics, one line each: ``"<claim>: **verdict** (Δ, CI, n; exploratory)"``."""
    lines = []
    claims = declarations(registry.active()).analytics
    for c in (c for c in claims if c.metric == "attention_distance"):
        delta = agg.attention_delta(c.a, c.b)
        reading = "" if delta is None else f"; {attention_label(delta)}"
        verdict_cell = _analytic(agg, c.a, c.b, delta, "attention distance", claim=c.claim, unit=" px")
        lines.append(
            f"{label(c.a)} attends {c.words} than the {label(c.b)} (the plan's hypothesis: mean attention distance "
            f"over layers {LAYERS}, Δ {c.claim} 0{reading}): {verdict_cell}"
        )
    for c in (c for c in claims if c.metric == "hessian_trace"):
        delta = agg.delta(c.a, c.b, "hessian_trace")
        verdict_cell = _analytic(agg, c.a, c.b, delta, "the Hessian", claim=c.claim, spec=".4g")
        lines.append(
            f"Hessian trace {label(c.a)} {c.claim} {label(c.b)} ({'sharper' if '>' in c.claim else 'flatter'}; "
            f"an ordering is stated only where the paired CI excludes 0): {verdict_cell}"
        )
    reference = registry.reference()
    if reference is None:
        return lines
    for name in distilled():
        teacher = _cka_teacher(agg, name)
        delta = agg.delta(name, reference, f"cka.{name}.contrast")
        verdict_cell = _analytic(agg, name, reference, delta, "CKA", claim=">", digits=3)
        lines.append(
            f"{label(name)}'s CKA diagonal contrast vs {teacher} is above its control (the {label(reference)} vs "
            f"the same teacher): {verdict_cell}{_floors(agg, name, 'contrast', reference)}"
        )
        if any(name == e.name and e.module == "CKADistillModule" for e in registry.EXPERIMENTS.values()):
            lines.append(_untrained_line(agg, name, teacher, reference))
    return lines


def _cka_teacher(agg: Aggregate, name: str) -> str:
    for run in agg.runs.get(name, []) + agg.runs.get(registry.reference() or "", []):
        teacher = ((run.get("cka") or {}).get(name) or {}).get("teacher")
        if isinstance(teacher, str):
            return teacher
    return f"{label(name)}'s teacher"


def _untrained_line(agg: Aggregate, name: str, teacher: str, reference: str) -> str:
    statement = (
        f"{label(name)}'s untrained-cell CKA contrast vs {teacher} (trained layer pairs held out) is above its control"
    )
    path = f"cka.{name}.untrained_contrast"
    if agg.has(name) and not agg.by_seed(name, path):
        return f"{statement}: **not measured** (CKA did not run in {label(name)})"
    if agg.has(reference) and not agg.by_seed(reference, path):
        return f"{statement}: **not measured** (the control's untrained contrast on the same cells was not recorded)"
    delta = agg.delta(name, reference, path)
    verdict_cell = _analytic(agg, name, reference, delta, "CKA", claim=">", digits=3)
    return f"{statement}: {verdict_cell}{_floors(agg, name, 'untrained_contrast', reference)}"


def _floors(agg: Aggregate, name: str, figure: str, reference: str) -> str:
    """``"; permutation floors: EXP-1 +0.001, Baseline -0.002"``: the same contrast on unpaired images
    (mean over seeds) for the student and its control, so a Δ near its floors reads as such."""
    parts = []
    for who in (name, reference):
        floor = agg.stat(who, f"cka.{name}.floor_{figure}")
        parts.append(f"{label(who)} {'not recorded' if floor is None else format(floor.mean, '+.3f')}")
    return "; permutation floors (unpaired images): " + ", ".join(parts)
