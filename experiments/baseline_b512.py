"""baseline_b512: see `python experiments/baseline_b512.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("baseline_b512")
