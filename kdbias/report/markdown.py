"""The Markdown document: header, the rules ("How to read the numbers"), then the sections of
:mod:`kdbias.report.phases` and :mod:`kdbias.report.analytics`, and the key findings."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdbias import registry
from kdbias.report.aggregate import PLAN_LAYERS, Aggregate, aggregate, label
from kdbias.report.analytics import attention_section, cka_section, hessian_section
from kdbias.report.answers import answers, groups_run
from kdbias.report.cells import PENDING, href, md, source_line
from kdbias.report.engine import MARGIN
from kdbias.report.findings import findings
from kdbias.report.forest import forest_plot
from kdbias.report.front import answers_section, forest_rows, forest_title
from kdbias.report.phases import matrix_section, methods_section, phase1_section, phase2_section
from kdbias.report.why import why_section

__all__ = ["HOW_TO_READ", "render_report", "source_line"]

LAYERS = ", ".join(str(i) for i in PLAN_LAYERS)

HOW_TO_READ = f"""## How to read the numbers

- *Accuracy* ("Student Acc", Phase 1's accuracy) is `test_acc`: the official test split, evaluated on the
  run's selected checkpoint. Checkpoints are selected on a held-out split of the training set (the best
  held-out accuracy), never on the test split; a run without a held-out split (`method.holdout` = 0) uses
  its last epoch, and the report says so. The held-out figures (`best_val_acc`, `best_epoch`) are shown
  separately; the Methods table gives the held-out images each run actually evaluated.
- *Two sources of error.* An accuracy varies with the training seed and with the finite test set (every run
  is tested on the same images). From each run's per-image predictions (`test_predictions.npz`) the
  report forms x[s, i] (seed s, test image i; for a Δ, c_a[s, i] − c_b[s, i] on the same image; for a
  2 × 2 effect, the same contrast of four runs). The estimate is the mean over seeds and images. Its seed
  part is var_s(per-seed means) / S with S − 1 degrees of freedom, its test-image part var_i(per-image
  means) / N with N − 1 (ddof = 1; the image part does not shrink with more seeds: the seeds share the
  images). Each part gets its own t half-width and the interval's half-width is their root sum of squares:
  never narrower than the seed part alone, however few seeds (a cell reads
  `86.02 ± 0.79 % (n=3; half-widths: seeds 0.41, test set 0.68)`). Its coverage is measured on simulated
  studies (README, Statistics). A run without per-image predictions gets a test-set term bounded by
  p̄(1 − p̄) / (N − 1) (a Δ: (err_a + err_b) / (N − 1)), marked "binomial bound", and never decides a verdict.
- *A Δ* is paired by seed and computed image by image on the same test images, over the seeds both
  experiments ran (n = pairs). A seed without a partner is left out; two experiments without a common seed
  are not compared. Every accuracy verdict states on how many test images the two runs disagree.
- *A verdict* is yes, no, no difference, inconclusive, not matched or not measured. yes / no: the p-value
  that inverts the interval (Holm-adjusted for the confirmatory hypotheses of the Answers table) is below
  0.05 and the estimate lies on the claimed / the other side. no difference: an equivalence test (two
  one-sided tests) within the stated margin; a non-significant test alone is never read as no difference.
  inconclusive: n < 2, no per-image predictions for an accuracy Δ, fewer than 3 net test images per seed,
  or neither test decides. Verdicts outside the Answers table are exploratory: uncorrected, leads only.
  `*not measured*`: the analytic did not run (no verdict is attempted). Directions of the hypotheses are
  the study's declarations, never taken from the data.
- *Seeds*: a cell or Δ over other seeds than the experiment's full set names its seeds.
- *Measured once*: a teacher checkpoint's accuracy (its classifier's, or a headless teacher's k-NN accuracy)
  is one measurement: shown once, n = 1, with its Clopper–Pearson 95 % interval on the test images, never
  as a mean over the students that reuse it; a teacher trained once is compared with the plan's target by
  that interval (reached / not reached / inconclusive). "random-weight teacher (smoke)" marks a teacher
  built without pretrained weights: its numbers say nothing about the method.
- *Runs used*: one (dataset, preset) pair per report; per experiment one configuration
  (`config_signature`): the one with the most seeds (ties: the newest run); runs with another
  configuration are never averaged and are listed below; of several complete runs of one seed and
  configuration the newest `version_<n>` counts. Files that are not regular files, too large or unreadable,
  incomplete runs, runs whose accuracy is not in [0, 1] and runs whose recorded method does not validate are
  skipped with a warning; another field of the wrong kind or range is dropped with a warning.
- *Hessian trace*: Hutchinson with a fixed number of probes; over seeds the mean ± seed interval; a single
  run shows its estimate ± t(0.975, probes − 1) × its standard error (a precision: the trace is positive near
  a minimum, so it is never tested against 0). The top eigenvalue comes from Lanczos from independent starts,
  certified only when every start converged and they agree; uncertified runs read *not converged* and are
  never averaged.
- *Generalisation gap*: train − held-out accuracy, measured in eval mode on fixed unaugmented images; shown
  beside the Hessian trace, each with its own label.
- *Attention distance*: the plan's layers {LAYERS} (pixels, mean over heads). A student is "longer than
  baseline" / "shorter than baseline" when the paired Δ of its mean over those four layers is positive /
  negative by the verdict rule above, else "no clear difference"; no other threshold is used.
- *CKA contrast*: mean CKA on the depth-matched diagonal minus the mean of the other cells, each student
  against its control (the Baseline measured against the same teacher), paired by seed.
- `{PENDING}`: no usable run produced that number yet. No other number is ever filled in."""


def _draw(rows: list, title: str, path: Path) -> None:
    """The forest plot at ``path``, written to a temporary file first and renamed (never half a PNG)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        forest_plot(rows, title, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _header(agg: Aggregate, runs_dir: Any, skipped: Sequence[str]) -> list[str]:
    parts = ["# Mitigating Inductive Bias Mismatch in Heterogeneous Knowledge Distillation — results\n"]
    where = f" from `{md(str(runs_dir))}`" if runs_dir is not None else ""
    parts.append(f"Generated by `python -m kdbias.report`{where}. {source_line(agg)}\n")
    parts.append(
        "The answers come first, then the plan's tables and the details; how to read the numbers is at the end.\n"
    )
    if agg.random_teachers():
        parts.append(
            "**Random-weight teacher**: "
            + ", ".join(label(n) for n in agg.random_teachers())
            + " distilled from a teacher built without pretrained weights (a smoke run): its numbers exercise "
            "the code and say nothing about the method.\n"
        )
    if runs_dir is not None and not Path(runs_dir).is_dir():
        parts.append(f"Note: the runs directory `{runs_dir}` does not exist; every cell is pending.\n")
    if agg.ignored:
        parts.append(
            "Ignored (other dataset / preset pairs; select one with `--dataset` / `--preset`): "
            + "; ".join(f"{d} / {p} ({n} run{'s' if n != 1 else ''})" for d, p, n in agg.ignored)
            + ".\n"
        )
    if agg.others:
        parts.append(f"Runs of experiments outside the registry, not tabulated: {', '.join(agg.others)}.\n")
    left = [
        f"- {label(name)}: `{Path(run['run_dir']).name}` (seed {run['seed']}) — {why}"
        for name, items in agg.left_out.items()
        for run, why in items
    ]
    if left:
        parts.append("Runs left out (runs with another configuration are never averaged):\n\n" + "\n".join(left) + "\n")
    if skipped:
        parts.append(
            "Files skipped or fields dropped while loading:\n\n" + "\n".join(f"- {md(s)}" for s in skipped) + "\n"
        )
    return parts


def render_report(
    runs: Sequence[dict[str, Any]],
    dataset: str | None = None,
    preset: str | None = None,
    out_dir: str | Path | None = None,
    runs_dir: str | Path | None = None,
    skipped: Sequence[str] = (),
    margin: float = MARGIN,
    figure: str | Path | None = None,
    sweeps: Sequence[str] = (),
) -> str:
    """The Markdown report of ``runs`` (as returned by :func:`~kdbias.report.load.load_runs`).

    ``out_dir``: folder of the output file, for relative heatmap links (default: the current
    directory). ``runs_dir`` is quoted in the header (and noted when missing); ``skipped``:
    loading warnings to list; ``margin``: the equivalence margin of an accuracy Δ (fraction); ``figure``:
    where to draw the forest plot of the Answers (a PNG, linked from the document; ``None``: no figure);
    ``sweeps``: the sweep tables (:func:`kdbias.report.sweep.sweep_section`), placed before the findings.
    """
    agg = aggregate(runs, dataset=dataset, preset=preset)
    decided = answers(agg, margin)
    run_groups = groups_run(agg)
    parts = _header(agg, runs_dir, skipped)
    if figure is not None and agg.runs:
        rows = forest_rows(decided)
        if any(math.isfinite(r.estimate) for r in rows):
            _draw(rows, forest_title(agg), Path(figure))
            link = href({"run_dir": str(Path(figure).parent)}, Path(figure).name, out_dir)
            decided_figure = f"![Every declared comparison: Δ with its 95 % interval]({link})\n"
        else:
            decided_figure = None
    else:
        decided_figure = None
    answers_part = answers_section(
        decided, margin, [g for g in registry.GROUPS if g not in run_groups] if agg.runs else []
    )
    if decided_figure is not None:
        answers_part.insert(1, decided_figure)
    parts += answers_part
    parts += matrix_section(agg)
    parts += methods_section(agg)
    parts += phase1_section(agg)
    parts += phase2_section(agg)
    parts += ["## Phase 3: Analytics Summary\n"]
    parts += cka_section(agg, out_dir, source_line(agg))
    parts += hessian_section(agg, source_line(agg))
    parts += attention_section(agg, source_line(agg))
    parts += why_section(agg, decided)  # the study's declared parts (the shipped study's: the why rows)
    parts += list(sweeps)  # one table per swept experiment (run_all --sweep)
    parts += [
        "## Key Findings\n",
        source_line(agg) + "\n",
        "The plan's expectations on the analytics, exploratory (uncorrected; paired by seed, 95 % CI); the accuracy "
        "hypotheses are answered in the Answers table at the top.\n",
        "\n".join(f"{i}. {line}" for i, line in enumerate(findings(agg), start=1)) + "\n",
        HOW_TO_READ + "\n",
    ]
    return "\n".join(parts)
