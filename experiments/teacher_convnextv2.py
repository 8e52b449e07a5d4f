"""teacher_convnextv2: see `python experiments/teacher_convnextv2.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("teacher_convnextv2")
