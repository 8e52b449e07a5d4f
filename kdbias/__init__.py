"""kdbias: heterogeneous knowledge distillation into Vision Transformers, with analytics.

Public names::

    from kdbias import CIFARDataModule, TeacherModule, KLDistillModule, CKADistillModule
    from kdbias import AttentionDistanceCallback, HessianCallback, CKAHeatmapCallback

Pure functions live in :mod:`kdbias.losses` and :mod:`kdbias.analytics`; model builders
and feature taps in :mod:`kdbias.models`.
"""

from kdbias.callbacks import AttentionDistanceCallback, CKAHeatmapCallback, HessianCallback
from kdbias.data import CIFARDataModule
from kdbias.modules import CKADistillModule, KLDistillModule, TeacherModule

__version__ = "0.1.0"

__all__ = [
    "CIFARDataModule",
    "TeacherModule",
    "KLDistillModule",
    "CKADistillModule",
    "AttentionDistanceCallback",
    "HessianCallback",
    "CKAHeatmapCallback",
]
