"""The SLURM launcher (``run_all --launcher slurm``, extra ``kdbias[cluster]``): one job per
run through submitit's ``AutoExecutor``.

- Each job calls :class:`RunJob`: :func:`kdbias.run.main` (``python -m kdbias.run``)
  with the run's arguments, i.e. the same entry point and configuration as a local run, so
  its run folder, summary and report are the same.
- A job asks for ``gpus_per_run`` GPUs on each of ``nodes`` nodes with one task per GPU
  (``--ntasks-per-node`` = GPUs, ``--gres gpu:G``); submitit starts the tasks with
  ``srun``, and Lightning's ``SLURMEnvironment`` turns them into one DDP run
  (``--trainer.devices G --trainer.num_nodes N`` are added). Only global rank 0 claims and
  locks the run folder.
- A student's job depends on its teachers' jobs (``--dependency afterok:<ids>``); seeds and
  independent experiments run side by side. With the ``local``/``debug`` executors (no
  cluster) dependents are submitted once the jobs they need have succeeded.
- Requeue: submitit's. SLURM sends ``USR2`` ``signal_delay_s`` before the time limit (and
  on pre-emption); submitit calls :meth:`RunJob.checkpoint`, which resubmits the same run
  with ``--resume``: the requeued job continues the same run folder from its
  ``last.ckpt`` through kdbias's resume (configuration check, weights-only load). Lightning's
  own ``SLURMEnvironment(auto_requeue=True)`` listens to ``USR1``, which these jobs never
  receive, so exactly one mechanism acts. submitit's was chosen because it works the same
  under its local executor (tested without a cluster), keeps the job's records with the
  others, and goes through the resume path that checks the configuration, where
  Lightning's would restore its own ``hpc_ckpt_*.ckpt`` beside kdbias's checkpoints.
- Records: submitit's folder ``runs/_jobs/slurm/submitit/`` (pickles, ``<id>_0_log.out``)
  and one ``runs/_jobs/slurm/<experiment>-seed<k>.json`` per run (job id, log).
"""

from __future__ import annotations

import shlex
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbias import registry
from kdbias.launch.records import jobs_dir, write_record

__all__ = ["RunJob", "SlurmSettings", "job_argv", "job_plan", "submit_matrix"]


@dataclass(frozen=True)
class SlurmSettings:
    """Resources of every job (flags of ``run_all --launcher slurm``)."""

    partition: str | None = None
    account: str | None = None
    time_min: int = 240
    gpus_per_run: int = 1
    nodes: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 64
    signal_delay_s: int = 120
    max_requeues: int = 5
    executor: str = "slurm"  # submitit cluster: slurm, or local / debug to try the plan here

    @classmethod
    def from_args(cls, args: Any) -> SlurmSettings:
        """The settings of ``run_all``'s parsed flags (``--gpus_per_run`` not given: 1)."""
        return cls(
            partition=args.partition,
            account=args.account,
            time_min=args.time,
            gpus_per_run=1 if args.gpus_per_run is None else args.gpus_per_run,
            nodes=args.nodes,
            cpus_per_task=args.cpus_per_task,
            mem_gb=args.mem_gb,
            signal_delay_s=args.signal_delay_s,
            max_requeues=args.max_requeues,
            executor=args.executor,
        )

    def parameters(self, name: str, dependency: str | None) -> dict[str, Any]:
        """``AutoExecutor.update_parameters`` arguments of one job."""
        tasks = max(1, self.gpus_per_run)
        params: dict[str, Any] = dict(
            name=name,
            timeout_min=self.time_min,
            nodes=self.nodes,
            tasks_per_node=tasks,
            cpus_per_task=self.cpus_per_task,
            mem_gb=self.mem_gb,
            slurm_signal_delay_s=self.signal_delay_s,
        )
        if self.gpus_per_run > 0:
            params["slurm_gres"] = f"gpu:{self.gpus_per_run}"
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.account:
            params["slurm_account"] = self.account
        if dependency:
            params["slurm_dependency"] = dependency
        return params


def job_argv(run: Any, settings: SlurmSettings) -> list[str]:
    """The run's arguments plus the DDP layout of its job."""
    argv = list(run.argv)
    if settings.gpus_per_run > 0:
        argv += ["--trainer.accelerator", "gpu", "--trainer.devices", str(settings.gpus_per_run)]
        argv += ["--trainer.num_nodes", str(settings.nodes)]
    return argv


def job_command(run: Any, settings: SlurmSettings) -> str:
    """The shell form of what a job runs (``python -m kdbias.run ...``), for records and ``--dry-run``."""
    return shlex.join(["python", "-m", "kdbias.run", *registry.study_args(), run.experiment, *job_argv(run, settings)])


class RunJob:
    """The callable of one job: ``python -m kdbias.run [--study FILE] <experiment> ARGV`` in this
    process (``study``: the ``--study`` arguments of the launcher's study, :func:`study_args`)."""

    def __init__(self, experiment: str, argv: Sequence[str], study: Sequence[str] = ()) -> None:
        self.experiment, self.argv, self.study = experiment, list(argv), list(study)

    def __call__(self) -> str | None:
        from kdbias.run import main

        run_dir = main([*self.study, self.experiment, *self.argv])
        return None if run_dir is None else str(run_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on the time-limit / pre-emption signal: the same run again, with
        ``--resume`` (it continues from ``last.ckpt``, written after every epoch)."""
        import submitit

        argv = self.argv if "--resume" in self.argv else [*self.argv, "--resume"]
        return submitit.helpers.DelayedSubmission(RunJob(self.experiment, argv, self.study))


def job_plan(todo: Sequence[Any], settings: SlurmSettings) -> list[str]:
    """One line per job: name, resources, dependencies, command (``--dry-run``)."""
    keys = {run.key for run in todo}
    lines = []
    gpus = f"{settings.nodes} node(s) x {settings.gpus_per_run} GPU(s) (one task per GPU)"
    head = f"{gpus}, {settings.cpus_per_task} CPUs/task, {settings.mem_gb} GB, {settings.time_min} min"
    where = ", ".join(f"{k} {v}" for k, v in (("partition", settings.partition), ("account", settings.account)) if v)
    lines.append(f"SLURM jobs ({settings.executor}): {head}{'; ' + where if where else ''}; requeue on USR2")
    index = {run.key: i for i, run in enumerate(todo, 1)}
    for run in todo:
        needs = [f"job {index[n]}" for n in run.needs if n in keys]
        after = f", after {' and '.join(needs)} succeed (afterok)" if needs else ""
        command = job_command(run, settings)
        lines.append(f"  job {index[run.key]}: kdbias-{run.slug} ({run.action}{after}): {command}")
    return lines


def submit_matrix(
    todo: Sequence[Any],
    runs_dir: str | Path,
    settings: SlurmSettings,
    unavailable: Sequence[str] = (),
    wait: bool = False,
    queued: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Submit one job per run (dependencies as in the module docstring); return ``{key: job}``.

    ``unavailable``: keys of runs that will not complete here (their dependents are blocked).
    ``queued``: ``{key: SLURM job id}`` of planned runs whose jobs an earlier run_all submitted
    and that are still queued or training (not submitted again): on a cluster their dependents
    wait for those jobs (``afterok``); with the local/debug executors they are blocked.
    ``wait``: block until every job has ended (always for the local/debug executors, which
    have no SLURM dependencies).
    """
    import submitit

    folder = jobs_dir(runs_dir, "slurm") / "submitit"
    executor = submitit.AutoExecutor(
        folder=folder / "%j",
        cluster=settings.executor,
        slurm_max_num_timeout=settings.max_requeues,
        local_max_num_timeout=settings.max_requeues,
    )
    jobs: dict[str, Any] = {}
    cluster = settings.executor == "slurm"
    earlier = dict(queued or {}) if cluster else {}
    bad = set(unavailable) | (set(queued or {}) - set(earlier))
    for run in todo:
        needs = [n for n in run.needs if n in jobs or n in bad or n in earlier]
        if any(n in bad for n in needs):
            bad.add(run.key)
            write_record(runs_dir, "slurm", run.slug, state="blocked", reason=f"needs {', '.join(needs)}")
            continue
        dependency = None
        if cluster and needs:
            dependency = "afterok:" + ":".join(str(jobs[n].job_id) if n in jobs else earlier[n] for n in needs)
        elif needs:
            for need in needs:  # no SLURM here: wait for what it needs, then submit
                if not _succeeded(jobs[need]):
                    bad.update({need, run.key})
            if run.key in bad:
                write_record(runs_dir, "slurm", run.slug, state="blocked", reason=f"needs {', '.join(needs)}")
                continue
        executor.update_parameters(**settings.parameters(f"kdbias-{run.slug}", dependency))
        job = executor.submit(RunJob(run.experiment, job_argv(run, settings), registry.study_args()))
        jobs[run.key] = job
        log = Path(str(job.paths.stdout)).as_posix()
        write_record(
            runs_dir,
            "slurm",
            run.slug,
            state="submitted",
            job_id=str(job.job_id),
            folder=str(folder / str(job.job_id)),
            log=log,
            dependency=dependency or "",
            executor=settings.executor,
            host=socket.gethostname(),
            argv=list(run.argv),
            command=job_command(run, settings),
            submitted=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
    if wait or not cluster:
        for run in todo:
            if run.key in jobs:
                ok = _succeeded(jobs[run.key])
                write_record(
                    runs_dir, "slurm", run.slug, state="done" if ok else "failed", reason="" if ok else "job failed"
                )
    return jobs


def _succeeded(job: Any) -> bool:
    try:
        job.result()
    except Exception:
        return False
    return True
