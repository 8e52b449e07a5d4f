"""The fields of ``summary.json`` (:class:`Summary`), its version and the contributor interface."""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypedDict, get_args, runtime_checkable

__all__ = [
    "DISTILL_TOKENS",
    "MIXES",
    "SCHEMA_VERSION",
    "SELECTIONS",
    "SELECTION_BEST",
    "SELECTION_LAST",
    "CKARecord",
    "DistillToken",
    "MethodRecord",
    "Mix",
    "Selection",
    "Summary",
    "SummaryContributor",
    "TeacherRecord",
]

SCHEMA_VERSION = 2  # 2: the k-NN accuracy in teacher_knn_acc; teacher_acc only the teacher's test accuracy

#: The allowed values of the summary's string fields: writers import them, the reader checks them.
DistillToken = Literal["soft", "hard"]  # method.distill_token (None: no distillation token)
Mix = Literal["cutmix", "mixup"]  # method.mix: how training batches were mixed (None: not mixed)
Selection = Literal["best held-out val/acc", "last epoch (no held-out split)"]  # which checkpoint was tested
DISTILL_TOKENS: tuple[DistillToken | None, ...] = (None, *get_args(DistillToken))
MIXES: tuple[Mix | None, ...] = (None, *get_args(Mix))
SELECTIONS: tuple[Selection, ...] = get_args(Selection)
SELECTION_BEST, SELECTION_LAST = SELECTIONS


class MethodRecord(TypedDict, total=False):
    """``summary["method"]``: what the run trained (the runner fills it)."""

    loss: str  # "ce" | "soft_kl" | "cka"
    ce_weight: float  # weight of the CE term, [0, 1]
    arch: str
    batch_size: int
    global_batch_size: int
    epochs: int
    holdout: int  # configured held-out images (0: no held-out split)
    precision: str
    temperature: float
    alpha: float
    distill_token: DistillToken | None
    lambda_cka: float
    lambda_tok: float
    layer_pairs: list[list[int]]
    cka_representation: str  # "image" | "token"
    unbiased_cka: bool  # the CKA loss's estimator: debiased HSIC (True) or biased (False)
    teacher_image_size: int
    mix: Mix | None


class TeacherRecord(TypedDict, total=False):
    """``summary["teacher"]``: the teacher a distilled run used."""

    name: str
    family: str
    source: str  # checkpoint path, "hub", a weights file, or "random" (smoke only)


class CKARecord(TypedDict, total=False):
    """One entry of ``summary["cka"]`` (key: the experiment whose teacher was measured)."""

    diag: float
    off_diag: float
    contrast: float
    trained: float
    untrained_contrast: float
    untrained_diag: float
    # permutation floors: each figure on the matrix with the teacher's images re-paired (unpaired images)
    floor_diag: float
    floor_off_diag: float
    floor_contrast: float
    floor_trained: float
    floor_untrained_contrast: float
    floor_untrained_diag: float
    teacher: str
    source: str  # the teacher's weights: checkpoint path, "hub", a weights file, or "random" (smoke only)
    heatmap: str  # path relative to the run folder
    trained_pairs: list[list[int]] | None
    measured: str  # "later": measured after training by kdbias.controls (on last.ckpt); absent: during training


class FidelityRecord(TypedDict, total=False):
    """One entry of ``summary["fidelity"]`` (key: the teacher compared with): on the official
    test split, at the selected checkpoint."""

    agreement: float  # top-1 agreement with the teacher, fraction in [0, 1]
    kl: float  # KL(teacher || student) at tau = 1, nats, mean over images
    measured: str  # "later": measured after training by kdbias.controls; absent: in the run's test pass


class Summary(TypedDict, total=False):
    """``<run>/summary.json``. Accuracies are fractions in [0, 1]; times in seconds."""

    schema: int
    experiment: str
    dataset: str
    preset: str
    seed: int
    status: str  # "trained" after fit, "complete" once tested
    label: str
    role: str
    control_of: str | None
    config_signature: str
    method: MethodRecord
    teacher: TeacherRecord | None
    epochs_completed: int
    val_acc: float | None
    best_val_acc: float | None
    best_epoch: int | None
    val_images: int  # held-out images of the last validation pass (SummaryCallback)
    train_time_s: float
    analytics_time_s: float
    student_init_sha256: str | None
    teacher_acc: float | None  # the teacher's classifier on the official test split, in this run (runner)
    teacher_knn_acc: float  # a headless teacher's weighted k-NN accuracy (TeacherKNNCallback)
    teacher_knn_images: int  # test images of that k-NN probe (TeacherKNNCallback)
    test_acc: float
    test_loss: float
    test_acc_last: float
    test_images: int  # official test images of the selected checkpoint's test (SummaryCallback)
    selected_checkpoint: str
    selection: Selection
    test_predictions: str  # per-image predictions file, relative to the run (PredictionsCallback)
    hessian_trace: float
    hessian_trace_stderr: float
    hessian_trace_probes: int
    hessian_trace_t: float  # the t quantile (probes - 1 df) of the 95 % interval
    hessian_top_eig: float
    hessian_top_eig_residual: float
    hessian_top_eig_spread: float  # relative spread of the independent starts' values
    hessian_top_eig_starts: int  # independent Lanczos starts (>= 2 to certify the top eigenvalue)
    hessian_top_eig_iterations: int  # Hessian-vector products over all starts
    hessian_top_eig_converged: bool  # certified: every start converged and they agree
    gen_gap_acc: float
    gen_gap_loss: float
    attn_dist: dict[str, float]
    attn_dist_heads: dict[str, list[float]]
    cka: dict[str, CKARecord]
    fidelity: dict[str, FidelityRecord]


@runtime_checkable
class SummaryContributor(Protocol):
    """A callback that adds fields to ``summary.json``: ``summary_items()`` returns them
    (keys of :class:`Summary`); :class:`~kdbias.callbacks.SummaryCallback` merges them."""

    def summary_items(self) -> dict[str, Any]: ...
