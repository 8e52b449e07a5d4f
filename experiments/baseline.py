"""baseline: see `python experiments/baseline.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("baseline")
