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
# attention distance per layer and head (Dosovitskiy et al. 2021, Fig. 7), CKA heatmaps of
# each student next to its control (the Baseline measured against the same teacher) and
# Hessian curvature. The tables come from `python -m kdbias.report`, whose helpers this
# notebook reuses: the same run selection (one dataset / preset pair, one configuration per
# experiment, the newest run of each seed) and the same statistics (mean ± 95 % Student-t
# interval over seeds, differences paired by seed).
#
# `RUNS_DIR` is the environment variable `KDBIAS_RUNS_DIR`, else `../runs` (next to
# `notebooks/`), else `runs`. Any subset of runs may be present: a plot whose inputs are
# missing is skipped with a note. Every figure is also saved as a PNG in `FIG_DIR`
# (`KDBIAS_FIG_DIR`, else `figures/` in the working directory, next to `RESULTS.md`), so
# `python notebooks/analysis.py` writes them without a display and prints where.
# `jupytext --to ipynb notebooks/analysis.py` regenerates `analysis.ipynb` from this file
# (the source of truth).

# %%
import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # a plain script: no display
    matplotlib.use("Agg")
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from kdbias import registry
from kdbias.report import (
    BASELINE,
    PLAN_LAYERS,
    aggregate,
    distilled,
    findings,
    hessian_trace,
    label,
    load_runs,
    pct,
    read_scalars,
    source_line,
    t_ppf,
)
from kdbias.report.answers import answers
from kdbias.report.front import comparison_text, delta_text, p_text

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
# One colour (and marker) per experiment present, distinct up to eight experiments.
PALETTE = {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(ORDER)}
MARKER = {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(ORDER)}
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
# Test accuracy (official test split, checkpoint selected on the held-out split), the study's
# declared hypotheses (confirmatory ones Holm-adjusted; the report's Answers table) and the plan's
# expectations on the analytics (exploratory), each with its Δ and 95 % interval.

# %%
for name in ORDER:
    print(f"{label(name):<20} test acc {pct(agg.acc(name))}")
print()
for answer in answers(agg):  # the study's declared hypotheses, as in the report's Answers table
    print(
        f"- [{answer.family}] {answer.hypothesis.question} {comparison_text(answer.hypothesis.contrast)}: "
        f"{answer.decision.verdict} ({delta_text(answer)}; p {p_text(answer)})"
    )
for line in findings(agg):
    print("-", line.replace("**", ""))

# %% [markdown]
# ## Learning curves
#
# Per run (seed), over epochs — runs of different batch sizes take different numbers of
# steps per epoch, so steps would not compare: `val/acc` (held-out split) at the end of
# each epoch, and the mean logged `train/loss` of each epoch. Epochs come from the `epoch`
# value Lightning logs with every scalar.


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


curves = {
    name: [(by_epoch(run["run_dir"], "val/acc"), by_epoch(run["run_dir"], "train/loss")) for run in agg.runs[name]]
    for name in ORDER
}
if not any(acc or loss for runs_of in curves.values() for acc, loss in runs_of):
    print("Learning curves skipped: no val/acc or train/loss scalars found.")
else:
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, runs_of in curves.items():
        for i, (acc, loss) in enumerate(runs_of):
            style = dict(color=PALETTE[name], marker=MARKER[name], markersize=4, alpha=0.85)
            name_once = label(name) if i == 0 else None
            if acc:
                epochs, values = zip(*acc)
                ax_acc.plot(epochs, np.asarray(values) * 100, label=name_once, **style)
            if loss:
                epochs, values = zip(*loss)
                ax_loss.plot(epochs, values, label=name_once, **style)
    ax_acc.set(xlabel="epoch", ylabel="held-out val acc (%)", title="Held-out validation accuracy per epoch")
    ax_loss.set(xlabel="epoch", ylabel="train loss (epoch mean)", title="Training loss per epoch")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(f"Learning curves of every run (one line per seed) — {source_line(agg)}", fontsize="small")
    fig.tight_layout()
    save(fig, "learning_curves")

# %% [markdown]
# ## Mean attention distance per head
#
# As in Dosovitskiy et al. (2021), Fig. 7: x = layer, y = mean attention distance in
# pixels, one dot per head (and seed), one colour per experiment; the line is the mean
# over heads and seeds. The dotted verticals mark the plan's layers, on which the report
# compares each student with the Baseline (paired by seed).

# %%
students = [name for name in registry.STUDENTS if agg.has_attention(name)]
if not students:
    print("Attention-distance plot skipped: no run has attn_dist / attn_dist_heads yet.")
else:
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.6 / max(1, len(students))
    for k, name in enumerate(students):
        offset = (k - (len(students) - 1) / 2) * width
        for run in agg.runs[name]:
            for layer, values in (run.get("attn_dist_heads") or {}).items():
                ax.scatter(np.full(len(values), int(layer) + offset), values, s=14, color=PALETTE[name], alpha=0.7)
        layers = sorted({int(layer) for run in agg.runs[name] for layer in (run.get("attn_dist") or {})})
        means = [agg.stat(name, f"attn_dist.{layer}").mean for layer in layers]
        ax.plot(
            [layer + offset for layer in layers],
            means,
            "-",
            color=PALETTE[name],
            marker=MARKER[name],
            label=label(name),
            linewidth=1.5,
        )
    for layer in PLAN_LAYERS:
        ax.axvline(layer, color="grey", linestyle=":", linewidth=1)
    ax.margins(y=0.08)  # the axis spans the data's range (distances differ by fractions of a pixel)
    ax.set(
        xlabel="layer (0-based)",
        ylabel="mean attention distance (px)",
        title="Mean attention distance per head, each student (dots: heads and seeds; line: mean)",
    )
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(source_line(agg), fontsize="small")
    fig.tight_layout()
    save(fig, "attention_distance")

# %% [markdown]
# ## CKA heatmaps
#
# Top: each distilled student against its teacher (the lowest seed with a heatmap);
# bottom: its control, the Baseline against the same teacher. A clean depth-matched
# diagonal means layer-wise alignment; the report compares the contrasts, paired by seed.


# %%
def first_heatmap(name, key):
    """(run, PNG path) of the lowest-seed run of ``name`` with a heatmap for ``key``."""
    for run in agg.runs.get(name, []):
        entry = (run.get("cka") or {}).get(key) or {}
        path = Path(run["run_dir"]) / entry["heatmap"] if entry.get("heatmap") else None
        if path is not None and path.is_file():
            return run, entry, path
    return None


columns = [(key, first_heatmap(key, key), first_heatmap(BASELINE, key)) for key in distilled()]
columns = [column for column in columns if column[1] or column[2]]
if not columns:
    print("CKA heatmaps skipped: no run has a CKA heatmap PNG yet.")
else:
    fig, axes = plt.subplots(2, len(columns), figsize=(5 * len(columns), 10), squeeze=False)
    for col, (key, student, control) in enumerate(columns):
        for row, (who, found) in enumerate(((label(key), student), (f"{label(BASELINE)} (control)", control))):
            ax = axes[row][col]
            ax.axis("off")
            if found is None:
                ax.set_title(f"{who} vs {label(key)}'s teacher: no heatmap", fontsize="small")
                continue
            run, entry, path = found
            ax.imshow(mpimg.imread(path))
            contrast = entry.get("contrast")
            extra = "" if contrast is None else f"\ncontrast {contrast:.3f}"
            ax.set_title(
                f"{who} (seed {run['seed']})\nvs the {label(key)} teacher {entry.get('teacher')}{extra}",
                fontsize="small",
            )
    fig.suptitle(
        f"CKA: each distilled student (top) and the Baseline control (bottom) — {source_line(agg)}", fontsize="small"
    )
    fig.tight_layout()
    save(fig, "cka_heatmaps")

# %% [markdown]
# ## Hessian curvature
#
# Trace (Hutchinson) of the training-loss Hessian at the end of training: mean with the
# 95 % Student-t interval over seeds, or for a single run ± t(0.975, probes − 1) × its
# Hutchinson standard error. Hatched bars have no interval (standard error or probe count not recorded).

# %%
bars = []
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
    bars.append((name, stat.mean, error, hessian_trace(agg, name)[1]))
if not bars:
    print("Hessian plot skipped: no run has hessian_trace yet.")
else:
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (name, mean, error, significant) in enumerate(bars):
        ax.bar(i, mean, yerr=error, capsize=4, color=PALETTE.get(name, "grey"), hatch=None if significant else "//")
    ax.set_xticks(range(len(bars)), [label(name) for name, *_ in bars])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(
        title="Hessian trace of the student's CE at the end of training (95 % interval)",
        ylabel="trace",
        xlabel="student",
    )
    fig.suptitle(source_line(agg), fontsize="small")
    fig.tight_layout()
    save(fig, "hessian_trace")
