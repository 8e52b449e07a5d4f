"""exp2: see `python experiments/exp2.py --help` and kdbias.recipes.EXP2."""

from kdbias.recipes import EXP2

if __name__ == "__main__":
    EXP2.main()
