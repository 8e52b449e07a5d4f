"""exp3: see `python experiments/exp3.py --help` and kdbias.registry."""

from pathlib import Path

from kdbias.cli import main

if __name__ == "__main__":
    main("exp3", Path(__file__).resolve().parent / "configs")
