"""exp3_kl: see `python experiments/exp3_kl.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("exp3_kl")
