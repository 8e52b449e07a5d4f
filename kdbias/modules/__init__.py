"""LightningModules: thin wiring of models, losses and metrics."""

from kdbias.modules.base import ClassifierModule, state_sha256
from kdbias.modules.cka_distill import CKADistillModule
from kdbias.modules.distill_base import DistillationModule
from kdbias.modules.kl_distill import KLDistillModule
from kdbias.modules.optim import Optimization
from kdbias.modules.probe import ProbeTeacherModule
from kdbias.modules.teacher import TeacherModule

__all__ = [
    "CKADistillModule",
    "ClassifierModule",
    "DistillationModule",
    "KLDistillModule",
    "Optimization",
    "ProbeTeacherModule",
    "TeacherModule",
    "state_sha256",
]
