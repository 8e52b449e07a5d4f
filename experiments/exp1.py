"""exp1: see `python experiments/exp1.py --help` and kdbias.recipes.EXP1."""

from kdbias.recipes import EXP1

if __name__ == "__main__":
    EXP1.main()
