"""Pure loss functions: logit distillation, linear CKA and patch-token alignment."""

from kdbias.losses.cka import (
    UNBIASED_CKA_LOSS,
    biased_hsic,
    cka_loss,
    gram_linear,
    hsic,
    linear_cka,
    permutation_floor,
    unbiased_hsic,
    unpaired_order,
)
from kdbias.losses.kd import hard_distillation_loss, soft_kl_loss
from kdbias.losses.token import pool_tokens_to_grid, token_loss

__all__ = [
    "UNBIASED_CKA_LOSS",
    "biased_hsic",
    "cka_loss",
    "gram_linear",
    "hard_distillation_loss",
    "hsic",
    "linear_cka",
    "permutation_floor",
    "pool_tokens_to_grid",
    "soft_kl_loss",
    "token_loss",
    "unbiased_hsic",
    "unpaired_order",
]
