"""exp3: see `python experiments/exp3.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("exp3")
