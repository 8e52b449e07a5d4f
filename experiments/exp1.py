"""exp1: see `python experiments/exp1.py --help` and kdbias.registry."""

from kdbias.run import run_row

if __name__ == "__main__":
    run_row("exp1")
