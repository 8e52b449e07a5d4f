"""Run the whole experiment matrix in dependency order, then write the report.

    python experiments/run_all.py [--smoke] [--seeds N] [--runs-dir runs] [--out RESULTS.md] [--dry-run]

Order: teacher_resnet18 and teacher_convnextv2 (trained once, seed 0), then for each
seed 0..N-1: baseline, exp1, exp2, exp3. Each run is skipped when a completed run
(``summary.json`` with that experiment, seed, dataset and preset) exists, resumed with
``--resume`` when an interrupted one (``last.ckpt``, no ``summary.json``) exists, and
otherwise started. Every run is its own subprocess (``sys.executable
experiments/<name>.py ...``), so a crash or OOM in one is isolated; the first failure
stops the matrix with the command that re-runs it. The report
(:mod:`kdbias.report`) is written at the end, also after a failure (with the missing
cells pending). The decisions come from :func:`kdbias.matrix.plan_matrix`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kdbias.matrix import plan_matrix
from kdbias.report import write_report

EXPERIMENTS_DIR = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_all.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true",
                        help="every run with --smoke: digits on the CPU, tiny budgets, offline")
    parser.add_argument("--seeds", type=int, default=1, help="student runs for seeds 0..N-1 (teachers: seed 0 only)")
    parser.add_argument("--runs-dir", default="runs", help="root of <experiment>/version_<n>/ run directories")
    parser.add_argument("--out", default="RESULTS.md", help="report written at the end (relative to the current directory)")
    parser.add_argument("--dataset", default=None,
                        help="dataset passed to every script (default: digits with --smoke, else cifar10)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be skipped, resumed and run; train nothing")
    return parser


def _display_command(run, experiments_dir: Path) -> str:
    """A copy-pastable command line, the script path relative to the current directory if possible."""
    try:
        script_dir = Path(os.path.relpath(experiments_dir, Path.cwd()))
    except ValueError:
        script_dir = experiments_dir
    return run.shell(script_dir, python="python")


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed; out of memory?)" if -code == signal.SIGKILL else ""
        return f"was terminated by {name}{hint}"
    return f"exited with code {code}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = plan_matrix(args.runs_dir, seeds=args.seeds, smoke=args.smoke, dataset=args.dataset)
    todo = [run for run in plan if run.action != "skip"]
    print(f"run_all: {len(plan)} runs in the matrix, {len(plan) - len(todo)} completed, {len(todo)} to train")
    for run in plan:
        print("  " + run.describe())
    if args.dry_run:
        for run in todo:
            print("would run: " + _display_command(run, EXPERIMENTS_DIR))
        return 0

    env = dict(os.environ)
    if args.smoke:
        env.setdefault("HF_HUB_OFFLINE", "1")  # smoke runs never wait on the network
    failure: str | None = None
    trained = 0
    start = time.perf_counter()
    for index, run in enumerate(todo, start=1):
        command = run.command(EXPERIMENTS_DIR, python=sys.executable)
        print(f"\n[{index}/{len(todo)}] {run.action} {run.experiment} seed {run.seed}: {shlex.join(command)}", flush=True)
        began = time.perf_counter()
        code = subprocess.call(command, env=env)
        took = time.perf_counter() - began
        if code != 0:
            failure = f"{run.experiment} (seed {run.seed}) {_exit_reason(code)} after {took:.0f} s"
        else:
            # The run must now be complete; a script that returns 0 without a summary is a failure too.
            after = plan_matrix(args.runs_dir, seeds=args.seeds, smoke=args.smoke, dataset=args.dataset)
            status = next(p for p in after if (p.experiment, p.seed) == (run.experiment, run.seed))
            if status.action != "skip":
                failure = f"{run.experiment} (seed {run.seed}) finished without writing summary.json"
            else:
                trained += 1
                print(f"[{index}/{len(todo)}] done: {status.run_dir} ({took:.0f} s)", flush=True)
        if failure is not None:
            print(f"\nrun_all: FAILED: {failure}.\n"
                  f"  Re-run it alone with:  {_display_command(run, EXPERIMENTS_DIR)}\n"
                  f"  or re-run run_all.py with the same flags: completed runs are skipped and an interrupted "
                  f"run with a last.ckpt is resumed.", file=sys.stderr, flush=True)
            break

    out = write_report(args.runs_dir, args.out, dataset=args.dataset,
                       preset="smoke" if args.smoke else "paper")
    total = time.perf_counter() - start
    print(f"\nrun_all: {trained} of {len(todo)} runs trained in {total:.0f} s; report: {out}")
    return 1 if failure is not None else 0


if __name__ == "__main__":
    raise SystemExit(main())
