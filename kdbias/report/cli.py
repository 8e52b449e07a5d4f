"""``python -m kdbias.report [runs_dir] --out RESULTS.md [--dataset D] [--preset P] [--study FILE]``."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from kdbias import registry
from kdbias.console import emit
from kdbias.report.declarations import declarations
from kdbias.report.engine import MARGIN
from kdbias.report.load import ReportWarning, load_runs
from kdbias.report.markdown import render_report
from kdbias.report.sweep import read_sweeps, sweep_section
from kdbias.runs import DEFAULT_RUNS_DIR, atomic_write_text
from kdbias.study import DEFAULT_STUDY, StudyError

__all__ = ["build_parser", "main", "write_report"]


def build_parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="python -m kdbias.report",
        description="Fill the research plan's tables from completed runs (summary.json files) and write Markdown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "runs_dir", nargs="?", default=DEFAULT_RUNS_DIR, help="root of <experiment>/version_<n>/ run directories"
    )
    parser.add_argument("--out", default="RESULTS.md", help="output Markdown file")
    parser.add_argument(
        "--dataset",
        default=None,
        help="report runs on this dataset (default: the pair with the most completed experiments)",
    )
    parser.add_argument(
        "--preset", default=None, help="report runs of this preset: paper | smoke (default: as --dataset)"
    )
    parser.add_argument(
        "--study",
        default=None,
        help="the study whose rows, hypotheses and declared sections the report shows: a shipped study's name "
        f"(plan, why) or a study YAML file (default: {DEFAULT_STUDY})",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=MARGIN * 100,
        help="equivalence margin of an accuracy difference, in percentage points: 'no difference' is said only "
        "when a two one-sided tests procedure puts the difference within ±margin",
    )
    return parser


def write_report(
    runs_dir: str | Path,
    out: str | Path,
    dataset: str | None = None,
    preset: str | None = None,
    margin: float = MARGIN,
) -> Path:
    """Load the runs under ``runs_dir``, write the report to ``out`` atomically
    (:func:`kdbias.runs.atomic_write_text`) with its forest plot beside it (``comparisons.png`` for
    ``RESULTS.md``, else ``<stem>_comparisons.png``) and return ``out``.

    Every loading warning (a skipped file, dropped fields) is listed in the report and
    re-issued as a :class:`~kdbias.report.load.ReportWarning`.
    """
    out = Path(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        runs = load_runs(runs_dir)
    skipped = [str(w.message) for w in caught if issubclass(w.category, ReportWarning)]
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    figure = out.with_name("comparisons.png" if out.stem == "RESULTS" else f"{out.stem}_comparisons.png")
    sweeps = sweep_section(runs, read_sweeps(runs_dir), dataset=dataset, preset=preset)
    text = render_report(
        runs, dataset=dataset, preset=preset, out_dir=out.parent, runs_dir=runs_dir, skipped=skipped, margin=margin,
        figure=figure, sweeps=sweeps,
    )  # fmt: skip
    atomic_write_text(out, text)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: activate ``--study`` (:func:`kdbias.registry.activate`), write the report,
    print one warning line per skipped file; exit 0 (2: a bad study file or output path)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.margin < 100:
        parser.error(f"--margin must lie in (0, 100) percentage points, got {args.margin}")
    try:  # a bad study file or declaration: one line, before any run is read
        declarations(registry.activate(args.study) if args.study is not None else registry.active())
    except StudyError as error:
        emit(f"kdbias.report: error: {error}", file=sys.stderr)
        return 2
    if not Path(args.runs_dir).is_dir():
        emit(f"note: runs directory {args.runs_dir!r} does not exist; every cell will be pending", file=sys.stderr)
    out_path = Path(args.out)
    if out_path.is_dir() or (out_path.parent.exists() and not out_path.parent.is_dir()):
        what = "a folder" if out_path.is_dir() else f"under {out_path.parent}, which is a file"
        emit(f"kdbias.report: error: --out {args.out} is {what}; give the path of a Markdown file.", file=sys.stderr)
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        try:
            out = write_report(
                args.runs_dir, args.out, dataset=args.dataset, preset=args.preset, margin=args.margin / 100
            )
        except OSError as error:  # a full disk, no permission: nothing half-written (atomic writes)
            emit(f"kdbias.report: error: cannot write {args.out}: {error.strerror or error}", file=sys.stderr)
            return 2
    for w in caught:
        emit(f"warning: {w.message}", file=sys.stderr)
    emit(f"Wrote {out}")
    return 0
