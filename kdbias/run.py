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

__all__ = ["OWN_TEACHER", "checked_args", "main", "run_row", "split_study"]

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


def checked_args(prog: str, args: Sequence[str]) -> list[str]:
    """``args`` with every ``--config`` file read bounded and checked
    (:func:`kdbias.config_files.prepare_config_args`) before Lightning is imported: a refused file
    (an alias bomb, a callable no command line names) ends in one line and exit status 2 within
    the interpreter's start-up."""
    from kdbias.config_files import ConfigFileError, prepare_config_args
    from kdbias.console import input_error

    try:
        return prepare_config_args(args)
    except ConfigFileError as error:
        raise input_error(prog, error) from None


def run_row(name: str, argv: Sequence[str] | None = None) -> Path | None:
    """``experiments/<name>.py ARGS``: the shipped row ``name`` (:func:`kdbias.cli.main`), its
    configuration files checked first (:func:`checked_args`)."""
    args = checked_args(f"{name}.py", sys.argv[1:] if argv is None else argv)
    from kdbias.cli import main as run

    return run(name, args)


def main(argv: Sequence[str] | None = None) -> Path | None:
    """Activate the study, then run row ``NAME`` (:func:`kdbias.cli.main`); returns its run folder.
    The study file and every ``--config`` file are checked before Lightning is imported."""
    from kdbias import registry
    from kdbias.console import input_error

    try:
        study, args = split_study(sys.argv[1:] if argv is None else argv)
    except ValueError as error:
        raise input_error("kdbias.run", error) from None
    args = checked_args("kdbias.run", args)  # the study file is read by its own loader
    try:
        if study is not None:
            registry.activate(study)
        if not args or args[0].startswith("-"):
            raise ValueError(f"name a row: {', '.join(registry.ALL_EXPERIMENTS)} (or teacher --name NAME). {_USAGE}")
        name, args = args[0], args[1:]
        from kdbias.cli import main as run
        from kdbias.cli import own_teacher

        if name == OWN_TEACHER and OWN_TEACHER not in registry.ALL_EXPERIMENTS:
            return run(own_teacher(_own_teacher_name(args)), args)
        experiment = registry.get(name)
    except ValueError as error:
        raise input_error("kdbias.run", error) from None
    return run(experiment, args)


if __name__ == "__main__":
    main()
