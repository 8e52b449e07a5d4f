"""Launchers of the experiment matrix (``experiments/run_all.py``).

- :mod:`~kdbias.launch.plan`: the matrix, what each run needs (skip / resume / run /
  running elsewhere), dependencies, a time estimate;
- :mod:`~kdbias.launch.local`: runs as subprocesses, ``--parallel N`` at a time, one GPU
  set each;
- :mod:`~kdbias.launch.slurm`: one SLURM job per run through submitit, requeue that resumes;
- :mod:`~kdbias.launch.records`: job records under ``runs/_jobs/`` and ``--status``;
- :mod:`~kdbias.launch.run_all`: the command line of ``experiments/run_all.py`` (plan, launch,
  the controls left for later, the report).
"""

from kdbias.launch.plan import PlannedRun, estimate_seconds, expected_config, plan_matrix
from kdbias.launch.records import status, status_lines

__all__ = ["PlannedRun", "estimate_seconds", "expected_config", "plan_matrix", "status", "status_lines"]
