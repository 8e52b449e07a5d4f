"""Phase 3 of the report: CKA against controls, Hessian curvature, attention distance."""

from __future__ import annotations

import math
from pathlib import Path

from kdbias import registry
from kdbias.report.aggregate import PLAN_LAYERS, Aggregate, label
from kdbias.report.cells import NOT_MEASURED, PENDING, compact_cells, estimate, href, is_compact, table, verdict_text
from kdbias.report.findings import attention_claims, attention_label, distilled
from kdbias.report.stats import finite, summarize, t_ppf

__all__ = [
    "attention_cell",
    "attention_section",
    "cka_section",
    "gen_gap_cell",
    "hessian_cell",
    "hessian_section",
    "hessian_trace",
    "top_eig_cell",
]


def _why_missing(agg: Aggregate, name: str) -> str:
    """Why a Δ against the Baseline has no estimate."""
    reference = registry.reference()
    absent = [label(n) for n in (name, reference) if not agg.has(n)]
    return f"no completed run of {' and '.join(absent)}" if absent else "no seed has both runs"


def _named(reference: str | None) -> str:
    """The reference student's label (the control of every Δ here), or that the study declares none."""
    return label(reference) if reference is not None else "the reference student (none declared)"


def _absent(agg: Aggregate, name: str) -> str:
    """``*not measured*`` for an experiment with runs but without the analytic; else pending."""
    return NOT_MEASURED if agg.has(name) else PENDING


LAYERS = ", ".join(str(i) for i in PLAN_LAYERS)

DEPTH_NOTE = (
    "Contrast = mean CKA on the depth-matched diagonal − mean CKA of the other cells (student blocks × teacher "
    "blocks, minibatch CKA on held-out images). The diagonal pairs student block i with teacher block "
    "j(i) = round(i · (L_teacher − 1) / (L_student − 1)) (halves rounded up): the ordinary diagonal when the depths "
    "agree, and teachers of another depth mapped by relative depth. The control of each comparison is the Baseline "
    "(no teacher) measured against the same teacher, so Δ contrast is what distillation added. For a student "
    "whose loss aligns chosen layer pairs, `trained` is the mean CKA of those cells and `untrained contrast` the "
    "contrast with those cells held out of both means; the control's figure is computed on the same cells. "
    "Every CKA figure stands next to its permutation floor: the same figure on the same features with the "
    "teacher's images re-paired within each batch (no image with itself), i.e. what these features read "
    "without pairing; a value near its floor says nothing about alignment."
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
    """The teacher's name, labelled when it has random weights (a smoke run's offline teacher)."""
    reference = registry.reference()
    name, random = f"{label(key)}'s teacher", key in agg.random_teachers()
    for experiment in (key, reference):
        for run in agg.runs.get(experiment, []):
            entry = (run.get("cka") or {}).get(key) or {}
            random = random or entry.get("source") == "random"
            if isinstance(entry.get("teacher"), str) and name.endswith("'s teacher"):
                name = entry["teacher"]
    return f"{name} (random weights: not a result)" if random else name


def _with_floor(agg: Aggregate, name: str, key: str, figure: str, cell: str) -> str:
    """``cell`` (a CKA figure of ``name``) followed by its permutation floor over the same seeds."""
    if cell in (PENDING, NOT_MEASURED) or cell.startswith("not available"):
        return cell
    floor = agg.stat(name, f"cka.{key}.floor_{figure}")
    if floor is None:
        return f"{cell}; floor not recorded"
    return f"{cell}; floor {estimate(floor, digits=3, full=agg.seed_set())}"


def _cka_row(agg: Aggregate, key: str, figure: str, title: str, out_dir: str | Path | None) -> list[str]:
    reference = registry.reference()
    path = f"cka.{key}.{figure}"
    student, control = agg.stat(key, path), agg.stat(reference, path)
    full = agg.seed_set()
    student_cell = estimate(student, digits=3, full=full) if student is not None else _absent(agg, key)
    if control is None and agg.has(reference) and figure in ("trained", "untrained_contrast"):
        control_cell = "not available (the control did not record it on the same cells)"
        delta_cell = verdict = "—"
    elif (student is None and agg.has(key)) or (control is None and agg.has(reference)):
        control_cell = estimate(control, digits=3, full=full) if control is not None else _absent(agg, reference)
        delta_cell, verdict = "—", f"{NOT_MEASURED} (CKA did not run in both experiments)"
    else:
        control_cell = estimate(control, digits=3, full=full)
        delta = agg.delta(key, reference, path)
        delta_cell = estimate(delta, digits=3, signed=True, full=full)
        verdict = verdict_text(delta, ">", digits=3, full=full, missing=_why_missing(agg, key))
    student_cell = _with_floor(agg, key, key, figure, student_cell)
    control_cell = _with_floor(agg, reference, key, figure, control_cell)
    links = _links(agg, key, key, out_dir)
    control_links = _links(agg, reference, key, out_dir)
    heatmaps = " ".join(links) or PENDING
    if control_links:
        heatmaps += "; control: " + " ".join(control_links)
    return [title, student_cell, control_cell, delta_cell, verdict, heatmaps]


def cka_section(agg: Aggregate, out_dir: str | Path | None, source: str) -> list[str]:
    """The CKA table: each distilled student vs its teacher, against the Baseline's control."""
    reference = registry.reference()
    with compact_cells():  # mean [95 % interval] per cell; the note under the table says how
        full_rows = _cka_rows(agg, out_dir)
    rows = [row[:-1] for row in full_rows]  # the heatmap links go below the table, one line per comparison
    links = [f"- {row[0]}: {row[-1]}" for row in full_rows if row[-1] not in ("—", PENDING, NOT_MEASURED, "")]
    header = [
        "Comparison",
        "Student (with its permutation floor)",
        f"Control ({_named(reference)} vs the same teacher; with its floor)",
        "Δ (paired)",
        "Verdict",
    ]
    note = (
        "Cells: mean [95 % interval] over seeds (Student t, seeds − 1 degrees of freedom); Δ paired by seed; "
        "verdicts exploratory (uncorrected)."
    )
    parts = ["### CKA Heatmaps\n", source + "\n", DEPTH_NOTE + "\n", table(header, rows) + "\n", note + "\n"]
    if links:
        parts.append(
            "Heatmaps (per seed; the control is the Baseline against the same teacher):\n\n" + "\n".join(links) + "\n"
        )
    return parts


def _cka_rows(agg: Aggregate, out_dir: str | Path | None) -> list[list[str]]:
    rows = []
    for key in distilled():
        teacher = _teacher_of_key(agg, key)
        rows.append(_cka_row(agg, key, "contrast", f"{label(key)} student vs {teacher}: contrast", out_dir))
        if registry.EXPERIMENTS[key].module == "CKADistillModule":
            rows.append(_cka_row(agg, key, "trained", f"{label(key)} vs {teacher}: trained pairs (mean CKA)", out_dir))
            rows.append(
                _cka_row(agg, key, "untrained_contrast", f"{label(key)} vs {teacher}: untrained contrast", out_dir)
            )
    return rows


# --------------------------------------------------------------------------- Hessian


def hessian_trace(agg: Aggregate, name: str) -> tuple[str, bool | None]:
    """The Hessian-trace cell of ``name`` and whether it carries an interval (``None``: no value).

    n >= 2: mean ± t-CI over seeds; n = 1: the Hutchinson estimate ± ``t_{0.975, P-1}`` × its
    standard error over its ``P`` probes. The trace of a CE Hessian near a minimum is positive, so
    the interval states precision (never a test against 0); orderings between students are paired
    comparisons (Key Findings).
    """
    traces = agg.by_seed(name, "hessian_trace")
    if not traces:
        return _absent(agg, name), None
    if len(traces) >= 2:
        stat = summarize(traces.values(), seeds=traces.keys())
        assert stat is not None
        cell = estimate(stat, spec=".4g", full=agg.seed_set(), bounds=(0.0, math.inf))
        cell += "" if is_compact() else " over seeds"
        return cell, stat.half_width is not None
    run = next(r for r in agg.runs[name] if r["seed"] in traces)
    value, stderr = traces[run["seed"]], finite(run.get("hessian_trace_stderr"))
    probes = run.get("hessian_trace_probes")
    if stderr is None or not isinstance(probes, int) or probes < 2:
        return f"{value:.4g} (n=1; no interval: standard error or probe count not recorded)", False
    t = t_ppf(0.975, probes - 1)
    detail = f"Hutchinson, {probes} probes, ± t(0.975, {probes - 1}) = {t:.3g} × s.e."
    return f"{value:.4g} ± {t * stderr:.4g} (n=1; {detail})", True


def hessian_cell(agg: Aggregate, name: str) -> str:
    """The Hessian-trace cell (see :func:`hessian_trace`)."""
    return hessian_trace(agg, name)[0]


def gen_gap_cell(agg: Aggregate, name: str) -> str:
    """The measured generalisation gap (train − held-out accuracy), in pp, over seeds."""
    stat = agg.stat(name, "gen_gap_acc")
    if stat is None:
        return _absent(agg, name)
    return estimate(stat, scale=100.0, unit=" pp", full=agg.seed_set())


def _certified(run: dict) -> bool:
    """Whether a run's top eigenvalue carries a certificate about the *top* eigenvalue: its
    independent Lanczos starts (at least 2) all converged and agreed (``hessian_top_eig_converged``)."""
    starts = run.get("hessian_top_eig_starts")
    return run.get("hessian_top_eig_converged") is True and isinstance(starts, int) and starts >= 2


def top_eig_cell(agg: Aggregate, name: str) -> str:
    """The top-eigenvalue cell: only certified runs (:func:`_certified`) enter a value, with how
    many of the ``n`` measured runs they are; with none, ``not converged`` and no number."""
    values = agg.by_seed(name, "hessian_top_eig")
    if not values:
        return _absent(agg, name)
    runs = {r["seed"]: r for r in agg.runs[name] if r["seed"] in values}
    good = {seed: v for seed, v in values.items() if _certified(runs[seed])}
    n, k = len(values), len(good)
    if not good:
        runs_text = f"0 of {n} runs certified" if n > 1 else "n=1, not certified"
        return f"**not converged** ({runs_text}: the starts did not converge or agree; no value shown)"
    if k >= 2:
        cell = estimate(summarize(good.values(), seeds=good.keys()), spec=".4g", full=agg.seed_set())
        return f"{cell} over the {k} of {n} runs that converged" if k < n else f"{cell} over seeds, all converged"
    seed = next(iter(good))
    run = runs[seed]
    cell = f"{good[seed]:.4g} (n=1{'' if n == 1 else f' of {n}: the others did not converge'}"
    cell += f"; {run['hessian_top_eig_starts']} starts agree"
    residual = finite(run.get("hessian_top_eig_residual"))
    if residual is not None:
        cell += f", residual {residual:.2g}"
    return cell + ")"


def hessian_section(agg: Aggregate, source: str) -> list[str]:
    """Hessian trace and top eigenvalue per student, with their significance."""
    rows = []
    for name in registry.STUDENTS:
        cell, has_interval = hessian_trace(agg, name)
        if has_interval is None:
            reading = cell
        else:
            reading = "higher = sharper minimum; orderings between students: Key Findings (paired by seed)"
        rows.append([label(name), cell, top_eig_cell(agg, name), reading])
    return [
        "### Hessian Analysis (Loss Landscape Geometry)\n",
        source + "\n",
        "Trace: Hutchinson estimate of the training-loss Hessian trace at the end of training, a fixed number of "
        "Rademacher probes; over seeds the mean ± seed interval, for one run ± t(0.975, probes − 1) × its standard "
        "error (a precision, not a test against 0: the trace is positive near a minimum). Top eigenvalue: Lanczos "
        "(full reorthogonalisation) from independent random starts, each stopped when both the Ritz value's change "
        "and the residual ‖Hv − λv‖ / |λ| fall below the tolerance; a run's value is certified only when every start "
        "converged and they agree within 1 % (a start that settled on a lower eigenvalue is outvoted). Only certified "
        "runs enter the mean ± seed interval, with how many of the n runs they are; a run that is not certified reads "
        "*not converged*. Orderings between students are in Key Findings (paired by seed).\n",
        table(["Model", "Hessian Trace", "Top Eigenvalue", "Interpretation"], rows) + "\n",
    ]


# --------------------------------------------------------------------------- attention


def _layer_cell(agg: Aggregate, name: str, layer: int) -> str:
    stat = agg.stat(name, f"attn_dist.{layer}")
    if stat is None:
        return "n/a" if agg.has_attention(name) else _absent(agg, name)
    return estimate(stat, unit=" px", full=agg.seed_set())


def _mean_cell(agg: Aggregate, name: str) -> str:
    values = agg.attention_by_seed(name)
    if not values:
        return f"n/a (no layers {LAYERS})" if agg.has_attention(name) else _absent(agg, name)
    return estimate(summarize(values.values(), seeds=values.keys()), unit=" px", full=agg.seed_set())


def attention_cell(agg: Aggregate, name: str) -> str:
    """Matrix cell: the four-layer mean (the baseline), or a student's label relative to the baseline
    with its paired Δ (its own mean is in the attention table)."""
    reference = registry.reference()
    mean = _mean_cell(agg, name)
    if name == reference or mean in (PENDING, NOT_MEASURED) or mean.startswith("n/a"):
        return mean if name != reference or mean in (PENDING, NOT_MEASURED) else f"{mean} (reference)"
    delta = agg.attention_delta(name, reference)
    if delta is None:
        return f"{mean}; vs baseline {_absent(agg, reference) if not agg.has_attention(reference) else PENDING}"
    delta_cell = estimate(delta, unit=" px", signed=True, full=agg.seed_set())
    return f"{attention_label(delta)}: Δ {delta_cell}"


def attention_section(agg: Aggregate, source: str) -> list[str]:
    """Attention distance at the plan's layers, and each student's paired Δ vs the baseline."""
    reference, claims = registry.reference(), attention_claims()
    rows = [
        [label(n), *(_layer_cell(agg, n, layer) for layer in PLAN_LAYERS), _mean_cell(agg, n)]
        for n in registry.STUDENTS
    ]
    deltas = []
    for name in registry.STUDENTS:
        if name == reference:
            continue
        cells = []
        for layer in PLAN_LAYERS:
            path = f"attn_dist.{layer}"
            cells.append(estimate(agg.delta(name, reference, path), unit=" px", signed=True, full=agg.seed_set()))
        delta = agg.attention_delta(name, reference)
        claim = claims.get(name, (None, ""))[0]  # the study's declared direction, never the data's
        if delta is None and agg.has(name) and agg.has(reference):
            reading = f"{NOT_MEASURED} (attention distance did not run in both experiments)"
        elif claim is None:
            reading = f"{attention_label(delta)} (the plan states no direction for this run)"
        else:
            verdict = verdict_text(delta, claim, unit=" px", missing=_why_missing(agg, name))
            reading = f"{attention_label(delta)} — plan: Δ {claim} 0: {verdict}"
        deltas.append([label(name), *cells, estimate(delta, unit=" px", signed=True, full=agg.seed_set()), reading])
    header = [f"Layer {i}" for i in PLAN_LAYERS]
    return [
        "### Mean Attention Distance\n",
        source + "\n",
        "*Longer distance = more global attention* (pixels, mean over heads; `n/a`: the model has no such layer).\n",
        table(["Model", *header, f"Mean of layers {LAYERS}"], rows) + "\n",
        f"Δ vs {_named(reference)}, paired by seed (n = pairs); the label is decided by the verdict on the mean of the "
        "four layers.\n",
        table(["Model", *(f"Δ {h}" for h in header), "Δ mean", "Label"], deltas) + "\n",
    ]
