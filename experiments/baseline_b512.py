"""baseline_b512: see `python experiments/baseline_b512.py --help` and kdbias.registry."""

from kdbias.run import run_row

if __name__ == "__main__":
    run_row("baseline_b512")
