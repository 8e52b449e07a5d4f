"""teacher_deit: see `python experiments/teacher_deit.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("teacher_deit")
