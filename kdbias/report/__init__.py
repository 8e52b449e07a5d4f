"""Fill the research plan's tables from ``runs/``: ``python -m kdbias.report``.

Reads every complete run (``<runs_dir>/<experiment>/version_<n>/summary.json``, through
:mod:`kdbias.runs`) and writes a Markdown document: the experimental matrix, the methods as
the runs recorded them, Phase 1 (teachers), Phase 2 (distillation, paired Δs), Phase 3
(CKA against controls, Hessian, attention distance) and the key findings, each a verdict
(yes / no / inconclusive) with the numbers that decided it. A cell without data reads
``*pending*``; no number is ever invented. The rules are written into the document's
"How to read the numbers" paragraph (:data:`~kdbias.report.markdown.HOW_TO_READ`).

Modules:

- :mod:`~kdbias.report.load`: reading and checking ``summary.json`` (:func:`load_runs`), TensorBoard
  scalars (:func:`read_scalars`), per-image test predictions;
- :mod:`~kdbias.report.stats`: intervals over seeds and test images, paired differences, binomial
  intervals (pure functions, SciPy's distributions); :mod:`~kdbias.report.engine`: every verdict;
- :mod:`~kdbias.report.aggregate`: which runs are reported (:func:`aggregate`, :class:`Aggregate`);
- :mod:`~kdbias.report.findings`: the plan's expectations as verdicts (:func:`findings`);
- :mod:`~kdbias.report.cells`, :mod:`~kdbias.report.markdown`, :mod:`~kdbias.report.analytics`: the document
  (:func:`render_report`);
- :mod:`~kdbias.report.cli`: :func:`write_report` and :func:`main`.

The experiments, their labels, roles and matched controls come from the active study
(:mod:`kdbias.registry`); its declared sections and analytics expectations from
:mod:`~kdbias.report.declarations`.
"""

from __future__ import annotations

from kdbias.report.aggregate import PLAN_LAYERS, Aggregate, aggregate, controls_of, label, value_at
from kdbias.report.analytics import hessian_trace
from kdbias.report.cells import PENDING, describe_method, pct, pp
from kdbias.report.cli import build_parser, main, write_report
from kdbias.report.engine import verdict
from kdbias.report.findings import attention_label, distilled, findings
from kdbias.report.load import ReportWarning, check_summary, load_runs, read_scalars
from kdbias.report.markdown import HOW_TO_READ, render_report, source_line
from kdbias.report.stats import (
    Estimate,
    accuracy_estimate,
    binomial_interval,
    paired_accuracy_delta,
    paired_delta,
    summarize,
    t_ppf,
)

__all__ = [
    "HOW_TO_READ",
    "PENDING",
    "PLAN_LAYERS",
    "Aggregate",
    "Estimate",
    "accuracy_estimate",
    "binomial_interval",
    "paired_accuracy_delta",
    "ReportWarning",
    "aggregate",
    "attention_label",
    "build_parser",
    "check_summary",
    "controls_of",
    "describe_method",
    "distilled",
    "findings",
    "hessian_trace",
    "label",
    "load_runs",
    "main",
    "paired_delta",
    "pct",
    "pp",
    "read_scalars",
    "render_report",
    "source_line",
    "summarize",
    "t_ppf",
    "value_at",
    "verdict",
    "write_report",
]
