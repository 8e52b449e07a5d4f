# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # kdbias — analysis of the runs
#
# Figures for the research plan from the runs under `RUNS_DIR`: learning curves, mean
# attention distance per layer and head (Dosovitskiy et al. 2021, Fig. 7), CKA matrices of
# each student next to its control (the Baseline measured against the same teacher) and
# Hessian curvature. The tables come from `python -m kdbias.report`, whose helpers this
# notebook reuses: the same run selection (one dataset / preset pair, one configuration per
# experiment, the newest run of each seed), the same statistics and the same cell texts.
# Every title names what it compares and the data source (smoke data and random-weight
# teachers are marked).
#
# `RUNS_DIR` is the environment variable `KDBIAS_RUNS_DIR`, else `../runs` (next to
# `notebooks/`), else `runs`. Any subset of runs may be present: a plot whose inputs are
# missing is skipped with a note. Every figure is also saved as a PNG in `FIG_DIR`
# (`KDBIAS_FIG_DIR`, else `figures/` in the working directory, next to `RESULTS.md`), so
# `python notebooks/analysis.py` writes them without a display and prints where.
# `jupytext --to ipynb notebooks/analysis.py` regenerates `analysis.ipynb` from this file
# (the source of truth).

# %%
import json
import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # a plain script: no display
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from kdbias import registry
from kdbias.analytics.cka_matrix import depth_matched_cells
from kdbias.callbacks.cka_heatmap import colour_scale
from kdbias.report import (
    PLAN_LAYERS,
    aggregate,
    distilled,
    findings,
    label,
    load_runs,
    pct,
    read_scalars,
    source_line,
    t_ppf,
)
from kdbias.report.answers import answers
from kdbias.report.forest import forest_figure
from kdbias.report.front import comparison_text, delta_text, forest_rows, forest_title, p_text
from kdbias.report.phases import teacher_accuracy_cell

REFERENCE = registry.reference()  # the study's reference student: the control of every CKA matrix
sns.set_theme(context="notebook", style="whitegrid")


def _default_runs_dir() -> Path:
    if os.environ.get("KDBIAS_RUNS_DIR"):
        return Path(os.environ["KDBIAS_RUNS_DIR"])
    for candidate in (Path("..") / "runs", Path("runs")):
        if candidate.is_dir():
            return candidate
    return Path("runs")


RUNS_DIR = _default_runs_dir()
FIG_DIR = Path(os.environ.get("KDBIAS_FIG_DIR") or "figures")
#: Okabe & Ito's colour-blind-safe palette (yellow last: it is faint on white).
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def save(fig, name: str) -> None:
    """Save ``fig`` as ``FIG_DIR/<name>.png`` (and show it in a notebook)."""
    FIG_DIR.mkdir(parents=True, exist_ok=True)
    path = FIG_DIR / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"saved {path}")
    plt.show()
    plt.close(fig)


DATASET = os.environ.get("KDBIAS_DATASET") or None  # optional: force a dataset / preset pair
PRESET = os.environ.get("KDBIAS_PRESET") or None

runs = load_runs(RUNS_DIR)
agg = aggregate(runs, dataset=DATASET, preset=PRESET)
ORDER = [name for name in registry.EXPERIMENTS if agg.has(name)]
# One colour (and marker) per experiment present; past eight, a wider palette.
_colours = OKABE_ITO if len(ORDER) <= len(OKABE_ITO) else sns.color_palette("tab20", len(ORDER))
PALETTE = {name: _colours[i] for i, name in enumerate(ORDER)}
MARKER = {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(ORDER)}
# The data source, for every title: the report's provenance line, plus the random-weight teachers.
SOURCE = source_line(agg).removeprefix("Source: ").rstrip(".")
RANDOM = [name for name in agg.random_teachers() if name in ORDER]  # of the experiments drawn here
if RANDOM:
    SOURCE += "; random-weight teachers: " + ", ".join(label(n) for n in RANDOM)
print(f"RUNS_DIR = {RUNS_DIR.resolve()}: {len(runs)} completed run(s)")
print(source_line(agg))
for dataset, preset, count in agg.ignored:
    print(f"ignored: {dataset} / {preset} ({count} run(s))")
for name in ORDER:
    seeds = [run["seed"] for run in agg.runs[name]]
    print(f"  {label(name):<20} seeds {seeds}  configuration {agg.signature[name]}")
for name, left in agg.left_out.items():
    for run, why in left:
        print(f"  left out: {label(name)} {Path(run['run_dir']).name}: {why}")
if not ORDER:
    print("No completed runs yet: every plot below is skipped. Train with `python experiments/run_all.py --smoke`.")

# %% [markdown]
# ## Summary
#
# Test accuracy (official test split, checkpoint selected on the held-out split; each teacher
# exactly as the report's Phase 1 writes it), the study's declared hypotheses (confirmatory ones
# Holm-adjusted; the report's Answers table) and the plan's expectations on the analytics
# (exploratory), each with its Δ and 95 % interval.

# %%
for name in ORDER:
    cell = teacher_accuracy_cell(agg, name) if name in registry.TEACHERS else pct(agg.acc(name))
    print(f"{label(name):<20} test acc {cell}")
print()
DECIDED = answers(agg)
for answer in DECIDED:  # the study's declared hypotheses, as in the report's Answers table
    print(
        f"- [{answer.family}] {answer.hypothesis.question} {comparison_text(answer.hypothesis.contrast)}: "
        f"{answer.decision.verdict} ({delta_text(answer)}; p {p_text(answer)})"
    )
for line in findings(agg):
    print("-", line.replace("**", ""))

# %% [markdown]
# ## Every comparison at a glance
#
# The report's forest plot (`comparisons.png` beside RESULTS.md): each declared comparison's Δ
# with its 95 % interval, confirmatory and exploratory apart, the verdict as the marker.

# %%
ROWS = [row for row in forest_rows(DECIDED) if np.isfinite(row.estimate)]
if ROWS:
    save(forest_figure(ROWS, forest_title(agg)), "comparisons")  # drawn without pyplot: shown from its file
    if "ipykernel" in sys.modules:
        from IPython.display import Image, display

        display(Image(filename=str(FIG_DIR / "comparisons.png")))
else:
    print("No comparison has data yet: no forest plot.")

# %% [markdown]
# ## Learning curves
#
# The plan's students, per epoch (runs of different batch sizes take different numbers of steps
# per epoch, so steps would not compare): held-out accuracy, the cross-entropy term of
# the training loss and the held-out cross-entropy. The objectives differ (CE; 0.5·CE +
# 0.5·τ²·KL; CE + CKA + token terms), so their totals are not drawn on one axis: only the
# CE term, which every objective shares (`train/loss_ce`, or `train/loss` of a CE-only run).
# Thin lines: one per seed; bold: the mean over the seeds that reached that epoch.


# %%
def by_epoch(run_dir, tag):
    """``[(epoch (1-based), mean of tag over the epoch's logged points)]`` from TensorBoard."""
    epoch_at = dict(read_scalars(run_dir, "epoch"))
    sums = {}
    for step, value in read_scalars(run_dir, tag):
        if step in epoch_at:
            total, count = sums.get(int(epoch_at[step]), (0.0, 0))
            sums[int(epoch_at[step])] = (total + value, count + 1)
    return [(epoch + 1, total / count) for epoch, (total, count) in sorted(sums.items())]


def ce_term(run):
    """The training loss's CE term of ``run``: its ``train/loss_ce``, or ``train/loss`` of a CE-only run."""
    curve = by_epoch(run["run_dir"], "train/loss_ce")
    if not curve and (run.get("method") or {}).get("loss") == "ce":
        curve = by_epoch(run["run_dir"], "train/loss")
    return curve


PANELS = [  # (title, y label, curve of a run)
    (
        "Held-out accuracy",
        "held-out val accuracy (%)",
        lambda run: [(e, v * 100) for e, v in by_epoch(run["run_dir"], "val/acc")],
    ),
    ("Training loss: its CE term only", "CE term of train/loss (epoch mean)", ce_term),
    ("Held-out cross-entropy", "held-out val cross-entropy", lambda run: by_epoch(run["run_dir"], "val/loss")),
]
students = [name for name in registry.STUDENTS if agg.has(name)]
curves = {name: [[panel(run) for *_, panel in PANELS] for run in agg.runs[name]] for name in students}
if not any(curve for per_run in curves.values() for panels in per_run for curve in panels):
    print("Learning curves skipped: no val/acc, train/loss or val/loss scalars found.")
else:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.6), layout="constrained")
    for name, per_run in curves.items():
        for k, ax in enumerate(axes):
            seeds = [dict(panels[k]) for panels in per_run if panels[k]]
            for curve in seeds:
                ax.plot(list(curve), list(curve.values()), color=PALETTE[name], linewidth=0.8, alpha=0.45)
            epochs = sorted({e for curve in seeds for e in curve})
            mean = [np.mean([curve[e] for curve in seeds if e in curve]) for e in epochs]
            if epochs:
                ax.plot(epochs, mean, color=PALETTE[name], marker=MARKER[name], linewidth=2.4, label=label(name))
    for ax, (title, ylabel, _) in zip(axes, PANELS):
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, names = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if name not in names:
                handles.append(handle)
                names.append(name)
    handles.append(Line2D([], [], color="grey", linewidth=0.8, alpha=0.6, label="one seed (thin)"))
    fig.legend(handles=handles, loc="outside right center", fontsize="small", title="student (bold: seed mean)")
    fig.suptitle(f"Learning curves of the plan's students, one colour per experiment\n{SOURCE}", fontsize="small")
    save(fig, "learning_curves")

# %% [markdown]
# ## Mean attention distance per head
#
# As in Dosovitskiy et al. (2021), Fig. 7: x = layer, y = mean attention distance in
# pixels, one dot per head (and seed), one colour per experiment; the line is the mean
# over heads and seeds. Dotted verticals (in the legend): the plan's layers, on which the
# report compares each student with the Baseline (paired by seed).

# %%
attending = [name for name in registry.STUDENTS if agg.has_attention(name)]
if not attending:
    print("Attention-distance plot skipped: no run has attn_dist / attn_dist_heads yet.")
else:
    fig, ax = plt.subplots(figsize=(10, 5), layout="constrained")
    width = 0.6 / max(1, len(attending))
    for k, name in enumerate(attending):
        offset = (k - (len(attending) - 1) / 2) * width
        for run in agg.runs[name]:
            for layer, values in (run.get("attn_dist_heads") or {}).items():
                ax.scatter(np.full(len(values), int(layer) + offset), values, s=14, color=PALETTE[name], alpha=0.7)
        layers = sorted({int(layer) for run in agg.runs[name] for layer in (run.get("attn_dist") or {})})
        means = [agg.stat(name, f"attn_dist.{layer}").mean for layer in layers]
        ax.plot([layer + offset for layer in layers], means, "-", color=PALETTE[name], marker=MARKER[name],
                label=label(name), linewidth=1.5)  # fmt: skip
    for i, layer in enumerate(PLAN_LAYERS):
        plan = f"plan's layers ({', '.join(map(str, PLAN_LAYERS))}): compared in the report" if i == 0 else None
        ax.axvline(layer, color="grey", linestyle=":", linewidth=1, label=plan)
    ax.margins(y=0.08)  # the axis spans the data's range (distances differ by fractions of a pixel)
    ax.set(xlabel="layer (0-based)", ylabel="mean attention distance (px)")
    ax.set_title(f"Mean attention distance per head of each student (dots: heads and seeds; line: mean)\n{SOURCE}",
                 fontsize="small")  # fmt: skip
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    save(fig, "attention_distance")

# %% [markdown]
# ## CKA matrices
#
# Linear CKA of every student block (rows, first at the bottom) against every teacher block
# (columns), drawn from the runs' JSON matrices on one colour scale for all panels, chosen
# from the data. Top: each distilled student against its teacher (the lowest seed with a
# matrix, its last measured epoch); bottom: its control, the Baseline against the same
# teacher. Outlined: the depth-matched cells and the cells a CKA loss trains. A clean
# depth-matched diagonal means layer-wise alignment; the report compares the contrasts,
# paired by seed. Each run's own heatmap (with the cell values) is under its
# `analytics/cka_heatmaps/`.


# %%
def first_matrix(name, key):
    """``(run, entry, matrix JSON)`` of the lowest-seed run of ``name`` with a CKA matrix for ``key``."""
    for run in agg.runs.get(name, []):
        entry = (run.get("cka") or {}).get(key) or {}
        path = Path(run["run_dir"]) / Path(entry["heatmap"]).with_suffix(".json") if entry.get("heatmap") else None
        if path is not None and path.is_file():
            return run, entry, json.loads(path.read_text())
    return None


def outline(ax, r, c, **style):
    ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, **style))


columns = [(key, first_matrix(key, key), first_matrix(REFERENCE, key)) for key in distilled()]
columns = [column for column in columns if column[1] or column[2]]
if not columns:
    print("CKA heatmaps skipped: no run has a CKA matrix (analytics/cka_heatmaps/*/epoch_*.json) yet.")
else:
    matrices = [np.asarray(found[2]["cka"], dtype=float) for _, *pair in columns for found in pair if found]
    vmin, vmax, decimals = colour_scale(np.concatenate([m.ravel() for m in matrices]))
    wide = min(len(columns), 4)  # columns per band; each band: students above, controls below
    bands = -(-len(columns) // wide)
    fig, axes = plt.subplots(2 * bands, wide, figsize=(4.2 * wide + 1.5, 4.3 * 2 * bands), squeeze=False,
                             layout="constrained")  # fmt: skip
    for i in range(len(columns), bands * wide):  # the last band's empty places
        axes[-2][i % wide].axis("off")
        axes[-1][i % wide].axis("off")
    image = None
    for i, (key, student, control) in enumerate(columns):
        for row, (who, found) in enumerate(
            ((f"{label(key)} student", student), (f"{label(REFERENCE)} (control)", control))
        ):
            ax = axes[2 * (i // wide) + row][i % wide]
            if found is None:
                ax.axis("off")
                ax.set_title(f"{who} vs the {label(key)} teacher: no matrix", fontsize="small")
                continue
            run, entry, data = found
            matrix = np.asarray(data["cka"], dtype=float)
            image = ax.imshow(matrix, origin="lower", cmap="magma", vmin=vmin, vmax=vmax, aspect="auto")
            s_blocks, t_blocks = data["student_blocks"], data["teacher_blocks"]
            ax.set_xticks(range(len(t_blocks)), t_blocks, fontsize="x-small")
            ax.set_yticks(range(len(s_blocks)), s_blocks, fontsize="x-small")
            ax.set(xlabel="teacher block", ylabel="student block")
            ax.grid(False)
            for r, c in depth_matched_cells(*matrix.shape):
                outline(ax, r, c, edgecolor="black", linewidth=1.8)  # under the dashes: visible on light cells
                outline(ax, r, c, edgecolor="white", linewidth=1.1, linestyle="--")
            for s, t in data.get("trained_pairs") or []:
                if s in s_blocks and t in t_blocks:
                    outline(ax, s_blocks.index(s), t_blocks.index(t), edgecolor="cyan", linewidth=2.0)
            random = " (random weights)" if key in agg.random_teachers() else ""
            contrast = entry.get("contrast")
            ax.set_title(
                f"{who}, seed {run['seed']}, epoch {data.get('epoch')}\nvs the {label(key)} teacher "
                f"{entry.get('teacher')}{random}"
                + ("" if contrast is None else f"\ncontrast {round(contrast, 3) + 0.0:+.3f}"),
                fontsize="small",
            )
    fig.colorbar(
        image, ax=axes, shrink=0.6, label=f"linear CKA (shared scale {vmin:.{decimals}f} to {vmax:.{decimals}f})"
    )
    fig.legend(
        handles=[
            Patch(facecolor="none", edgecolor="black", linestyle="--", label="depth-matched cells"),
            Patch(
                facecolor="none",
                edgecolor="cyan",
                linewidth=2,
                label="cells the student's CKA loss trains (also marked on its control)",
            ),
        ],
        loc="outside lower center",
        ncols=2,
        fontsize="small",
    )
    fig.suptitle(f"CKA of each distilled student (top) and of the Baseline control (bottom) — {SOURCE}",
                 fontsize="small")  # fmt: skip
    save(fig, "cka_heatmaps")

# %% [markdown]
# ## Hessian curvature
#
# Trace (Hutchinson) of the training-loss Hessian at the end of training, one point per
# student: the mean over seeds with its 95 % Student-t interval, or for a single run
# ± t(0.975, probes − 1) × its Hutchinson standard error. Small dots: the seeds. An
# interval reaching below 0 is clipped at 0 (the title says so); a sign test of the trace
# asks nothing, so none is drawn.

# %%
points = []
for name in registry.STUDENTS:
    traces = agg.by_seed(name, "hessian_trace")
    if not traces:
        continue
    stat = agg.stat(name, "hessian_trace")
    if stat.half_width is not None:
        error = stat.half_width
    else:
        run = next(r for r in agg.runs[name] if r["seed"] in traces)
        probes = run.get("hessian_trace_probes") or 0
        error = t_ppf(0.975, probes - 1) * (run.get("hessian_trace_stderr") or 0.0) if probes > 1 else 0.0
    points.append((name, stat.mean, error, list(traces.values())))
if not points:
    print("Hessian plot skipped: no run has hessian_trace yet.")
else:
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(points) + 2), 4.4), layout="constrained")
    clipped = False
    for i, (name, mean, error, seeds) in enumerate(points):
        low = max(0.0, mean - error)
        clipped |= mean - error < 0
        ax.errorbar(i, mean, yerr=[[mean - low], [error]], fmt=MARKER[name], color=PALETTE[name], markersize=8,
                    capsize=5, linewidth=1.6)  # fmt: skip
        ax.scatter(np.full(len(seeds), i + 0.15), seeds, s=12, color=PALETTE[name], alpha=0.6)
    ax.set_xticks(range(len(points)), [label(name) for name, *_ in points], rotation=20, ha="right")
    ax.set_ylim(bottom=0)
    clip = ", lower ends clipped at 0" if clipped else ""
    ax.set(ylabel="Hessian trace of the training CE", xlabel="student")
    title = f"Hessian trace per student at the end of training: mean and 95 % interval{clip}; dots: seeds"
    ax.set_title(f"{title}\n{SOURCE}", fontsize="small")
    save(fig, "hessian_trace")
