"""Run the whole experiment matrix in dependency order, then write the report.

    python experiments/run_all.py [--smoke] [--seeds N] [--groups plan,why] [--runs_dir runs] [--out RESULTS.md]
                                  [--dry-run]
                                  [-- EXTRA ARGS FOR EVERY SCRIPT]

Order (from :mod:`kdbias.registry`): the teachers once (seed 0), then for each seed
0..N-1 every student (baseline, its EXP-3-matched control, exp1, exp2, exp3), seed-major,
so a partial matrix already holds complete paired comparisons. Each run is skipped when
a complete run (same experiment, seed, dataset, preset) exists, continued with
``--resume`` when an unfinished one with a checkpoint exists, and otherwise started.
Every run is its own subprocess (``sys.executable experiments/<name>.py ...``): a crash
or OOM in one is isolated; the first failure stops the matrix with the command that
re-runs it. The report (:mod:`kdbias.report`) is written at the end, also after a failure.
``--groups`` picks the registry's row groups (default ``plan``; ``plan,why`` adds the rows
beyond the plan, :func:`kdbias.registry.select`).
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
from dataclasses import dataclass
from pathlib import Path

from kdbias import registry, runs
from kdbias.report import write_report

EXPERIMENTS_DIR = Path(__file__).resolve().parent
DEFAULT_SEEDS = {"paper": 3, "smoke": 2}


@dataclass(frozen=True)
class PlannedRun:
    """One run of the matrix and what to do about it: ``"skip"`` (``run_dir`` = the complete
    run), ``"resume"`` (``run_dir`` = the unfinished run) or ``"run"``; ``argv`` are the
    arguments of ``experiments/<experiment>.py``."""

    experiment: str
    seed: int
    action: str
    run_dir: Path | None
    argv: tuple[str, ...]

    def command(self, experiments_dir: str | Path = EXPERIMENTS_DIR, python: str = sys.executable) -> list[str]:
        return [python, str(Path(experiments_dir) / f"{self.experiment}.py"), *self.argv]

    def describe(self) -> str:
        where = f" ({self.run_dir})" if self.run_dir is not None else ""
        return f"{self.action:<6} {self.experiment} seed {self.seed}{where}"


def plan_matrix(
    runs_dir: str | Path,
    seeds: int,
    smoke: bool = False,
    dataset: str | None = None,
    teacher_seed: int = 0,
    extra_args: Sequence[str] = (),
    groups: str | Sequence[str] = "plan",
) -> list[PlannedRun]:
    """The matrix in dependency order with the action each run needs (a pure function of the
    files under ``runs_dir``)."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    preset = "smoke" if smoke else "paper"
    resolved = dataset or ("digits" if smoke else "cifar10")
    teachers, students = registry.select(groups)
    order = [(name, teacher_seed) for name in teachers]
    order += [(name, seed) for seed in range(seeds) for name in students]
    plan = []
    for name, seed in order:
        argv = ["--smoke"] if smoke else []
        argv += ["--seed_everything", str(seed), "--runs_dir", str(runs_dir)]
        if dataset is not None:
            argv += ["--data.dataset", dataset]
        argv += list(extra_args)
        done = runs.latest_complete_run(runs_dir, name, seed, resolved, preset)
        if done is not None:
            plan.append(PlannedRun(name, seed, "skip", done, tuple(argv)))
            continue
        unfinished = runs.resumable_run(runs_dir, name, seed, resolved, preset)
        if unfinished is not None:
            plan.append(PlannedRun(name, seed, "resume", unfinished, (*argv, "--resume")))
        else:
            plan.append(PlannedRun(name, seed, "run", None, tuple(argv)))
    return plan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_all.py",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true", help="every run with --smoke: digits on the CPU, offline")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"students for seeds 0..N-1 (default: {DEFAULT_SEEDS['paper']} paper, "
        f"{DEFAULT_SEEDS['smoke']} smoke; teachers: seed 0 only)",
    )
    parser.add_argument(
        "--groups", default="plan", help=f"comma-separated row groups of the registry ({', '.join(registry.GROUPS)})"
    )
    parser.add_argument("--runs_dir", default="runs", help="root of <experiment>/version_<n>/ run directories")
    parser.add_argument("--out", default="RESULTS.md", help="report written at the end")
    parser.add_argument(
        "--dataset", default=None, help="data.dataset of every run (default: digits smoke, else cifar10)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be skipped, resumed and run")
    parser.add_argument("extra", nargs="*", help="after --: arguments passed to every script")
    return parser


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was terminated by {name}" + (" (killed; out of memory?)" if -code == signal.SIGKILL else "")
    return f"exited with code {code}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = "smoke" if args.smoke else "paper"
    seeds = args.seeds if args.seeds is not None else DEFAULT_SEEDS[preset]
    try:
        plan = plan_matrix(args.runs_dir, seeds, args.smoke, args.dataset, extra_args=args.extra, groups=args.groups)
    except ValueError as error:
        print(f"run_all.py: error: {error}", file=sys.stderr)
        return 2
    todo = [run for run in plan if run.action != "skip"]
    print(f"run_all: {len(plan)} runs in the matrix, {len(plan) - len(todo)} complete, {len(todo)} to train")
    for run in plan:
        print("  " + run.describe())
    if args.dry_run:
        for run in todo:
            print("would run: " + shlex.join(run.command(python="python")))
        return 0
    env = dict(os.environ)
    if args.smoke:
        env.setdefault("HF_HUB_OFFLINE", "1")  # smoke runs never wait on the network
    failure, trained, start = None, 0, time.perf_counter()
    for index, run in enumerate(todo, start=1):
        command = run.command()
        print(
            f"\n[{index}/{len(todo)}] {run.action} {run.experiment} seed {run.seed}: {shlex.join(command)}", flush=True
        )
        began = time.perf_counter()
        code = subprocess.call(command, env=env)
        took = time.perf_counter() - began
        resolved = args.dataset or ("digits" if args.smoke else "cifar10")
        done = runs.latest_complete_run(args.runs_dir, run.experiment, run.seed, resolved, preset)
        if code != 0:
            failure = f"{run.experiment} (seed {run.seed}) {_exit_reason(code)} after {took:.0f} s"
        elif done is None:
            failure = f"{run.experiment} (seed {run.seed}) finished without a complete summary.json"
        else:
            trained += 1
            print(f"[{index}/{len(todo)}] done: {done} ({took:.0f} s)", flush=True)
        if failure is not None:
            print(
                f"\nrun_all: FAILED: {failure}.\n  Re-run it alone with:  {shlex.join(run.command(python='python'))}\n"
                "  or re-run run_all.py with the same flags: complete runs are skipped and unfinished ones resumed.",
                file=sys.stderr,
                flush=True,
            )
            break
    out = write_report(args.runs_dir, args.out, dataset=args.dataset, preset=preset)
    print(f"\nrun_all: {trained} of {len(todo)} runs trained in {time.perf_counter() - start:.0f} s; report: {out}")
    return 1 if failure is not None else 0


if __name__ == "__main__":
    raise SystemExit(main())
