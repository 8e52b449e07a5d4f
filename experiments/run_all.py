"""Run the whole experiment matrix in dependency order, then write the report.

    python experiments/run_all.py [--smoke] [--seeds N] [--groups plan,why] [--runs_dir runs] [--out RESULTS.md]
        [--dry-run | --status] [--only NAME ...] [--launcher local|slurm] [--parallel N] [-- EXTRA ARGS]

``--help`` lists every option; the launchers live in :mod:`kdbias.launch` (:mod:`kdbias.launch.run_all`).
"""

from kdbias.launch.run_all import main

if __name__ == "__main__":
    raise SystemExit(main())
