"""``python -m kdbias.report``: see :mod:`kdbias.report.cli`."""

from kdbias.report.cli import main

raise SystemExit(main())
