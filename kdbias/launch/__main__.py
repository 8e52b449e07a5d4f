"""``python -m kdbias.launch``: ``run_all`` from an installed kdbias (the same command as
``python experiments/run_all.py``: :mod:`kdbias.launch.run_all`)."""

from kdbias.launch.run_all import main

if __name__ == "__main__":
    raise SystemExit(main())
