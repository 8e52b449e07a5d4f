"""Phase 3 of the report: CKA against controls, Hessian curvature, attention distance."""

from __future__ import annotations

from pathlib import Path

from kdbias import registry
from kdbias.report.aggregate import PLAN_LAYERS, Aggregate, label
from kdbias.report.cells import PENDING, estimate, href, table, verdict_text
from kdbias.report.findings import BASELINE, attention_label, distilled
from kdbias.report.stats import HUTCHINSON_Z, finite, normal_interval, summarize

__all__ = ["attention_cell", "attention_section", "cka_section", "hessian_cell", "hessian_section", "hessian_trace"]

LAYERS = ", ".join(str(i) for i in PLAN_LAYERS)

DEPTH_NOTE = (
    "Contrast = mean CKA on the depth-matched diagonal − mean CKA of the other cells (student blocks × teacher "
    "blocks, minibatch CKA on held-out images). The diagonal pairs student block i with teacher block "
    "j(i) = round(i · (L_teacher − 1) / (L_student − 1)) (halves rounded up): the ordinary diagonal when the depths "
    "agree, and teachers of another depth mapped by relative depth. The control of each comparison is the Baseline "
    "(no teacher) measured against the same teacher, so Δ contrast is what distillation added. For a student "
    "whose loss aligns chosen layer pairs, `trained` is the mean CKA of those cells and `untrained contrast` the "
    "contrast with those cells held out of both means; the control's figure is computed on the same cells."
)


# --------------------------------------------------------------------------- CKA


def _links(agg: Aggregate, name: str, key: str, out_dir: str | Path | None) -> list[str]:
    links = []
    for run in agg.runs.get(name, []):
        link = href(run, ((run.get("cka") or {}).get(key) or {}).get("heatmap"), out_dir)
        if link is not None:
            links.append(f"[seed {run['seed']}]({link})")
    return links


def _teacher_of_key(agg: Aggregate, key: str) -> str:
    for name in (key, BASELINE):
        for run in agg.runs.get(name, []):
            teacher = ((run.get("cka") or {}).get(key) or {}).get("teacher")
            if isinstance(teacher, str):
                return teacher
    return f"{label(key)}'s teacher"


def _cka_row(agg: Aggregate, key: str, figure: str, title: str, out_dir: str | Path | None) -> list[str]:
    path = f"cka.{key}.{figure}"
    student, control = agg.stat(key, path), agg.stat(BASELINE, path)
    if control is None and agg.has(BASELINE) and figure in ("trained", "untrained_contrast"):
        control_cell = "not available (the control did not record it on the same cells)"
        delta_cell = verdict = "—"
    else:
        control_cell = estimate(control, digits=3)
        delta = agg.delta(key, BASELINE, path)
        delta_cell = estimate(delta, digits=3, signed=True)
        verdict = verdict_text(delta, ">", digits=3)
    links = _links(agg, key, key, out_dir)
    control_links = _links(agg, BASELINE, key, out_dir)
    heatmaps = " ".join(links) or PENDING
    if control_links:
        heatmaps += "; control: " + " ".join(control_links)
    return [title, estimate(student, digits=3), control_cell, delta_cell, verdict, heatmaps]


def cka_section(agg: Aggregate, out_dir: str | Path | None, source: str) -> list[str]:
    """The CKA table: each distilled student vs its teacher, against the Baseline's control."""
    rows = []
    for key in distilled():
        teacher = _teacher_of_key(agg, key)
        rows.append(_cka_row(agg, key, "contrast", f"{label(key)} student vs {teacher}: contrast", out_dir))
        if registry.EXPERIMENTS[key].module == "CKADistillModule":
            rows.append(_cka_row(agg, key, "trained", f"{label(key)} vs {teacher}: trained pairs (mean CKA)", out_dir))
            rows.append(
                _cka_row(agg, key, "untrained_contrast", f"{label(key)} vs {teacher}: untrained contrast", out_dir)
            )
    header = [
        "Comparison",
        "Student",
        f"Control ({label(BASELINE)} vs the same teacher)",
        "Δ (paired)",
        "Verdict",
        "Heatmaps",
    ]
    return ["### CKA Heatmaps\n", source + "\n", DEPTH_NOTE + "\n", table(header, rows) + "\n"]


# --------------------------------------------------------------------------- Hessian


def hessian_trace(agg: Aggregate, name: str) -> tuple[str, bool | None]:
    """The Hessian-trace cell of ``name`` and whether it is significant (``None``: unknown).

    n >= 2: mean ± t-CI over seeds; n = 1: the Hutchinson estimate ± 1.96 × its standard
    error. Significant when the interval excludes 0; marked "not significant" otherwise.
    """
    traces = agg.by_seed(name, "hessian_trace")
    if not traces:
        return PENDING, None
    if len(traces) >= 2:
        stat = summarize(traces.values())
        assert stat is not None and stat.low is not None and stat.high is not None
        cell, significant = estimate(stat, spec=".4g"), not stat.low <= 0.0 <= stat.high
    else:
        run = next(r for r in agg.runs[name] if r["seed"] in traces)
        value, stderr = traces[run["seed"]], finite(run.get("hessian_trace_stderr"))
        if stderr is None:
            return f"{value:.4g} (n=1; no standard error recorded)", None
        low, high = normal_interval(value, stderr)
        probes = run.get("hessian_trace_probes")
        detail = f"Hutchinson ± {HUTCHINSON_Z} × s.e." + (f", {probes} probes" if probes is not None else "")
        cell, significant = f"{value:.4g} ± {HUTCHINSON_Z * stderr:.4g} (n=1; {detail})", not low <= 0.0 <= high
    return (cell if significant else f"{cell} — **not significant**"), significant


def hessian_cell(agg: Aggregate, name: str) -> str:
    """The Hessian-trace cell (see :func:`hessian_trace`)."""
    return hessian_trace(agg, name)[0]


def _top_eig(agg: Aggregate, name: str) -> str:
    stat = agg.stat(name, "hessian_top_eig")
    if stat is None:
        return PENDING
    residuals = agg.by_seed(name, "hessian_top_eig_residual")
    cell = estimate(stat, spec=".4g")
    if residuals:
        worst = max(residuals.values())
        cell += f"; residual ≤ {worst:.2g} (an eigenvalue lies within {worst * 100:.0f} % of it)"
    return cell


def hessian_section(agg: Aggregate, source: str) -> list[str]:
    """Hessian trace and top eigenvalue per student, with their significance."""
    rows = []
    for name in registry.STUDENTS:
        cell, significant = hessian_trace(agg, name)
        if significant is None:
            reading = PENDING if cell == PENDING else "no interval: not interpreted"
        elif significant:
            reading = "significant (interval excludes 0): higher = sharper minimum"
        else:
            reading = "not significant (interval contains 0): no sharpness reading"
        rows.append([label(name), cell, _top_eig(agg, name), reading])
    return [
        "### Hessian Analysis (Loss Landscape Geometry)\n",
        source + "\n",
        "Trace: Hutchinson estimate of the training-loss Hessian trace at the end of training; top eigenvalue: "
        "power iteration with its relative residual. Orderings between students are in Key Findings (paired by "
        "seed).\n",
        table(["Model", "Hessian Trace", "Top Eigenvalue", "Interpretation"], rows) + "\n",
    ]


# --------------------------------------------------------------------------- attention


def _layer_cell(agg: Aggregate, name: str, layer: int) -> str:
    stat = agg.stat(name, f"attn_dist.{layer}")
    if stat is None:
        return "n/a" if agg.has_attention(name) else PENDING
    return estimate(stat, unit=" px")


def _mean_cell(agg: Aggregate, name: str) -> str:
    values = agg.attention_by_seed(name)
    if not values:
        return f"n/a (no layers {LAYERS})" if agg.has_attention(name) else PENDING
    return estimate(summarize(values.values()), unit=" px")


def attention_cell(agg: Aggregate, name: str) -> str:
    """Matrix cell: the four-layer mean, and for a student its label relative to the baseline."""
    mean = _mean_cell(agg, name)
    if name == BASELINE or mean == PENDING or mean.startswith("n/a"):
        return mean if name != BASELINE or mean == PENDING else f"{mean} (reference)"
    delta = agg.attention_delta(name, BASELINE)
    if delta is None:
        return f"{mean}; vs baseline {PENDING}"
    return f"{attention_label(delta)} ({mean}; Δ {estimate(delta, unit=' px', signed=True)})"


def attention_section(agg: Aggregate, source: str) -> list[str]:
    """Attention distance at the plan's layers, and each student's paired Δ vs the baseline."""
    rows = [
        [label(n), *(_layer_cell(agg, n, layer) for layer in PLAN_LAYERS), _mean_cell(agg, n)]
        for n in registry.STUDENTS
    ]
    deltas = []
    for name in registry.STUDENTS:
        if name == BASELINE:
            continue
        cells = []
        for layer in PLAN_LAYERS:
            path = f"attn_dist.{layer}"
            cells.append(estimate(agg.delta(name, BASELINE, path), unit=" px", signed=True))
        delta = agg.attention_delta(name, BASELINE)
        claim = "<" if delta is not None and delta.mean < 0 else ">"
        deltas.append(
            [
                label(name),
                *cells,
                estimate(delta, unit=" px", signed=True),
                f"{attention_label(delta)} — Δ {claim} 0: {verdict_text(delta, claim, unit=' px')}",
            ]
        )
    header = [f"Layer {i}" for i in PLAN_LAYERS]
    return [
        "### Mean Attention Distance\n",
        source + "\n",
        "*Longer distance = more global attention* (pixels, mean over heads; `n/a`: the model has no such layer).\n",
        table(["Model", *header, f"Mean of layers {LAYERS}"], rows) + "\n",
        f"Δ vs {label(BASELINE)}, paired by seed (n = pairs); the label is decided by the verdict on the mean of the "
        "four layers.\n",
        table(["Model", *(f"Δ {h}" for h in header), "Δ mean", "Label"], deltas) + "\n",
    ]
