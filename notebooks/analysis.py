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
# missing is skipped with a note. `jupytext --to ipynb notebooks/analysis.py` regenerates
# `analysis.ipynb` from this file (the source of truth).

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

sns.set_theme(context="notebook", style="whitegrid")


def _default_runs_dir() -> Path:
    if os.environ.get("KDBIAS_RUNS_DIR"):
        return Path(os.environ["KDBIAS_RUNS_DIR"])
    for candidate in (Path("..") / "runs", Path("runs")):
        if candidate.is_dir():
            return candidate
    return Path("runs")


RUNS_DIR = _default_runs_dir()
DATASET = os.environ.get("KDBIAS_DATASET") or None  # optional: force a dataset / preset pair
PRESET = os.environ.get("KDBIAS_PRESET") or None

runs = load_runs(RUNS_DIR)
agg = aggregate(runs, dataset=DATASET, preset=PRESET)
ORDER = [name for name in registry.EXPERIMENTS if agg.has(name)]
PALETTE = dict(zip(registry.EXPERIMENTS, sns.color_palette("colorblind", len(registry.EXPERIMENTS))))
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
# Test accuracy (official test split, checkpoint selected on the held-out split) and the
# plan's expectations, each a verdict with the paired Δ, its 95 % interval and n.

# %%
for name in ORDER:
    print(f"{label(name):<20} test acc {pct(agg.acc(name))}")
print()
for line in findings(agg):
    print("-", line.replace("**", ""))

# %% [markdown]
# ## Learning curves
#
# `val/acc` (held-out split) and `train/loss` from TensorBoard, one line per run (seed).

# %%
curves = {
    name: [
        (read_scalars(run["run_dir"], "val/acc"), read_scalars(run["run_dir"], "train/loss")) for run in agg.runs[name]
    ]
    for name in ORDER
}
if not any(acc or loss for runs_of in curves.values() for acc, loss in runs_of):
    print("Learning curves skipped: no val/acc or train/loss scalars found.")
else:
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4))
    for name, runs_of in curves.items():
        for i, (acc, loss) in enumerate(runs_of):
            name_once = label(name) if i == 0 else None
            if acc:
                steps, values = zip(*acc)
                ax_acc.plot(steps, np.asarray(values) * 100, color=PALETTE[name], label=name_once, alpha=0.85)
            if loss:
                steps, values = zip(*loss)
                ax_loss.plot(steps, values, color=PALETTE[name], label=name_once, alpha=0.85)
    ax_acc.set(xlabel="step", ylabel="held-out val acc (%)", title="Held-out validation accuracy")
    ax_loss.set(xlabel="step", ylabel="train loss", title="Training loss")
    for ax in (ax_acc, ax_loss):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(source_line(agg), fontsize="small")
    fig.tight_layout()
    plt.show()

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
        ax.plot([layer + offset for layer in layers], means, "-", color=PALETTE[name], label=label(name), linewidth=1.5)
    for layer in PLAN_LAYERS:
        ax.axvline(layer, color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="layer (0-based)",
        ylabel="mean attention distance (px)",
        title="Mean attention distance per head",
        ylim=(0, None),
    )
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(source_line(agg), fontsize="small")
    fig.tight_layout()
    plt.show()

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
            ax.set_title(f"{who} vs {entry.get('teacher')} (seed {run['seed']}){extra}", fontsize="small")
    fig.suptitle(source_line(agg), fontsize="small")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Hessian curvature
#
# Trace (Hutchinson) of the training-loss Hessian at the end of training: mean with the
# 95 % Student-t interval over seeds, or for a single run ± t(0.975, probes − 1) × its
# Hutchinson standard error. Hatched bars are not significant (the interval contains 0).

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
        ax.bar(i, mean, yerr=error, capsize=4, color=PALETTE[name], hatch=None if significant else "//")
    ax.set_xticks(range(len(bars)), [label(name) for name, *_ in bars])
    ax.set(title="Hessian trace (95 % interval)", ylabel="trace")
    fig.suptitle(source_line(agg), fontsize="small")
    fig.tight_layout()
    plt.show()
