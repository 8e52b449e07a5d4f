"""baseline: see `python experiments/baseline.py --help` and kdbias.registry."""

from pathlib import Path

from kdbias.cli import main

if __name__ == "__main__":
    main("baseline", Path(__file__).resolve().parent / "configs")
