"""exp1: see `python experiments/exp1.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("exp1")
