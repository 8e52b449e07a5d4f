"""The matrix as a list of runs with what each needs: skip, resume, run, or nothing while it
is running elsewhere; dependencies from :mod:`kdbias.registry`; a time estimate.

A run counts as done only when a complete run of the same experiment, seed, dataset,
preset *and configuration* exists (:func:`kdbias.runs.config_differences`: seeds and
run-local keys aside). The configuration a run would get is parsed from the preset and
the arguments exactly as ``python -m kdbias.run <name>`` parses them (nothing is built). Runs
of another configuration are listed, never skipped-as-done.

Sweeps (``sweeps``, :mod:`kdbias.launch.sweep`): every student run is planned once per grid
point, with the point's overrides; the preset's own values are planned too when no point
has them (the reference the report's Δ is paired against).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kdbias import registry, runs
from kdbias.cli import KDBiasCLI
from kdbias.launch.records import queued_job
from kdbias.launch.sweep import Point, point_args, point_slug, sweep_grid

__all__ = ["PlannedRun", "estimate_seconds", "expected_config", "plan_matrix"]

#: Typical seconds of one ``--smoke`` run on a 2-core CPU (start-up and test included): the
#: estimate when no run of the preset has finished yet.
SMOKE_RUN_S = 36.0  # measured 2026-12-03: 21-50 s per plan run (mean 36 s) with two side by side


@dataclass(frozen=True)
class PlannedRun:
    """One run of the matrix and what to do about it.

    ``run``: the run's identity (runs folder, experiment, dataset, preset, seed) and, where one
    exists, its folder (:class:`kdbias.runs.Run`; ``experiment``, ``seed`` and ``run_dir`` read it).
    ``action``: ``"skip"`` (``run_dir`` = the complete run), ``"resume"`` (``run_dir`` = the
    unfinished run), ``"running"`` (``run_dir`` is locked by a live process elsewhere, or the
    run's SLURM job is queued or training, :func:`kdbias.launch.records.queued_job`: not
    touched) or ``"run"`` (no folder yet). ``argv``: arguments of ``python -m kdbias.run <experiment>``.
    ``needs``: keys (``experiment:seed``) of the planned runs it depends on. ``others``:
    runs of the same experiment and seed with another configuration, ``(run_dir, {key:
    (theirs, expected)})``. ``sweep``: the swept ``(key, value)`` overrides of this run (``()``:
    none, or the preset's values); ``preset_values``: the preset's value of each swept key.
    """

    run: runs.Run
    action: str
    argv: tuple[str, ...]
    needs: tuple[str, ...] = ()
    others: tuple[tuple[Path, dict[str, tuple[Any, Any]]], ...] = field(default=(), compare=False)
    config: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    sweep: Point = ()
    preset_values: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    @property
    def experiment(self) -> str:
        return self.run.experiment

    @property
    def seed(self) -> int:
        assert self.run.seed is not None  # every planned run has its seed
        return self.run.seed

    @property
    def run_dir(self) -> Path | None:
        return self.run.dir

    def completed(self) -> Path | None:
        """The newest complete run folder of this run's identity and configuration (``None``
        while there is none): what a launcher checks once the run's process has ended."""
        r = self.run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", runs.RunsWarning)  # the plan has reported them
            return runs.latest_complete_run(r.runs_dir, r.experiment, r.seed, r.dataset, r.preset, config=self.config)

    @property
    def key(self) -> str:
        point = ",".join(f"{k}={v}" for k, v in self.sweep)
        return f"{self.experiment}:{self.seed}" + (f"[{point}]" if point else "")

    @property
    def slug(self) -> str:
        """File-name form of the run: ``<experiment>-seed<k>`` (swept: ``-temperature1`` added)."""
        tail = point_slug(self.sweep)
        return f"{self.experiment}-seed{self.seed}" + (f"-{tail}" if tail else "")

    def command(self, python: str = sys.executable) -> list[str]:
        """``python -m kdbias.run [--study FILE] <experiment> ARGV``: the run, from any folder."""
        return [python, "-m", "kdbias.run", *registry.study_args(), self.experiment, *self.argv]

    def describe(self) -> str:
        where = f" ({self.run_dir})" if self.run_dir is not None else ""
        state = "running elsewhere" if self.action == "running" else self.action
        point = "".join(f" {k}={v}" for k, v in self.sweep)
        if self.preset_values and not self.sweep:
            point = (
                " (the preset's " + ", ".join(f"{k}={v}" for k, v in self.preset_values) + ": the sweep's reference)"
            )
        lines = [f"{state:<6} {self.experiment} seed {self.seed}{point}{where}"]
        for run_dir, diff in self.others:
            listed = "; ".join(f"{k}: {a!r} (preset {b!r})" for k, (a, b) in list(diff.items())[:4])
            more = f"; +{len(diff) - 4} more" if len(diff) > 4 else ""
            lines.append(f"         other configuration, not counted: {run_dir}: {listed}{more}")
        return "\n  ".join(lines)


def expected_config(experiment: str, argv: Sequence[str]) -> dict[str, Any]:
    """The resolved configuration ``python -m kdbias.run <experiment> ARGV`` would run with, parsed
    by the experiment's own command line (nothing instantiated, no teacher resolved).
    ``ValueError`` with the parser's message when the arguments are refused."""
    import contextlib
    import io

    import yaml

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cli = KDBiasCLI(registry.get(experiment), list(argv), parse_only=True)
            text = cli.parser.dump(cli.config, skip_none=False)
    except SystemExit:
        raise ValueError(f"{experiment}.py refuses the arguments: {errors.getvalue().strip()}") from None
    return yaml.safe_load(text) or {}


def _needs(name: str, seed: int, keys: set[str], teacher_seed: int) -> tuple[str, ...]:
    spec = registry.get(name)
    wanted = {*spec.depends_on, *([spec.teacher] if spec.teacher else [])}
    out = []
    for other in sorted(wanted):
        other_seed = teacher_seed if registry.get(other).role == "teacher" else seed
        if f"{other}:{other_seed}" in keys:
            out.append(f"{other}:{other_seed}")
    return tuple(out)


def _with_teacher(config: dict[str, Any], run: runs.Run) -> dict[str, Any]:
    """``config`` with ``model.teacher: auto`` resolved as ``run`` would resolve it now
    (:func:`kdbias.runs.resolve_teacher`)."""
    spec = registry.get(run.experiment)
    model = config.get("model") or {}
    if spec.teacher is None or model.get("teacher") not in (None, "auto"):
        return config
    try:
        teacher = str(runs.resolve_teacher(run.runs_dir, spec, str(run.dataset), str(run.preset)))
    except FileNotFoundError:
        return config
    return {**config, "model": {**model, "teacher": teacher}}


def plan_matrix(
    runs_dir: str | Path,
    seeds: int,
    smoke: bool = False,
    dataset: str | None = None,
    teacher_seed: int = 0,
    extra_args: Sequence[str] = (),
    only: Sequence[str] | None = None,
    match_config: bool = True,
    groups: str | Sequence[str] = "plan",
    sweeps: Sequence[tuple[str, Sequence[str]]] = (),
) -> list[PlannedRun]:
    """The matrix in dependency order (teachers once, then every student seed-major) with the
    action each run needs; a function of the files under ``runs_dir`` (and of SLURM's word on
    the jobs its records name: a run whose job is queued or training is ``"running"``).

    ``groups``: the registry's row groups (``"plan"``, ``"plan,why"``; :func:`kdbias.registry.select`,
    which adds the rows they depend on). ``only``: experiment names to plan among them
    (default: all). ``match_config``: compare configurations (off: seed, dataset and preset only).
    ``sweeps``: ``[(key, [values])]`` (:func:`kdbias.launch.sweep.parse_sweeps`): students once per
    grid point (module docstring).
    """
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    teachers, students = registry.select(groups)
    names = [*teachers, *students] if not only else list(only)
    for name in names:
        registry.get(name)  # ValueError naming the valid ones
    preset = "smoke" if smoke else "paper"
    resolved = dataset or ("digits" if smoke else "cifar10")
    runs_dir = Path(runs_dir)
    if only:  # named rows of any group, each with its role
        teachers = tuple(n for n in registry.ALL_EXPERIMENTS if n in names and registry.get(n).role == "teacher")
        students = tuple(n for n in registry.ALL_EXPERIMENTS if n in names and registry.get(n).role == "student")
    if sweeps and not students:
        raise ValueError("--sweep applies to student rows; name one with --only (teachers are trained once)")
    base = ["--smoke"] if smoke else []
    base += ["--data.dataset", dataset] if dataset is not None else []
    points = {name: _points(name, [*base, *extra_args], sweeps) for name in students}
    order: list[tuple[str, int, Point]] = [(n, teacher_seed, ()) for n in teachers]
    order += [(n, seed, point) for seed in range(seeds) for n in students for point in points[n][0]]
    keys = {f"{n}:{s}" for n, s, _ in order}
    configs: dict[tuple[str, Point], dict[str, Any]] = {}
    plan = []
    for name, seed, point in order:
        argv = ["--smoke"] if smoke else []
        argv += ["--seed_everything", str(seed), "--runs_dir", str(runs_dir)]
        if dataset is not None:
            argv += ["--data.dataset", dataset]
        argv += [*extra_args, *point_args(point)]
        config = None
        identity = runs.Run(runs_dir, name, resolved, preset, seed)
        if match_config or point:
            if (name, point) not in configs:
                configs[name, point] = expected_config(name, [a for a in argv if a != "--resume"])
            config = _with_teacher({**configs[name, point], "seed_everything": seed}, identity)
        run = _decide(identity, config, argv, _needs(name, seed, keys, teacher_seed))
        if sweeps and name in points:
            swept = {k for k, _ in sweeps}
            others = tuple(o for o in run.others if not set(o[1]) <= swept)  # the sweep's other points: planned
            run = replace(run, sweep=point, preset_values=points[name][1], others=others)
        if run.action in ("run", "resume") and queued_job(runs_dir, run.slug, run.argv) is not None:
            run = replace(run, action="running")  # its SLURM job is queued or training: never submitted twice
        plan.append(run)
    return plan


def _points(
    name: str, argv: list[str], sweeps: Sequence[tuple[str, Sequence[str]]]
) -> tuple[list[Point], tuple[tuple[str, Any], ...]]:
    """``(points, preset_values)`` of a student: the grid with the point of the preset's values
    last (``()``, the preset's run, added when no grid point has them), so that within a seed
    the preset's run is the newest; ``([()], ())`` without sweeps."""
    if not sweeps:
        return [()], ()
    preset = expected_config(name, argv)
    reference = tuple((key, runs.config_value(preset, key)) for key, _ in sweeps)
    grid = sweep_grid(sweeps)
    for point in grid:
        config = expected_config(name, [*argv, *point_args(point)])
        if all(runs.config_value(config, key) == value for key, value in reference):
            return [p for p in grid if p != point] + [point], reference
    return [*grid, ()], reference


def _decide(run: runs.Run, config: dict[str, Any] | None, argv: list[str], needs: tuple[str, ...]) -> PlannedRun:
    others, live, done, unfinished = [], None, None, None
    for run_dir, saved, summary in runs.matching_runs(run.runs_dir, run.experiment, run.seed, run.dataset, run.preset):
        diff = runs.config_differences(saved, config) if config is not None else {}
        if diff:
            others.append((run_dir, diff))
        elif runs.is_running(run_dir):
            live = live or run_dir
        elif runs.is_complete(summary):
            done = done or run_dir
        elif runs.has_checkpoint(run_dir):
            unfinished = unfinished or run_dir
    common = dict(needs=needs, others=tuple(others), config=config)
    if done is not None:
        return PlannedRun(run.at(done), "skip", tuple(argv), **common)
    if live is not None:
        return PlannedRun(run.at(live), "running", tuple(argv), **common)
    if unfinished is not None:
        return PlannedRun(run.at(unfinished), "resume", (*argv, "--resume"), **common)
    return PlannedRun(run, "run", tuple(argv), **common)


def _epochs(config: dict[str, Any] | None, summary: dict[str, Any]) -> float:
    value = runs.config_value(config or {}, "trainer.max_epochs")
    return float(value) if isinstance(value, (int, float)) and value > 0 else float(summary.get("epochs") or 1)


def estimate_seconds(plan: Sequence[PlannedRun], runs_dir: str | Path, smoke: bool) -> tuple[float | None, str]:
    """``(seconds, how)``: the time the runs still to train take one after another.

    Per run: the wall time per epoch of finished runs of the same experiment (summary
    ``train_time_s`` / trained epochs) times its epochs; an experiment with no finished run
    takes the mean per-epoch time of the others; with none at all, the smoke preset's
    typical run (:data:`SMOKE_RUN_S`) and no estimate for the paper preset.
    """
    todo = [run for run in plan if run.action in ("run", "resume")]
    per_epoch: dict[str, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", runs.RunsWarning)  # the plan has reported them
        found = {name: runs.matching_runs(runs_dir, name) for name in sorted({run.experiment for run in plan})}
    for name, matched in found.items():
        for run_dir, _, summary in matched:
            if runs.is_complete(summary) and isinstance(summary.get("train_time_s"), (int, float)):
                epochs = runs.config_value(runs.read_config(run_dir), "trainer.max_epochs") or 1
                per_epoch.setdefault(name, []).append(float(summary["train_time_s"]) / max(1, epochs))
    if not todo:
        return 0.0, "nothing to train"
    if not per_epoch:
        if smoke:
            return SMOKE_RUN_S * len(todo), f"no finished run yet: {SMOKE_RUN_S:.0f} s per smoke run on a 2-core CPU"
        return None, "no finished run of this preset yet to estimate from"
    pooled = [v for values in per_epoch.values() for v in values]
    fallback = sum(pooled) / len(pooled)
    total = 0.0
    for run in todo:
        values = per_epoch.get(run.experiment)
        rate = sum(values) / len(values) if values else fallback
        total += rate * _epochs(run.config, {})
    measured = ", ".join(sorted(per_epoch))
    return total, f"from the finished runs' time per epoch ({measured}; others: their mean)"
