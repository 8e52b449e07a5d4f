"""teacher_dinov2_probe: see `python experiments/teacher_dinov2_probe.py --help` and kdbias.registry."""

from kdbias.run import run_row

if __name__ == "__main__":
    run_row("teacher_dinov2_probe")
