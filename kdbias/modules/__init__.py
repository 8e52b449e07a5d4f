"""LightningModules: thin wiring of models, losses and metrics."""

from kdbias.modules.base import ClassifierModule
from kdbias.modules.cka_distill import CKADistillModule
from kdbias.modules.distill_base import DistillationModule
from kdbias.modules.kl_distill import KLDistillModule
from kdbias.modules.teacher import TeacherModule, load_teacher_checkpoint

__all__ = [
    "ClassifierModule",
    "CKADistillModule",
    "DistillationModule",
    "KLDistillModule",
    "TeacherModule",
    "load_teacher_checkpoint",
]
