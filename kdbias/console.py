"""What kdbias's commands show on the terminal: the ``kdbias`` logger, error lines, Lightning's lines.

The library logs through ``logging.getLogger("kdbias.<module>")``; :func:`log_to_console` (run
when :mod:`kdbias` is imported) gives the ``kdbias`` logger one handler that writes each record
as its bare message to the *current* ``sys.stdout`` (``sys.stderr`` from ``WARNING`` up), as the
commands printed before. Configure ``logging.getLogger("kdbias")`` to route them elsewhere.

This module is the floor under every command: it imports nothing from kdbias and nothing heavy
(Lightning only inside the functions that need it), so the report can use it too. It is the one
module of the library that writes to the terminal directly (:func:`emit`, for the result a
command exists to print and for its one-line errors).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO

__all__ = [
    "LIGHTNING_RANK_ZERO",
    "emit",
    "format_duration",
    "input_error",
    "log_to_console",
    "no_setup_lines",
    "one_line",
    "quiet_lightning",
]

#: Lightning's loggers of rank-zero lines (device, batch limits, tips).
LIGHTNING_RANK_ZERO = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _ConsoleHandler(logging.Handler):
    """A handler writing to the streams ``sys`` holds *now* (pytest's capture, a redirected
    ``sys.stdout``), not the ones it found when it was made."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def log_to_console() -> None:
    """Give the ``kdbias`` logger its console handler (once) at level ``INFO``; records do not
    also propagate to the root logger (no duplicate lines under a configured root)."""
    logger = logging.getLogger("kdbias")
    if any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        return
    handler = _ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False


def emit(line: str, file: TextIO | None = None) -> None:
    """Write ``line`` and a newline to ``file`` (default: the current ``sys.stdout``), flushed:
    a command's result or its one-line error."""
    out = sys.stdout if file is None else file
    out.write(f"{line}\n")
    out.flush()


def one_line(message: object) -> str:
    """``message`` with its whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(message).split())


def format_duration(seconds: float) -> str:
    """``"42.0 s"``, ``"3.5 min"`` or ``"2.10 h"``."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _rank() -> int:
    """This process's global rank: Lightning's once it is imported, else the launchers' variables
    (an input error found before Lightning is imported, e.g. a refused ``--config`` file)."""
    if "lightning" in sys.modules:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        return int(rank_zero_only.rank or 0)
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def input_error(prog: str, error: BaseException) -> SystemExit:
    """Write ``error`` as one line on stderr (``prog: error: ...``; rank 0) and return the
    ``SystemExit(2)`` to raise (``KDBIAS_TRACEBACK=1``: re-raise ``error`` with its traceback)."""
    if os.environ.get("KDBIAS_TRACEBACK", "") not in ("", "0"):
        raise error
    if _rank() == 0:
        kind = "" if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: "
        emit(f"{prog}: error: {kind}{one_line(error)}", file=sys.stderr)
    return SystemExit(2)


@contextlib.contextmanager
def no_setup_lines() -> Iterator[None]:
    """Lightning's INFO lines off inside the block (a throwaway Trainer's "GPU available" and
    batch-limit lines); the loggers' levels are restored after."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_RANK_ZERO]
    levels = [source.level for source in loggers]
    for source in loggers:
        source.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for source, level in zip(loggers, levels):
            source.setLevel(level)


def quiet_lightning() -> None:
    """Lightning's lines that say nothing about this run, off: the seed line, product tips, a
    deprecation inside Lightning itself (every kdbias command calls this once)."""
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)  # no "Seed set to 0" lines
    for source in LIGHTNING_RANK_ZERO:
        logging.getLogger(source).addFilter(_no_tips)  # Lightning's product tips on every run
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # inside Lightning


def _no_tips(record: logging.LogRecord) -> bool:
    """A logging filter: drop Lightning's advertising lines (they start with a light bulb)."""
    return not str(record.getMessage()).startswith("💡")
