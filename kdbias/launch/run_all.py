"""``python experiments/run_all.py``: run the whole experiment matrix in dependency order, then write the report.

    python experiments/run_all.py [--smoke] [--seeds N] [--groups plan,why] [--runs_dir runs] [--out RESULTS.md]
        [--dry-run | --status] [--only NAME ...] [--sweep KEY=V1,V2 ...] [--launcher local|slurm] [--parallel N]
        [SLURM: --partition P --account A --time MIN --gpus_per_run G --nodes N --cpus_per_task C --mem_gb M]
        [-- EXTRA ARGS FOR EVERY SCRIPT]

Order (from :mod:`kdbias.registry`): the teachers once (seed 0), then for each seed
0..N-1 every student, seed-major, so a partial matrix already holds complete paired
comparisons. A run is skipped when a complete run of the same experiment, seed, dataset,
preset and configuration exists (runs of another configuration are listed, not counted),
continued with ``--resume`` when an unfinished one exists, left alone while another
process trains it (its folder is locked), and otherwise started. The launchers
(:mod:`kdbias.launch`): ``local`` (default) runs each as its own subprocess, ``--parallel N``
at a time, one GPU set each, stopping at the first failure; ``slurm`` submits one job per
run through submitit, students after their teachers (``afterok``), requeued jobs
resuming. The report (:mod:`kdbias.report`) is written at the end, also after a failure.

``--sweep model.temperature=1,2,4`` (several flags: a grid) trains every planned student once
per value and seed, each its own run folder (:mod:`kdbias.launch.sweep`); the sweep is recorded
in ``<runs_dir>/sweeps.json`` and the report shows it as a table (:mod:`kdbias.report.sweep`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from kdbias import registry, runs
from kdbias.console import emit, format_duration, quiet_lightning
from kdbias.controls import fill_controls
from kdbias.launch.exclusive import hold_runs_folder
from kdbias.launch.fork import can_fork, fork_start
from kdbias.launch.local import run_local
from kdbias.launch.plan import PlannedRun, estimate_seconds, plan_matrix
from kdbias.launch.records import describe_job, queued_job, read_record, status_lines
from kdbias.launch.slurm import SlurmSettings, job_plan, submit_matrix
from kdbias.launch.sweep import parse_sweeps, record_sweep
from kdbias.report import write_report
from kdbias.report.declarations import declarations

__all__ = ["DEFAULT_SEEDS", "build_parser", "default_parallel", "fill_matrix_controls", "main"]

DEFAULT_SEEDS = {"paper": 3, "smoke": 2}
#: Smoke runs are small CPU runs bound by one core's Python and small matmuls: two side by side,
#: one thread each, finish the matrix about 1.5x sooner on two cores than one after another.
SMOKE_PARALLEL = 2


def default_parallel(smoke: bool, launcher: str) -> int:
    """``--parallel`` when not given: ``min(2, cores)`` for local smoke runs, else 1."""
    return min(SMOKE_PARALLEL, os.cpu_count() or 1) if smoke and launcher == "local" else 1


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
        "--runs_dir", default=runs.DEFAULT_RUNS_DIR, help="root of <experiment>/version_<n>/ run directories"
    )
    parser.add_argument("--out", default="RESULTS.md", help="report written at the end")
    parser.add_argument(
        "--dataset", default=None, help="data.dataset of every run (default: digits smoke, else cifar10)"
    )
    parser.add_argument(
        "--study",
        default=None,
        metavar="FILE",
        help="a study file (YAML: rows and hypotheses, kdbias.study) instead of the shipped plan and why rows",
    )
    parser.add_argument(
        "--groups",
        default=None,
        help="comma-separated row groups of the study (default: plan; with --study: the file's own rows' groups)",
    )
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="plan only these experiments")
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="train every planned student at each value (and seed); several flags: a grid",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan (and SLURM's job plan), run nothing")
    parser.add_argument("--status", action="store_true", help="state of every run of the matrix, then exit")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local", help="where the runs train")
    parser.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="local: runs side by side, one GPU set (or cores / N threads) each (default: 1; smoke: "
        f"{SMOKE_PARALLEL} on a CPU with as many cores)",
    )
    parser.add_argument("--gpus_per_run", type=int, default=None, help="GPUs of each run (default: local 1, slurm 1)")
    slurm = parser.add_argument_group("SLURM (--launcher slurm; pip install 'kdbias[cluster]')")
    defaults = SlurmSettings()
    slurm.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    slurm.add_argument("--account", default=None, help="SLURM account (default: the user's)")
    slurm.add_argument("--time", type=int, default=defaults.time_min, help="time limit of each job, minutes")
    slurm.add_argument("--nodes", type=int, default=defaults.nodes, help="nodes of each run (DDP across them)")
    slurm.add_argument("--cpus_per_task", type=int, default=defaults.cpus_per_task, help="CPUs per task (per GPU)")
    slurm.add_argument("--mem_gb", type=int, default=defaults.mem_gb, help="memory per node, GB")
    slurm.add_argument(
        "--signal_delay_s", type=int, default=defaults.signal_delay_s, help="USR2 this long before the limit"
    )
    slurm.add_argument("--max_requeues", type=int, default=defaults.max_requeues, help="requeues per job at most")
    slurm.add_argument(
        "--executor", choices=("slurm", "local", "debug"), default="slurm", help="submitit executor (local/debug: here)"
    )
    slurm.add_argument("--wait", action="store_true", help="wait for the jobs, then write the report")
    parser.add_argument("extra", nargs="*", help="after --: arguments passed to every script")
    return parser


def _check(args: argparse.Namespace) -> None:
    for name in ("parallel", "time", "nodes", "cpus_per_task", "mem_gb", "max_requeues"):
        if getattr(args, name) < 1 and not (name == "max_requeues" and getattr(args, name) == 0):
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.gpus_per_run is not None and args.gpus_per_run < 0:
        raise ValueError(f"--gpus_per_run must be >= 0, got {args.gpus_per_run}")
    if not 0 <= args.signal_delay_s < args.time * 60:
        raise ValueError(
            f"--signal_delay_s must be >= 0 and less than --time ({args.time} min = {args.time * 60} s), got "
            f"{args.signal_delay_s}: the warning signal comes that many seconds before the time limit."
        )


def _print_warnings(caught: Sequence[warnings.WarningMessage]) -> None:
    for warning in caught:
        emit(f"run_all: warning: {warning.message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        study = registry.activate(args.study if args.study is not None else registry.DEFAULT_STUDY)
        declarations(study)  # the report's declared sections, checked before anything trains
    except registry.StudyError as error:
        emit(f"run_all.py: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    if args.groups is None:
        args.groups = ",".join(study.own_groups) if args.study is not None else registry.GROUPS[0]
    if args.status or args.dry_run:  # read only: no planner lock
        return _main(args)
    try:  # one planner per runs folder: a second run_all waits, then trains nothing twice
        with hold_runs_folder(args.runs_dir):
            return _main(args)
    except ValueError as error:  # _jobs not a folder, the lock a link
        emit(f"run_all.py: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    quiet_lightning()  # the planner parses every preset: no seed lines
    if args.parallel is None:
        args.parallel = default_parallel(args.smoke, args.launcher)
    preset = "smoke" if args.smoke else "paper"
    seeds = args.seeds if args.seeds is not None else DEFAULT_SEEDS[preset]
    resolved = args.dataset or ("digits" if args.smoke else "cifar10")
    try:
        _check(args)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", runs.RunsWarning)
            plan = plan_matrix(
                args.runs_dir,
                seeds,
                args.smoke,
                args.dataset,
                extra_args=args.extra,
                only=args.only,
                groups=args.groups,
                sweeps=parse_sweeps(args.sweep),
            )
    except ValueError as error:
        emit(f"run_all.py: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    _print_warnings(caught)
    if args.status:
        emit("\n".join(status_lines(plan, args.runs_dir)))
        return 0
    todo = [run for run in plan if run.action in ("run", "resume")]
    elsewhere = [run for run in plan if run.action == "running"]
    emit(
        f"run_all: {len(plan)} runs in the matrix, {sum(r.action == 'skip' for r in plan)} complete, "
        f"{len(elsewhere)} running elsewhere, {len(todo)} to train"
    )
    for run in plan:
        emit("  " + run.describe())
    seconds, how = estimate_seconds(plan, args.runs_dir, args.smoke)
    if seconds is not None and todo:
        side = (
            f"; about {format_duration(seconds / args.parallel)} with --parallel {args.parallel}"
            if args.parallel > 1
            else ""
        )
        emit(f"run_all: estimated {format_duration(seconds)} one after another{side} ({how})")
    elif todo:
        emit(f"run_all: no time estimate ({how})")
    queued = {run.key: job for run in elsewhere if (job := queued_job(args.runs_dir, run.slug, run.argv))}
    for run in elsewhere:
        if run.key in queued:
            where = describe_job(queued[run.key])
            emit(f"run_all: {run.experiment} seed {run.seed} is queued or training as {where}: not submitted again")
        else:
            emit(f"run_all: {run.experiment} seed {run.seed} is running elsewhere ({run.run_dir}): not resumed here")
    settings = SlurmSettings.from_args(args)
    if args.dry_run:
        if args.launcher == "slurm":
            emit("\n".join(job_plan(todo, settings)))
        else:
            for run in todo:
                emit("would run: " + shlex.join(run.command(python="python")))
        return 0
    swept = {run.experiment: dict(run.preset_values) for run in plan if run.preset_values}
    for experiment, reference in swept.items():
        record_sweep(args.runs_dir, experiment, resolved, preset, reference)
    if args.launcher == "slurm":
        return _slurm(args, plan, todo, elsewhere, settings, preset, resolved, queued)
    return _local(args, plan, todo, elsewhere, settings.gpus_per_run, preset, resolved)


def _local(args, plan, todo, elsewhere, gpus_per_run: int, preset: str, dataset: str) -> int:
    env = dict(os.environ)
    if args.smoke:
        env.setdefault("HF_HUB_OFFLINE", "1")  # smoke runs never wait on the network

    start = time.perf_counter()
    try:
        result = run_local(
            todo,
            args.runs_dir,
            parallel=args.parallel,
            env=env,
            gpus_per_run=max(1, gpus_per_run),
            unavailable=[run.key for run in elsewhere],
            start=fork_start if args.smoke and can_fork() else None,  # CPU smoke runs: no second import
        )
    except ValueError as error:
        emit(f"run_all.py: error: {error}", file=sys.stderr)
        return 2
    if result.failure is not None:
        emit(
            f"\nrun_all: FAILED: {result.failure}.\n  log: {result.failed_log}\n"
            f"  Re-run it alone with:  {shlex.join(result.failed_command)}\n"
            "  or re-run run_all.py with the same flags: complete runs are skipped and unfinished ones resumed.",
            file=sys.stderr,
        )
    for line in result.blocked:
        emit(f"run_all: not started: {line}", file=sys.stderr)
    for line in fill_matrix_controls(plan, args.runs_dir):
        emit(f"run_all: {line}")
    out = write_report(args.runs_dir, args.out, dataset=args.dataset, preset=preset)
    took = time.perf_counter() - start
    emit(f"\nrun_all: {result.trained} of {len(todo)} runs trained in {took:.0f} s; report: {out}")
    return 1 if result.failure is not None or result.blocked else 0


def study_flag(args: argparse.Namespace) -> str:
    """`` --study FILE`` for the commands run_all prints, when a study file was given."""
    return f" --study {shlex.quote(str(Path(args.study).resolve()))}" if args.study is not None else ""


def fill_matrix_controls(plan: Sequence[PlannedRun], runs_dir: str) -> list[str]:
    """The controls each complete run of ``plan`` skipped (its teachers did not exist yet),
    measured now on its checkpoints (:func:`kdbias.controls.fill_controls`)."""
    quiet_lightning()
    lines: list[str] = []
    for run in plan:
        run_dir = run.completed()
        if run_dir is not None:
            try:
                lines += fill_controls(run_dir, runs_dir)
            except runs.RunningElsewhere:
                lines.append(f"{run_dir}: locked by another process; its controls are left for later")
    return lines


def _slurm(args, plan, todo, elsewhere, settings: SlurmSettings, preset: str, dataset: str, queued=None) -> int:
    try:
        import submitit  # noqa: F401
    except ImportError:
        emit("run_all.py: error: --launcher slurm needs submitit: pip install 'kdbias[cluster]'", file=sys.stderr)
        return 2
    try:
        jobs = submit_matrix(
            todo,
            args.runs_dir,
            settings,
            unavailable=[run.key for run in elsewhere if run.key not in (queued or {})],
            wait=args.wait,
            queued={key: str(record.get("job_id")) for key, record in (queued or {}).items()},
        )
    except RuntimeError as error:  # submitit: no srun / sbatch failed
        emit(f"run_all.py: error: {' '.join(str(error).split())[:500]}", file=sys.stderr)
        return 2
    for run in todo:
        job = jobs.get(run.key)
        emit(
            f"  {run.experiment} seed {run.seed}: "
            + (f"job {job.job_id}" if job else "not submitted (needs a run that failed)")
        )
    if settings.executor == "slurm" and not args.wait:
        emit(
            f"run_all: {len(jobs)} jobs submitted; follow them with `python experiments/run_all.py --status "
            f"--runs_dir {shlex.quote(str(args.runs_dir))}{' --smoke' if args.smoke else ''}` and write the report "
            f"once they are done with `python -m kdbias.report {shlex.quote(str(args.runs_dir))} --out "
            f"{shlex.quote(str(args.out))}{study_flag(args)}`."
        )
        return 0
    for line in fill_matrix_controls(plan, args.runs_dir):
        emit(f"run_all: {line}")
    out = write_report(args.runs_dir, args.out, dataset=args.dataset, preset=preset)
    emit(f"run_all: report: {out}")
    failed = [r for r in todo if (read_record(args.runs_dir, "slurm", r.slug) or {}).get("state") != "done"]
    return 1 if failed else 0
