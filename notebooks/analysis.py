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
# Figures for the research plan (`seed/000_aa9b27aac336948e.txt`) from the runs under
# `RUNS_DIR`: learning curves, mean attention distance per layer and head (Dosovitskiy
# et al. 2021, Fig. 7), CKA heatmaps and Hessian curvature. The tables themselves come
# from `python -m kdbias.report`, which this notebook reuses (same run selection: one
# dataset / preset pair, the latest run per experiment and seed).
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
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from kdbias.report import (  # noqa: E402
    LABELS,
    STUDENTS,
    aggregate,
    attention_label,
    findings,
    load_runs,
    read_scalars,
    source_line,
    uniform_attention_distance,
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
ORDER = [name for name in ("teacher_resnet18", "teacher_convnextv2", *STUDENTS) if agg.has(name)]
PALETTE = dict(zip(("baseline", "exp1", "exp2", "exp3", "teacher_resnet18", "teacher_convnextv2"),
                   sns.color_palette("colorblind", 6)))
print(f"RUNS_DIR = {RUNS_DIR.resolve()}: {len(runs)} completed run(s)")
print(source_line(agg))
for dataset, preset, count in agg.ignored:
    print(f"ignored: {dataset} / {preset} ({count} run(s))")
for name in ORDER:
    seeds = [run.get("seed") for run in agg.runs[name]]
    print(f"  {LABELS[name]:<20} seeds {seeds}")
if not ORDER:
    print("No completed runs yet: every plot below is skipped. Train with `python experiments/run_all.py --smoke`.")

# %% [markdown]
# ## Summary
#
# Accuracies (final epoch) and the plan's expectations, as computed by `kdbias.report`.

# %%
for name in ORDER:
    stat = agg.acc(name)
    print(f"{LABELS[name]:<20} val acc {'n/a' if stat is None else stat.format(scale=100, unit=' %')}")
print()
for line in findings(agg):
    print("-", line)

# %% [markdown]
# ## Learning curves
#
# `val/acc` and `train/loss` from TensorBoard, one line per run (seed).

# %%
curves = {
    name: [(run, read_scalars(run["run_dir"], "val/acc"), read_scalars(run["run_dir"], "train/loss"))
           for run in agg.runs[name]]
    for name in ORDER
}
if not any(acc or loss for runs_of in curves.values() for _, acc, loss in runs_of):
    print("Learning curves skipped: no val/acc or train/loss scalars found.")
else:
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4))
    for name, runs_of in curves.items():
        for i, (run, acc, loss) in enumerate(runs_of):
            label = LABELS[name] if i == 0 else None
            if acc:
                steps, values = zip(*acc)
                ax_acc.plot(steps, np.asarray(values) * 100, color=PALETTE[name], label=label, alpha=0.85)
            if loss:
                steps, values = zip(*loss)
                ax_loss.plot(steps, values, color=PALETTE[name], label=label, alpha=0.85)
    ax_acc.set(xlabel="step", ylabel="val acc (%)", title="Validation accuracy")
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
# over heads. The dashed line is the distance under uniform attention over the grid
# (the reference of the Short / Medium / Long label in the report).

# %%
students = [name for name in STUDENTS if agg.has_attention(name)]
if not students:
    print("Attention-distance plot skipped: no run has attn_dist / attn_dist_heads yet.")
else:
    grid, patch = agg.grid()
    uniform = uniform_attention_distance(grid, patch)
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.6 / max(1, len(students))
    for k, name in enumerate(students):
        offset = (k - (len(students) - 1) / 2) * width
        for run in agg.runs[name]:
            heads = run.get("attn_dist_heads") or {}
            for layer, values in heads.items():
                values = [v for v in values if v is not None]
                ax.scatter(np.full(len(values), int(layer) + offset), values, s=14, color=PALETTE[name], alpha=0.7)
        layers = sorted({int(layer) for run in agg.runs[name] for layer in (run.get("attn_dist") or {})})
        means = [agg.layer_stat(name, layer) for layer in layers]
        label = LABELS[name]
        ratio = agg.attention_ratio(name)
        if ratio is not None:
            label += f" ({attention_label(ratio.mean)}, r = {ratio.mean:.2f})"
        ax.plot([layer + offset for layer in layers], [m.mean for m in means], "-", color=PALETTE[name],
                label=label, linewidth=1.5)
    ax.axhline(uniform, color="grey", linestyle="--", linewidth=1, label=f"uniform attention ({uniform:.1f} px)")
    ax.set(xlabel="layer (0-based)", ylabel="mean attention distance (px)",
           title="Mean attention distance per head", ylim=(0, None))
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(source_line(agg), fontsize="small")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## CKA heatmaps
#
# Student blocks vs teacher blocks (the latest heatmap of each distilled run, seed 0 or
# the lowest seed present), side by side; a clean diagonal means layer-wise alignment.

# %%
heatmaps = []
for name in ("exp1", "exp2", "exp3"):
    for run in agg.runs.get(name, []):
        rel = run.get("cka_heatmap")
        path = Path(run["run_dir"]) / rel if rel else None
        if path is not None and path.is_file():
            heatmaps.append((name, run, path))
            break
if not heatmaps:
    print("CKA heatmaps skipped: no distilled run has a cka_heatmap PNG yet.")
else:
    fig, axes = plt.subplots(1, len(heatmaps), figsize=(5 * len(heatmaps), 5), squeeze=False)
    for ax, (name, run, path) in zip(axes[0], heatmaps):
        ax.imshow(mpimg.imread(path))
        alignment = run.get("cka_diag_alignment")
        extra = "" if alignment is None else f"\ndiag alignment {alignment:.3f}"
        ax.set_title(f"{LABELS[name]} (seed {run.get('seed')}){extra}", fontsize="small")
        ax.axis("off")
    fig.suptitle(source_line(agg), fontsize="small")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Hessian curvature
#
# Trace (Hutchinson) and top eigenvalue (power iteration) of the training-loss Hessian
# at the end of training; mean with the sample std over seeds as error bars.

# %%
rows = [(name, agg.stat(name, "hessian_trace"), agg.stat(name, "hessian_top_eig")) for name in STUDENTS]
rows = [row for row in rows if row[1] is not None or row[2] is not None]
if not rows:
    print("Hessian plot skipped: no run has hessian_trace / hessian_top_eig yet.")
else:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, index, title in ((axes[0], 1, "Hessian trace"), (axes[1], 2, "Top Hessian eigenvalue")):
        present = [(row[0], row[index]) for row in rows if row[index] is not None]
        names = [LABELS[name] for name, _ in present]
        means = [stat.mean for _, stat in present]
        errors = [stat.std or 0.0 for _, stat in present]
        ax.bar(names, means, yerr=errors, capsize=4, color=[PALETTE[name] for name, _ in present])
        ax.set(title=title, ylabel="value")
    fig.suptitle(source_line(agg), fontsize="small")
    fig.tight_layout()
    plt.show()
