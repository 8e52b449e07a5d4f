"""baseline: see `python experiments/baseline.py --help` and kdbias.recipes.BASELINE."""

from kdbias.recipes import BASELINE

if __name__ == "__main__":
    BASELINE.main()
