"""exp_random_teacher: see `python experiments/exp_random_teacher.py --help` and kdbias.registry."""

from kdbias.run import run_row

if __name__ == "__main__":
    run_row("exp_random_teacher")
