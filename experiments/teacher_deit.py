"""teacher_deit: see `python experiments/teacher_deit.py --help` and kdbias.registry."""

from kdbias.run import run_row

if __name__ == "__main__":
    run_row("teacher_deit")
