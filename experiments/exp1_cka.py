"""exp1_cka: see `python experiments/exp1_cka.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("exp1_cka")
