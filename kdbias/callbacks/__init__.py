"""Lightning callbacks: the run summary and the analytics of the research plan's Phase 3."""

from kdbias.callbacks.attention_distance import AttentionDistanceCallback
from kdbias.callbacks.base import AnalyticsCallback, eval_mode
from kdbias.callbacks.cka_heatmap import CKAHeatmapCallback
from kdbias.callbacks.generalisation import GeneralisationGapCallback
from kdbias.callbacks.hessian import HessianCallback
from kdbias.callbacks.lr import ScheduleMonitor
from kdbias.callbacks.metrics_csv import EpochMetricsCSV
from kdbias.callbacks.nonfinite import NonFiniteGuard, NonFiniteLossError
from kdbias.callbacks.predictions import PredictionsCallback
from kdbias.callbacks.progress import EpochLineProgress
from kdbias.callbacks.rng import RNGStateCallback
from kdbias.callbacks.summary import SummaryCallback
from kdbias.callbacks.teacher_quality import TeacherKNNCallback

__all__ = [
    "AnalyticsCallback",
    "AttentionDistanceCallback",
    "CKAHeatmapCallback",
    "EpochLineProgress",
    "EpochMetricsCSV",
    "GeneralisationGapCallback",
    "HessianCallback",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "PredictionsCallback",
    "RNGStateCallback",
    "ScheduleMonitor",
    "SummaryCallback",
    "TeacherKNNCallback",
    "eval_mode",
]
