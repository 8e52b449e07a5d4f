"""``python -m kdbias.report [runs_dir] --out RESULTS.md [--dataset D] [--preset P]``."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from kdbias.console import emit
from kdbias.report.load import ReportWarning, load_runs
from kdbias.report.markdown import render_report
from kdbias.runs import DEFAULT_RUNS_DIR, atomic_write_text

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
    return parser


def write_report(runs_dir: str | Path, out: str | Path, dataset: str | None = None, preset: str | None = None) -> Path:
    """Load the runs under ``runs_dir``, write the report to ``out`` atomically
    (:func:`kdbias.runs.atomic_write_text`) and return ``out``.

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
    text = render_report(runs, dataset=dataset, preset=preset, out_dir=out.parent, runs_dir=runs_dir, skipped=skipped)
    atomic_write_text(out, text)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: write the report, print one warning line per skipped file; exit 0."""
    args = build_parser().parse_args(argv)
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
            out = write_report(args.runs_dir, args.out, dataset=args.dataset, preset=args.preset)
        except OSError as error:  # a full disk, no permission: nothing half-written (atomic writes)
            emit(f"kdbias.report: error: cannot write {args.out}: {error.strerror or error}", file=sys.stderr)
            return 2
    for w in caught:
        emit(f"warning: {w.message}", file=sys.stderr)
    emit(f"Wrote {out}")
    return 0
