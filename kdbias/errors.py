"""Which exceptions are the user's input (one line, exit status 2) and which are bugs (a traceback).

Until training starts (parsing, checking, planning, building, reading the data) a
``ValueError`` is a refused value; once ``trainer.fit`` runs, only the explicit input types
below are: a ``ValueError``, ``TypeError`` or ``KeyError`` raised by library code during fit or
test is a bug and keeps its traceback.
"""

from __future__ import annotations

import pickle

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException

from kdbias.callbacks.nonfinite import NonFiniteLossError
from kdbias.data.cifar import CorruptDatasetError
from kdbias.models import PretrainedWeightsError
from kdbias.runs import CheckpointError, RunPathError

__all__ = ["FIT_INPUT_ERRORS", "InputError", "SETUP_INPUT_ERRORS"]


class InputError(ValueError):
    """A value the user gave cannot work, found once training has started (e.g. a batch too
    small for the CKA estimator): reported in one line."""


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
)
#: Before training starts a refused value (``ValueError``) is input too.
SETUP_INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, *FIT_INPUT_ERRORS)
