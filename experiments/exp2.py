"""exp2: see `python experiments/exp2.py --help` and kdbias.registry."""

from kdbias.run import run_row

if __name__ == "__main__":
    run_row("exp2")
