"""exp1_cka: see `python experiments/exp1_cka.py --help` and kdbias.registry."""

from kdbias.run import run_row

if __name__ == "__main__":
    run_row("exp1_cka")
