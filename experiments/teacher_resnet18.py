"""teacher_resnet18: see `python experiments/teacher_resnet18.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("teacher_resnet18")
