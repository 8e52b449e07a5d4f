"""kdbias: heterogeneous knowledge distillation into Vision Transformers, with analytics.

Public names::

    from kdbias import CIFARDataModule, TeacherModule, KLDistillModule, CKADistillModule
    from kdbias import AttentionDistanceCallback, HessianCallback, CKAHeatmapCallback
    from kdbias import FrozenTeacher, Optimization

Pure functions live in :mod:`kdbias.losses` and :mod:`kdbias.analytics`; model builders
and feature taps in :mod:`kdbias.models`; the experiment matrix in :mod:`kdbias.registry`;
the run layout in :mod:`kdbias.runs`; the command line in :mod:`kdbias.cli`; the tables in
:mod:`kdbias.report`.
"""

from kdbias.callbacks import AttentionDistanceCallback, CKAHeatmapCallback, HessianCallback
from kdbias.data import CIFARDataModule
from kdbias.modules import CKADistillModule, KLDistillModule, Optimization, TeacherModule
from kdbias.teacher import FrozenTeacher

__version__ = "0.1.0"

__all__ = [
    "CIFARDataModule",
    "TeacherModule",
    "KLDistillModule",
    "CKADistillModule",
    "AttentionDistanceCallback",
    "HessianCallback",
    "CKAHeatmapCallback",
    "FrozenTeacher",
    "Optimization",
]
