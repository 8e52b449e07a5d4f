"""exp1_matched: see `python experiments/exp1_matched.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("exp1_matched")
