"""teacher_dinov2_probe: see `python experiments/teacher_dinov2_probe.py --help` and kdbias.registry."""

from kdbias.cli import main

if __name__ == "__main__":
    main("teacher_dinov2_probe")
