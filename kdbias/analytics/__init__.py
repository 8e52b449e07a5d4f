"""Pure analytics: why transfer helps or hurts (attention distance, curvature, CKA, k-NN)."""

from kdbias.analytics.attention_distance import grid_distances, mean_attention_distance
from kdbias.analytics.cka_matrix import (
    MinibatchCKA,
    cell_contrast,
    cka_matrix,
    depth_matched_cells,
    diagonal_alignment,
    diagonal_contrast_split,
)
from kdbias.analytics.hessian import (
    EigenEstimate,
    TraceEstimate,
    clone_for_autograd,
    hessian_top_eigenvalue,
    hessian_top_eigenvalue_estimate,
    hessian_trace,
    hessian_trace_estimate,
    hessian_vector_product,
)
from kdbias.analytics.knn import knn_accuracy
from kdbias.analytics.lanczos import (
    CertifiedEigenvalue,
    LanczosEstimate,
    hessian_top_eigenvalue_certified,
    hessian_top_eigenvalue_lanczos,
)

__all__ = [
    "CertifiedEigenvalue",
    "EigenEstimate",
    "LanczosEstimate",
    "MinibatchCKA",
    "TraceEstimate",
    "cell_contrast",
    "cka_matrix",
    "clone_for_autograd",
    "depth_matched_cells",
    "diagonal_alignment",
    "diagonal_contrast_split",
    "grid_distances",
    "hessian_top_eigenvalue",
    "hessian_top_eigenvalue_certified",
    "hessian_top_eigenvalue_estimate",
    "hessian_top_eigenvalue_lanczos",
    "hessian_trace",
    "hessian_trace_estimate",
    "hessian_vector_product",
    "knn_accuracy",
    "mean_attention_distance",
]
