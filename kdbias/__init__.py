"""kdbias: heterogeneous knowledge distillation into Vision Transformers, with analytics.

Public names::

    from kdbias import CIFARDataModule, TeacherModule, KLDistillModule, CKADistillModule
    from kdbias import AttentionDistanceCallback, HessianCallback, CKAHeatmapCallback
    from kdbias import FrozenTeacher, Optimization

Each is imported on first use (module ``__getattr__``): ``import kdbias`` itself loads neither
Lightning nor timm, so ``python -m kdbias.report`` starts without them. Importing it gives the
``kdbias`` logger its console handler (:func:`kdbias.console.log_to_console`). Pure functions live in
:mod:`kdbias.losses` and :mod:`kdbias.analytics`; model builders and feature taps in
:mod:`kdbias.models`; the experiment matrix in :mod:`kdbias.registry`; the run layout in
:mod:`kdbias.runs`; the command line in :mod:`kdbias.cli`; the tables in :mod:`kdbias.report`.
"""

from __future__ import annotations

import importlib
from typing import Any

from kdbias.console import log_to_console

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    "CIFARDataModule": "kdbias.data",
    "TeacherModule": "kdbias.modules",
    "KLDistillModule": "kdbias.modules",
    "CKADistillModule": "kdbias.modules",
    "AttentionDistanceCallback": "kdbias.callbacks",
    "HessianCallback": "kdbias.callbacks",
    "CKAHeatmapCallback": "kdbias.callbacks",
    "FrozenTeacher": "kdbias.teacher",
    "Optimization": "kdbias.modules",
}

__all__ = list(_PUBLIC)

log_to_console()  # the library's lines (``kdbias.*`` loggers) reach the terminal, as Lightning's do


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'kdbias' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
