"""exp_random_teacher: see `python experiments/exp_random_teacher.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("exp_random_teacher")
