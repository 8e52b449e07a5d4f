"""exp3: see `python experiments/exp3.py --help` and kdbias.recipes.EXP3."""

from kdbias.recipes import EXP3

if __name__ == "__main__":
    EXP3.main()
