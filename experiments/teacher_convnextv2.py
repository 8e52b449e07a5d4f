"""teacher_convnextv2: see `python experiments/teacher_convnextv2.py --help` and kdbias.registry."""

from kdbias.run import run_row

if __name__ == "__main__":
    run_row("teacher_convnextv2")
