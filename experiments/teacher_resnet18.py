"""teacher_resnet18: see `python experiments/teacher_resnet18.py --help` and kdbias.registry."""

from kdbias.run import run_row

if __name__ == "__main__":
    run_row("teacher_resnet18")
