"""teacher_resnet18: see `python experiments/teacher_resnet18.py --help` and kdbias.registry."""

from pathlib import Path

from kdbias.cli import main

if __name__ == "__main__":
    main("teacher_resnet18", Path(__file__).resolve().parent / "configs")
