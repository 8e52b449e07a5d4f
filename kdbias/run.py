"""``python -m kdbias.run [--study FILE] NAME [ARGS...]``: train one row of a study, from any folder.

``NAME`` is a row of the study (default: the shipped plan and why rows, :mod:`kdbias.registry`);
``ARGS`` are the row's command line (``--smoke``, ``--resume``, ``--model.*`` ...: see
``python -m kdbias.run NAME --help``). ``experiments/<name>.py`` is the same command for a
shipped row. ``python -m kdbias.run teacher --name NAME ARGS`` trains a teacher of your own
(:func:`kdbias.cli.own_teacher`) under ``runs/NAME/``; students name it ``--model.teacher run:NAME``.
A bad study file or an unknown row is one line and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["OWN_TEACHER", "main", "split_study"]

#: The pseudo-row of a teacher of your own (``--name`` required).
OWN_TEACHER = "teacher"
_USAGE = "usage: python -m kdbias.run [--study FILE] NAME [ARGS...]  (NAME: a row of the study, or teacher --name NAME)"


def split_study(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """``(study, rest)``: a leading ``--study FILE`` (or ``--study=FILE``) taken out of ``argv``."""
    args = list(argv)
    if args and args[0].startswith("--study="):
        return args[0].partition("=")[2], args[1:]
    if args and args[0] == "--study":
        if len(args) < 2:
            raise ValueError("--study needs a study file (a YAML file, or a shipped study: plan, why)")
        return args[1], args[2:]
    return None, args


def _own_teacher_name(args: list[str]) -> str:
    """The ``--name`` of a teacher of your own, taken out of ``args``."""
    given = [k for k, a in enumerate(args) if a == "--name" or a.startswith("--name=")]
    if len(given) != 1:
        raise ValueError("give the teacher run's name once: --name NAME (runs/NAME/)")
    k = given[0]
    name = args[k].partition("=")[2] if "=" in args[k] else (args[k + 1] if k + 1 < len(args) else "")
    del args[k : k + (1 if "=" in args[k] else 2)]
    return name


def main(argv: Sequence[str] | None = None) -> Path | None:
    """Activate the study, then run row ``NAME`` (:func:`kdbias.cli.main`); returns its run folder."""
    from kdbias import registry
    from kdbias.cli import main as run_row
    from kdbias.cli import own_teacher
    from kdbias.console import input_error

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        study, args = split_study(args)
        if study is not None:
            registry.activate(study)
        if not args or args[0].startswith("-"):
            raise ValueError(f"name a row: {', '.join(registry.ALL_EXPERIMENTS)} (or teacher --name NAME). {_USAGE}")
        name, args = args[0], args[1:]
        if name == OWN_TEACHER and OWN_TEACHER not in registry.ALL_EXPERIMENTS:
            return run_row(own_teacher(_own_teacher_name(args)), args)
        experiment = registry.get(name)
    except ValueError as error:
        raise input_error("kdbias.run", error) from None
    return run_row(experiment, args)


if __name__ == "__main__":
    main()
