"""Fill the research plan's tables from ``runs/``: ``python -m kdbias.report``.

Reads every completed run (``<runs_dir>/<experiment>/version_<n>/summary.json``) and
writes a Markdown document with the plan's tables: the experimental matrix, Phase 1
(teachers), Phase 2 (distillation, deltas), Phase 3 (CKA, Hessian, attention distance)
and key findings stated only as computed comparisons. A cell without data reads
``*pending*``; no number is ever invented.

Rules (also written into the document):

- Accuracy is the final-epoch validation accuracy (``val_acc``).
- Several seeds of one experiment: mean ± sample std (ddof = 1) and n; a single run
  shows just its value. Several completed runs of one seed: the latest (highest
  ``version_<n>``) counts.
- Δ between experiments: difference of the mean accuracies, in percentage points.
- Attention-distance label: per run, the mean over layers of ``attn_dist`` (pixels,
  already a mean over heads) divided by the distance under uniform attention over the
  student's patch grid, ``U`` (:func:`uniform_attention_distance`; 16.55 px for an 8x8
  grid of 4-px patches); the ratio ``r`` is averaged over seeds. Short if ``r < 0.5``,
  Medium if ``0.5 <= r < 0.75``, Long if ``r >= 0.75``.
- Only one (dataset, preset) pair is reported: the one asked for, else the pair with the
  most completed experiments; the others are listed as ignored.

Public helpers (used by ``notebooks/analysis.py``): :func:`load_runs`,
:func:`read_scalars`, :func:`aggregate`, :func:`render_report`, :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdbias.runs import saved_config

__all__ = [
    "ATTENTION_LABEL_RULE",
    "EXPERIMENTS",
    "LABELS",
    "STUDENTS",
    "Aggregate",
    "Stat",
    "aggregate",
    "attention_label",
    "findings",
    "load_runs",
    "main",
    "read_scalars",
    "render_report",
    "source_line",
    "summarize",
    "uniform_attention_distance",
    "write_report",
]

PENDING = "*pending*"

# The plan's rows, in order.
EXPERIMENTS: tuple[str, ...] = ("teacher_resnet18", "teacher_convnextv2", "baseline", "exp1", "exp2", "exp3")
STUDENTS: tuple[str, ...] = ("baseline", "exp1", "exp2", "exp3")
LABELS: dict[str, str] = {
    "teacher_resnet18": "ResNet-18 teacher",
    "teacher_convnextv2": "ConvNeXt V2 teacher",
    "baseline": "Baseline",
    "exp1": "EXP-1",
    "exp2": "EXP-2",
    "exp3": "EXP-3",
}
TEACHER_OF = {"exp1": "teacher_resnet18", "exp2": "teacher_convnextv2"}
TEACHER_TARGETS = {"teacher_resnet18": 0.94, "teacher_convnextv2": 0.95}
PLAN_LAYERS = (3, 6, 9, 11)

# Attention-distance label thresholds on r = mean distance / uniform distance.
SHORT_BELOW = 0.5
LONG_FROM = 0.75
DEFAULT_IMAGE_SIZE = 32
DEFAULT_PATCH_SIZE = 4
ATTENTION_LABEL_RULE = (
    "mean over layers of the per-layer mean attention distance (pixels, mean over heads), "
    "divided by U, the mean distance under uniform attention over the student's patch grid "
    "(all query-key pairs of patch tokens, self-pairs included); U = {u:.4f} px for the "
    "{g}x{g} grid of {p}-px patches. Ratio r (mean over seeds): "
    f"**Short** r < {SHORT_BELOW}, **Medium** {SHORT_BELOW} <= r < {LONG_FROM}, **Long** r >= {LONG_FROM}."
)


# --------------------------------------------------------------------------- loading


def _version(run_dir: Path) -> int:
    suffix = run_dir.name.rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def load_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every completed run under ``runs_dir``: its ``summary.json`` plus bookkeeping.

    Added keys: ``run_dir`` (str), ``version`` (int), ``model`` (from ``hparams.yaml``'s
    ``config``, when the summary has none). A missing ``experiment`` falls back to the
    parent directory's name. Unreadable summaries are skipped with a warning. Sorted by
    experiment, seed and version.
    """
    root = Path(runs_dir)
    runs = []
    for path in sorted(root.glob("*/version_*/summary.json")):
        try:
            summary = json.loads(path.read_text())
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            warnings.warn(f"skipping {path}: {error}", stacklevel=2)
            continue
        run_dir = path.parent
        summary.setdefault("experiment", run_dir.parent.name)
        summary["run_dir"] = str(run_dir)
        summary["version"] = _version(run_dir)
        if "model" not in summary:
            model = saved_config(run_dir).get("model")
            if model is not None:
                summary["model"] = model
        runs.append(summary)
    runs.sort(key=lambda r: (str(r["experiment"]), _seed_key(r.get("seed")), r["version"]))
    return runs


def _seed_key(seed: Any) -> tuple[int, str]:
    return (0, f"{seed:012d}") if isinstance(seed, int) else (1, str(seed))


def read_scalars(run_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` pairs of TensorBoard scalar ``tag`` in ``run_dir``, sorted by step.

    Reads every ``events.out.tfevents.*`` file directly in ``run_dir`` (a resumed run
    has several); where files repeat a step, the later file wins. Empty if the tag or
    the files are missing.
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    by_step: dict[int, float] = {}
    files = sorted(Path(run_dir).glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name))
    for path in files:
        accumulator = EventAccumulator(str(path), size_guidance={SCALARS: 0})
        try:
            accumulator.Reload()
        except Exception as error:  # a truncated file from a killed run
            warnings.warn(f"could not read {path}: {error}", stacklevel=2)
            continue
        if tag not in accumulator.Tags().get("scalars", []):
            continue
        for event in accumulator.Scalars(tag):
            by_step[int(event.step)] = float(event.value)
    return sorted(by_step.items())


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stat:
    """Mean ± sample std (ddof = 1; ``None`` when n = 1) of one quantity over seeds."""

    mean: float
    std: float | None
    n: int
    values: tuple[float, ...] = ()

    def format(self, scale: float = 1.0, digits: int = 2, unit: str = "", spec: str | None = None) -> str:
        """``"86.02 %"`` (n = 1) or ``"86.02 ± 0.31 % (n=2)"``."""
        def number(x: float) -> str:
            return format(x * scale, spec) if spec else f"{x * scale:.{digits}f}"

        text = number(self.mean)
        if self.std is not None:
            text += f" ± {number(self.std)}"
        text += unit
        if self.n > 1:
            text += f" (n={self.n})"
        return text


def summarize(values: Iterable[float | None]) -> Stat | None:
    """:class:`Stat` of the finite values, ``None`` if there are none."""
    kept = tuple(float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
    if not kept:
        return None
    std = statistics.stdev(kept) if len(kept) > 1 else None
    return Stat(statistics.fmean(kept), std, len(kept), kept)


def uniform_attention_distance(grid: int, patch_size: float) -> float:
    """Mean attention distance (pixels) of a head attending uniformly to all patches.

    ``patch_size`` times the mean Euclidean distance between the positions of all
    ``grid**2 x grid**2`` (query, key) pairs of a square grid, self-pairs included --
    the value :func:`kdbias.analytics.mean_attention_distance` returns for uniform
    attention rows over the patch tokens. 16.5459 px for ``grid=8, patch_size=4``.
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    idx = np.arange(grid, dtype=np.float64)
    rows, cols = np.meshgrid(idx, idx, indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()], axis=1)
    diff = coords[:, None, :] - coords[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).mean() * patch_size)


def attention_label(ratio: float | None) -> str | None:
    """Short / Medium / Long for ``ratio`` = mean distance / uniform distance."""
    if ratio is None or not math.isfinite(ratio):
        return None
    if ratio < SHORT_BELOW:
        return "Short"
    if ratio < LONG_FROM:
        return "Medium"
    return "Long"


def run_grid(run: dict[str, Any]) -> tuple[int, int]:
    """``(grid, patch_size)`` of a run's student: summary keys ``grid``/``patch_size`` if
    present, else the patch from the model name (``..._p4``) on 32-px images, else 8 x 4."""
    patch = run.get("patch_size")
    if not isinstance(patch, int):
        match = re.search(r"_p(\d+)(?:_|$)", str(run.get("model", "")))
        patch = int(match.group(1)) if match else DEFAULT_PATCH_SIZE
    grid = run.get("grid")
    if not isinstance(grid, int):
        image = run.get("image_size") if isinstance(run.get("image_size"), int) else DEFAULT_IMAGE_SIZE
        grid = max(1, image // patch)
    return grid, patch


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _mean_attention(run: dict[str, Any]) -> float | None:
    layers = run.get("attn_dist")
    if not isinstance(layers, dict):
        return None
    values = [v for v in (_number(x) for x in layers.values()) if v is not None]
    return statistics.fmean(values) if values else None


# --------------------------------------------------------------------------- aggregation


@dataclass
class Aggregate:
    """The selected runs, one per (experiment, seed), and statistics over seeds.

    ``dataset``/``preset`` are the reported pair (``None`` when there are no runs);
    ``ignored`` lists the other pairs as ``(dataset, preset, completed runs)``.
    """

    dataset: str | None
    preset: str | None
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ignored: list[tuple[str, str, int]] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # experiments outside the plan

    def has(self, experiment: str) -> bool:
        return bool(self.runs.get(experiment))

    def values(self, experiment: str, key: str) -> list[float]:
        return [v for v in (_number(r.get(key)) for r in self.runs.get(experiment, [])) if v is not None]

    def stat(self, experiment: str, key: str) -> Stat | None:
        return summarize(self.values(experiment, key))

    def acc(self, experiment: str) -> Stat | None:
        """Final validation accuracy (fraction)."""
        return self.stat(experiment, "val_acc")

    def delta_pp(self, experiment: str, reference: str) -> float | None:
        """Mean accuracy of ``experiment`` minus that of ``reference``, in percentage points."""
        a, b = self.acc(experiment), self.acc(reference)
        return None if a is None or b is None else (a.mean - b.mean) * 100.0

    def layer_stat(self, experiment: str, layer: int) -> Stat | None:
        values = []
        for run in self.runs.get(experiment, []):
            layers = run.get("attn_dist")
            if isinstance(layers, dict):
                value = _number(layers.get(str(layer), layers.get(layer)))  # type: ignore[arg-type]
                if value is not None:
                    values.append(value)
        return summarize(values)

    def has_attention(self, experiment: str) -> bool:
        return any(isinstance(r.get("attn_dist"), dict) and r["attn_dist"] for r in self.runs.get(experiment, []))

    def attention_stat(self, experiment: str) -> Stat | None:
        """Per run: the mean over layers of ``attn_dist`` (pixels); statistics over seeds."""
        return summarize(_mean_attention(r) for r in self.runs.get(experiment, []))

    def attention_ratio(self, experiment: str) -> Stat | None:
        """Per run: mean attention distance / uniform distance of its grid; over seeds."""
        ratios = []
        for run in self.runs.get(experiment, []):
            mean = _mean_attention(run)
            if mean is not None:
                ratios.append(mean / uniform_attention_distance(*run_grid(run)))
        return summarize(ratios)

    def teacher_acc(self, experiment: str) -> tuple[Stat | None, str]:
        """Teacher accuracy for a student row and where it came from.

        The student run's own ``teacher_acc`` (the teacher evaluated on the same
        validation set; k-NN accuracy for exp3's headless teacher), else for exp1/exp2
        the teacher run's final ``val_acc``.
        """
        stat = self.stat(experiment, "teacher_acc")
        if stat is not None:
            return stat, "k-NN" if experiment == "exp3" else ""
        teacher = TEACHER_OF.get(experiment)
        if teacher is not None:
            return self.acc(teacher), ""
        return None, ""

    def grid(self) -> tuple[int, int]:
        """``(grid, patch)`` of the first student run, else the default 8 x 4."""
        for name in STUDENTS:
            for run in self.runs.get(name, []):
                return run_grid(run)
        return DEFAULT_IMAGE_SIZE // DEFAULT_PATCH_SIZE, DEFAULT_PATCH_SIZE


def _pair(run: dict[str, Any]) -> tuple[str, str]:
    return str(run.get("dataset")), str(run.get("preset"))


def aggregate(runs: Sequence[dict[str, Any]], dataset: str | None = None, preset: str | None = None) -> Aggregate:
    """Select one (dataset, preset) pair and keep the latest run of each (experiment, seed).

    The pair is ``(dataset, preset)`` where given (either may be left ``None``: the best
    matching pair), else the pair with the most distinct completed experiments (ties:
    ``paper`` before other presets, then a non-``digits`` dataset, then the name).
    """
    counts: dict[tuple[str, str], set[str]] = {}
    totals: dict[tuple[str, str], int] = {}
    for run in runs:
        pair = _pair(run)
        counts.setdefault(pair, set()).add(str(run["experiment"]))
        totals[pair] = totals.get(pair, 0) + 1
    candidates = [p for p in counts if (dataset is None or p[0] == dataset) and (preset is None or p[1] == preset)]
    if candidates:
        chosen = max(candidates, key=lambda p: (len(counts[p] & set(EXPERIMENTS)), len(counts[p]), p[1] == "paper",
                                                 p[0] != "digits", p))
        result = Aggregate(dataset=chosen[0], preset=chosen[1])
    else:
        chosen = None
        result = Aggregate(dataset=dataset, preset=preset)
    result.ignored = sorted((p[0], p[1], totals[p]) for p in counts if p != chosen)
    latest: dict[tuple[str, Any], dict[str, Any]] = {}
    for run in runs:
        if _pair(run) != chosen:
            continue
        key = (str(run["experiment"]), run.get("seed"))
        if key not in latest or run.get("version", -1) >= latest[key].get("version", -1):
            latest[key] = run
    for (name, _seed), run in sorted(latest.items(), key=lambda kv: (kv[0][0], _seed_key(kv[0][1]))):
        result.runs.setdefault(name, []).append(run)
    result.others = sorted(set(result.runs) - set(EXPERIMENTS))
    return result


# --------------------------------------------------------------------------- formatting


def _pct(stat: Stat | None) -> str:
    return PENDING if stat is None else stat.format(scale=100.0, unit=" %")


def _pp(value: float | None) -> str:
    return PENDING if value is None else f"{value:+.2f} pp"


def _px(stat: Stat | None) -> str:
    return PENDING if stat is None else stat.format(unit=" px")


def _sci(stat: Stat | None) -> str:
    return PENDING if stat is None else stat.format(spec=".4g")


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _time(stat: Stat | None) -> str:
    if stat is None:
        return PENDING
    text = _duration(stat.mean)
    if stat.std is not None:
        text += f" ± {_duration(stat.std)} (n={stat.n})"
    return text


def _attention_cell(agg: Aggregate, name: str) -> str:
    px, ratio = agg.attention_stat(name), agg.attention_ratio(name)
    if px is None or ratio is None:
        return PENDING
    return f"{attention_label(ratio.mean)} ({px.format(unit=' px')}; r = {ratio.mean:.2f})"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: Sequence[str] | None = None) -> str:
    align = align or [":---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def source_line(agg: Aggregate) -> str:
    """The provenance line written above every table."""
    if agg.dataset is None or agg.preset is None:
        return "Source: no completed runs — every cell is pending."
    pair = f"{agg.dataset} / {agg.preset}"
    if agg.dataset == "digits":
        return f"Source: {pair} — offline smoke data, NOT a CIFAR result"
    if agg.preset != "paper":
        return f"Source: {pair} — reduced '{agg.preset}' preset, NOT a paper-preset result"
    return f"Source: {pair} — the plan's paper preset"


def _link(run: dict[str, Any], out_dir: Path | None) -> str | None:
    rel = run.get("cka_heatmap")
    if not isinstance(rel, str) or not rel:
        return None
    target = Path(run["run_dir"]) / rel
    base = Path.cwd() if out_dir is None else out_dir
    try:
        href = os.path.relpath(target.resolve(), base.resolve())
    except ValueError:  # another drive on Windows
        href = str(target.resolve())
    return Path(href).as_posix()


# --------------------------------------------------------------------------- findings


def _compare_chain(values: list[tuple[str, float | None]], increasing: bool, unit: str, spec: str) -> str:
    """``yes (1.0 < 2.0 < 3.0 unit)`` / ``no (...)`` / ``pending`` for a strict ordering."""
    if any(v is None for _, v in values):
        missing = ", ".join(name for name, v in values if v is None)
        return f"pending (missing: {missing})"
    numbers = [v for _, v in values]  # type: ignore[misc]
    pairs = zip(numbers, numbers[1:])
    held = all(a < b for a, b in pairs) if increasing else all(a > b for a, b in pairs)
    shown = ", ".join(f"{name} {format(v, spec)}{unit}" for name, v in values)
    return f"{'yes' if held else 'no'} ({shown})"


def findings(agg: Aggregate) -> list[str]:
    """The plan's expectations, each as ``"<statement>: yes|no (numbers)"`` or ``pending``."""
    lines = []
    ranked = sorted(((agg.acc(n).mean, n) for n in STUDENTS if agg.acc(n) is not None), reverse=True)
    missing = [LABELS[n] for n in STUDENTS if agg.acc(n) is None]
    if ranked:
        text = " > ".join(f"{LABELS[n]} ({m * 100:.2f} %)" for m, n in ranked)
        if missing:
            text += f"; pending: {', '.join(missing)}"
    else:
        text = "pending"
    lines.append(f"Accuracy ranking (mean final val acc): {text}")

    d1, d2, d3 = (agg.delta_pp(n, "baseline") for n in ("exp1", "exp2", "exp3"))
    lines.append(f"EXP-1 Δ vs baseline < 0 (negative transfer): {_yes_no(d1, d1 is not None and d1 < 0)}")
    d21 = agg.delta_pp("exp2", "exp1")
    lines.append(f"EXP-2 > EXP-1: {_yes_no(d21, d21 is not None and d21 > 0)}")
    lines.append(f"EXP-3 Δ vs baseline >= +3 pp: {_yes_no(d3, d3 is not None and d3 >= 3.0)}")
    d31, d32 = agg.delta_pp("exp3", "exp1"), agg.delta_pp("exp3", "exp2")
    if d31 is None or d32 is None:
        lines.append("EXP-3 > EXP-1 and EXP-3 > EXP-2 (structural beats soft-label KD): pending")
    else:
        held = d31 > 0 and d32 > 0
        lines.append(f"EXP-3 > EXP-1 and EXP-3 > EXP-2 (structural beats soft-label KD): "
                     f"{'yes' if held else 'no'} ({d31:+.2f} pp, {d32:+.2f} pp)")

    attention = [(LABELS[n], _mean(agg.attention_stat(n))) for n in ("exp1", "exp2", "exp3")]
    lines.append("Mean attention distance EXP-1 < EXP-2 < EXP-3: "
                 + _compare_chain(attention, increasing=True, unit=" px", spec=".2f"))
    labels = [(LABELS[n], attention_label(_mean(agg.attention_ratio(n)))) for n in ("exp1", "exp2", "exp3")]
    if any(label is None for _, label in labels):
        lines.append("Attention labels EXP-1 Short, EXP-2 Medium, EXP-3 Long: pending")
    else:
        held = [label for _, label in labels] == ["Short", "Medium", "Long"]
        shown = ", ".join(f"{name} {label}" for name, label in labels)
        lines.append(f"Attention labels EXP-1 Short, EXP-2 Medium, EXP-3 Long: {'yes' if held else 'no'} ({shown})")
    hessian = [(LABELS[n], _mean(agg.stat(n, "hessian_trace"))) for n in ("exp1", "exp2", "exp3")]
    lines.append("Hessian trace EXP-1 > EXP-2 > EXP-3: " + _compare_chain(hessian, increasing=False, unit="", spec=".4g"))
    cka = [(LABELS[n], _mean(agg.stat(n, "cka_diag_alignment"))) for n in ("exp1", "exp2", "exp3")]
    lines.append("CKA diagonal alignment EXP-1 < EXP-2 < EXP-3: " + _compare_chain(cka, increasing=True, unit="", spec=".3f"))
    return lines


def _mean(stat: Stat | None) -> float | None:
    return None if stat is None else stat.mean


def _yes_no(value: float | None, held: bool) -> str:
    return "pending" if value is None else f"{'yes' if held else 'no'} ({value:+.2f} pp)"


# --------------------------------------------------------------------------- rendering


def render_report(
    runs: Sequence[dict[str, Any]],
    dataset: str | None = None,
    preset: str | None = None,
    out_dir: str | Path | None = None,
    runs_dir: str | Path | None = None,
) -> str:
    """The Markdown report of ``runs`` (as returned by :func:`load_runs`).

    ``out_dir``: directory of the output file, for relative heatmap links (default: the
    current directory). ``runs_dir`` is only quoted in the header.
    """
    agg = aggregate(runs, dataset=dataset, preset=preset)
    out = None if out_dir is None else Path(out_dir)
    src = source_line(agg)
    grid, patch = agg.grid()
    uniform = uniform_attention_distance(grid, patch)
    parts: list[str] = []
    add = parts.append

    add("# Mitigating Inductive Bias Mismatch in Heterogeneous Knowledge Distillation — results\n")
    where = f" from `{runs_dir}`" if runs_dir is not None else ""
    add(f"Generated by `python -m kdbias.report`{where}. {src}.\n")
    if agg.ignored:
        add("Ignored (other dataset / preset pairs; select one with `--dataset/--preset`): "
            + "; ".join(f"{d} / {p} ({n} completed run{'s' if n != 1 else ''})" for d, p, n in agg.ignored) + ".\n")
    if agg.others:
        add(f"Runs of experiments outside the plan, not tabulated: {', '.join(agg.others)}.\n")
    add("**How to read the numbers.** Accuracy = final-epoch validation accuracy. Several seeds: "
        "mean ± sample standard deviation (ddof = 1) with n; a single run shows its value. Several "
        "completed runs of one seed: the latest counts. Δ = difference of mean accuracies in "
        "percentage points (pp). *pending* = no completed run carries that number yet.\n")
    add("**Attention-distance label rule:** " + ATTENTION_LABEL_RULE.format(u=uniform, g=grid, p=patch) + "\n")

    # Experimental matrix
    add("## Experimental Matrix\n")
    add(src + "\n")
    matrix_rows = []
    arch = {"baseline": ("None", "Vanilla CE"), "exp1": ("ResNet-18", "Soft KL (τ=4)"),
            "exp2": ("ConvNeXt V2", "Soft KL (τ=4)"), "exp3": ("DINOv2-S/14", "**Structural (CKA)**")}
    for name in STUDENTS:
        teacher, kind = arch[name]
        if name == "baseline":
            teacher_cell, delta = "N/A", "—"
        else:
            stat, note = agg.teacher_acc(name)
            teacher_cell = _pct(stat) if stat is None or not note else f"{note} {_pct(stat)}"
            delta = _pp(agg.delta_pp(name, "baseline"))
        matrix_rows.append([f"**{LABELS[name]}**", teacher, kind, teacher_cell, _pct(agg.acc(name)), delta,
                            _attention_cell(agg, name), _sci(agg.stat(name, "hessian_trace"))])
    add(_table(["Experiment", "Teacher Architecture", "Distillation Type", "Teacher Acc", "Student Acc",
                "Δ vs Baseline", "Inductive Bias (Attn Dist)", "Gen. Gap (Hessian Trace)"], matrix_rows) + "\n")
    add("Teacher Acc: the teacher evaluated inside the student run (EXP-3: k-NN accuracy of the frozen, "
        "headless DINOv2 features), else the teacher run's final val acc.\n")

    # Phase 1
    add("## Phase 1: Teacher Qualification\n")
    for name, title in (("teacher_resnet18", "ResNet-18 (Classic CNN)"),
                        ("teacher_convnextv2", "ConvNeXt V2-Tiny (Modern CNN Bridge)")):
        target = TEACHER_TARGETS[name]
        add(f"### {title}\n")
        add(src + "\n")
        acc = agg.acc(name)
        if acc is None:
            met = PENDING
        else:
            met = f"{'yes' if acc.mean > target else 'no'} ({acc.mean * 100:.2f} % vs > {target * 100:.0f} %)"
        epochs, best = agg.stat(name, "epochs_completed"), agg.stat(name, "best_epoch")
        best_cell = PENDING if best is None else best.format(digits=0 if best.n == 1 else 1)
        if best is not None and epochs is not None:
            best_cell += f" of {epochs.mean:.0f} epochs"
        add(_table(["Metric", "Value"], [
            ["Final Val Accuracy", _pct(acc)],
            ["Best Val Accuracy", _pct(agg.stat(name, "best_val_acc"))],
            ["Best Epoch (0-based)", best_cell],
            ["Training Time", _time(agg.stat(name, "train_time_s"))],
            [f"Target > {target * 100:.0f} % met", met],
        ], [":---", ":---"]) + "\n")

    # Phase 2
    add("## Phase 2: Distillation Results\n")
    phase2 = {
        "exp1": ("EXP-1: DeiT + ResNet-18 (Soft KL Distillation)", ["baseline"]),
        "exp2": ("EXP-2: DeiT + ConvNeXt V2 (Soft KL Distillation)", ["baseline", "exp1"]),
        "exp3": ("EXP-3: DeiT + DINOv2 (CKA Structural Distillation)", ["baseline", "exp1", "exp2"]),
    }
    add("### Baseline: DeiT, vanilla CE\n")
    add(src + "\n")
    add(_table(["Metric", "Value"], [
        ["Student Val Accuracy", _pct(agg.acc("baseline"))],
        ["Mean Attention Distance", _attention_cell(agg, "baseline")],
        ["Hessian Trace", _sci(agg.stat("baseline", "hessian_trace"))],
        ["Generalisation Gap (train − val acc)", _pp_stat(agg.stat("baseline", "gen_gap_acc"))],
    ], [":---", ":---"]) + "\n")
    for name, (title, refs) in phase2.items():
        add(f"### {title}\n")
        add(src + "\n")
        rows = [["Student Val Accuracy", _pct(agg.acc(name))]]
        rows += [[f"Δ vs {LABELS[ref]}", _pp(agg.delta_pp(name, ref))] for ref in refs]
        rows += [["Mean Attention Distance", _attention_cell(agg, name)],
                 ["Hessian Trace", _sci(agg.stat(name, "hessian_trace"))],
                 ["Generalisation Gap (train − val acc)", _pp_stat(agg.stat(name, "gen_gap_acc"))]]
        add(_table(["Metric", "Value"], rows, [":---", ":---"]) + "\n")

    # Phase 3
    add("## Phase 3: Analytics Summary\n")
    add("### CKA Heatmaps\n")
    add(src + "\n")
    notes = {"exp1": ("ResNet-18", "Expected: Weak diagonal"), "exp2": ("ConvNeXt V2", "Expected: Cleaner diagonal"),
             "exp3": ("DINOv2", "Expected: Strong diagonal")}
    cka_rows = []
    for name, (teacher, note) in notes.items():
        links = []
        for run in agg.runs.get(name, []):
            href = _link(run, out)
            if href is not None:
                links.append(f"[seed {run.get('seed')}]({href})")
        contrast = agg.stat(name, "cka_diag_contrast")
        cka_rows.append([f"{LABELS[name]} Student vs {teacher}", _sci3(agg.stat(name, "cka_diag_alignment")),
                         _sci3(contrast), " ".join(links) if links else PENDING, note])
    add(_table(["Comparison", "Diagonal Alignment", "Diagonal Contrast", "Heatmap", "Notes"], cka_rows) + "\n")

    add("### Hessian Analysis (Loss Landscape Geometry)\n")
    add("*Higher trace = sharper minima = worse generalization*\n")
    add(src + "\n")
    interp = {"baseline": "Reference", "exp1": "Expected: High (sharp)", "exp2": "Expected: Medium",
              "exp3": "Expected: Low (flat)"}
    names = {"baseline": "Baseline DeiT", "exp1": "EXP-1 Student", "exp2": "EXP-2 Student", "exp3": "EXP-3 Student"}
    add(_table(["Model", "Hessian Trace", "Top Eigenvalue", "Interpretation"],
               [[names[n], _sci(agg.stat(n, "hessian_trace")), _sci(agg.stat(n, "hessian_top_eig")), interp[n]]
                for n in STUDENTS]) + "\n")

    add("### Mean Attention Distance\n")
    add("*Longer distance = more global attention patterns* (pixels, mean over heads; "
        "`n/a`: the model has no such layer)\n")
    add(src + "\n")
    att_rows = []
    for n in STUDENTS:
        cells = []
        for layer in PLAN_LAYERS:
            stat = agg.layer_stat(n, layer)
            if stat is not None:
                cells.append(stat.format(unit=" px"))
            elif agg.has_attention(n):
                cells.append("n/a")
            else:
                cells.append(PENDING)
        att_rows.append([names[n], *cells])
    add(_table(["Model", *[f"Layer {i}" for i in PLAN_LAYERS]], att_rows) + "\n")

    add("## Key Findings\n")
    add(src + "\n")
    add("Computed from the tables above; each expectation of the plan reads yes, no or pending.\n")
    add("\n".join(f"{i}. {line}" for i, line in enumerate(findings(agg), start=1)) + "\n")
    return "\n".join(parts)


def _pp_stat(stat: Stat | None) -> str:
    return PENDING if stat is None else stat.format(scale=100.0, unit=" pp")


def _sci3(stat: Stat | None) -> str:
    return PENDING if stat is None else stat.format(digits=3)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kdbias.report",
        description="Fill the research plan's tables from completed runs (summary.json files) and write Markdown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("runs_dir", nargs="?", default="runs", help="root of <experiment>/version_<n>/ run directories")
    parser.add_argument("--out", default="RESULTS.md", help="output Markdown file (default: RESULTS.md in the current directory)")
    parser.add_argument("--dataset", default=None,
                        help="report runs on this dataset (default: the pair with the most completed experiments)")
    parser.add_argument("--preset", default=None, help="report runs of this preset: paper | smoke (default: as --dataset)")
    return parser


def write_report(runs_dir: str | Path, out: str | Path, dataset: str | None = None, preset: str | None = None) -> Path:
    """Load the runs under ``runs_dir`` and write the report to ``out``; return ``out``."""
    out = Path(out)
    runs = load_runs(runs_dir)
    text = render_report(runs, dataset=dataset, preset=preset, out_dir=out.parent, runs_dir=runs_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.runs_dir).is_dir():
        print(f"note: runs directory {args.runs_dir!r} does not exist; every cell will be pending", file=sys.stderr)
    out = write_report(args.runs_dir, args.out, dataset=args.dataset, preset=args.preset)
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
