"""Which exceptions are the user's input (one line, exit status 2) and which are bugs (a traceback).

Until training starts (parsing, checking, planning, building, reading the data) a
``ValueError`` is a refused value; once ``trainer.fit`` runs, only the explicit input types
below are: a ``ValueError``, ``TypeError`` or ``KeyError`` raised by library code during fit or
test is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from kdbias.console import emit
from kdbias.data.cifar import CorruptDatasetError
from kdbias.models import PretrainedWeightsError
from kdbias.runs import CheckpointError, Run, RunPathError
from kdbias.study import StudyError

__all__ = [
    "FIT_INPUT_ERRORS",
    "InputError",
    "NonFiniteLossError",
    "SETUP_INPUT_ERRORS",
    "STOPPED_STATUS",
    "signal_exit_status",
]


class InputError(ValueError):
    """A value the user gave cannot work, found once training has started (e.g. a batch too
    small for the CKA estimator): reported in one line."""


class NonFiniteLossError(RuntimeError):
    """A loss component became NaN or Inf; the message names the step and the component
    (raised by :class:`~kdbias.callbacks.NonFiniteGuard`)."""


#: Input errors at any time: files, weights, checkpoints, Lightning's configuration, divergence.
FIT_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    InputError,
    OSError,
    EOFError,
    pickle.UnpicklingError,
    yaml.YAMLError,
    PretrainedWeightsError,
    CheckpointError,
    RunPathError,
    CorruptDatasetError,
    MisconfigurationException,
    NonFiniteLossError,
    StudyError,
)
#: Before training starts a refused value (``ValueError``) is input too.
SETUP_INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, *FIT_INPUT_ERRORS)

#: Exit statuses of a run stopped by a signal (the shell's 128 + signal number): never 0.
STOPPED_STATUS = {"SIGTERM": 143, "SIGINT": 130}


@contextlib.contextmanager
def signal_exit_status(trainer: Any, describe: str, run_dir: Path | None) -> Iterator[None]:
    """Only a complete run exits 0: inside the block, SIGTERM (Lightning's ``SIGTERMException``,
    a ``SystemExit`` with status 0, what SLURM sends at the time limit) and SIGINT (Lightning
    exits with status 1) become ``SystemExit`` 143 / 130 and one line (rank 0) saying whether
    ``last.ckpt`` is kept for ``--resume``; ``describe``: the run, in words."""
    try:
        yield
    except SIGTERMException:
        raise _stopped("SIGTERM", describe, run_dir) from None
    except SystemExit as stop:
        if getattr(trainer, "interrupted", False) and stop.code in (None, 0, 1):
            raise _stopped("SIGINT", describe, run_dir) from None
        raise


def _stopped(signal_name: str, describe: str, run_dir: Path | None) -> SystemExit:
    last = Run.located(run_dir).last_ckpt if run_dir is not None else None
    where = (
        f"its checkpoint {last} is kept: rerun with --resume to complete it"
        if last is not None and last.is_file()
        else "no checkpoint was written: run it again"
    )
    if rank_zero_only.rank == 0:
        emit(f"{describe}: stopped by {signal_name} before the run completed; {where}.", sys.stderr)
    return SystemExit(STOPPED_STATUS[signal_name])
