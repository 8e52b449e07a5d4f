"""Pure analytics: why transfer helps or hurts (attention distance, curvature, CKA, k-NN)."""

from kdbias.analytics.attention_distance import grid_distances, mean_attention_distance
from kdbias.analytics.cka_matrix import MinibatchCKA, cka_matrix, diagonal_alignment
from kdbias.analytics.hessian import (
    clone_for_autograd,
    hessian_top_eigenvalue,
    hessian_trace,
    hessian_vector_product,
)
from kdbias.analytics.knn import knn_accuracy

__all__ = [
    "MinibatchCKA",
    "cka_matrix",
    "clone_for_autograd",
    "diagonal_alignment",
    "grid_distances",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "hessian_vector_product",
    "knn_accuracy",
    "mean_attention_distance",
]
