"""exp3_kl: see `python experiments/exp3_kl.py --help` and kdbias.registry."""

from kdbias.run import run_row

if __name__ == "__main__":
    run_row("exp3_kl")
