"""Linear centred kernel alignment (CKA) and the HSIC estimators behind it.

``CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) * HSIC(L, L))`` with linear kernels
``K = X X^T``, ``L = Y Y^T`` over the ``n`` examples of a batch (Kornblith et al.
2019). Two HSIC estimators are provided:

* biased: ``tr(K H L H) / (n - 1)^2`` with ``H = I - 11^T / n`` (Gretton et al. 2005);
* unbiased (debiased): the U-statistic of Song et al. 2012, used for minibatch CKA
  by Nguyen et al. 2021; needs ``n >= 4``. With ``K~``, ``L~`` the Grams with zeroed
  diagonals::

      HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2))
                - 2 / (n-2) * 1^T K~ L~ 1] / (n (n-3))

Biased CKA of independent representations is far from 0 when the width is large
compared with ``n``; unbiased CKA is close to 0. At EXP-3's batch (512 images) and widths
(student 64 tokens x 192 = 12,288 features, teacher 8,192-24,576) biased CKA of *independent*
isotropic features reads about 0.95, so ``1 - CKA`` hardly moves; the debiased estimator reads
about 0 there and about 1 for features that share a low-rank latent. :func:`cka_loss` therefore
uses the debiased estimator by default (:data:`UNBIASED_CKA_LOSS`); the biased one is a flag.

The *permutation floor* (:func:`permutation_floor`) is the CKA of the same features with one
side's example order permuted (unpaired examples): what CKA reads without any pairing.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from kdbias.losses._precision import autocast_disabled

__all__ = [
    "UNBIASED_CKA_LOSS",
    "biased_hsic",
    "cka_loss",
    "gram_linear",
    "hsic",
    "linear_cka",
    "permutation_floor",
    "unbiased_hsic",
    "unpaired_order",
]

Form = Literal["auto", "gram", "feature"]

#: The CKA loss's estimator: debiased HSIC (Song et al. 2012), whose value separates aligned from
#: independent features at wide representations and small batches (see the module docstring).
UNBIASED_CKA_LOSS = True


def gram_linear(x: Tensor) -> Tensor:
    """Linear-kernel Gram matrix ``X X^T``: x ``[n, ...]`` (trailing dims flattened) -> ``[n, n]``."""
    x = x.flatten(1)
    return x @ x.T


def biased_hsic(gram_x: Tensor, gram_y: Tensor) -> Tensor:
    """Biased HSIC ``tr(K H L H) / (n - 1)^2`` of Gram matrices ``[..., n, n]`` -> ``[...]``."""
    n = gram_x.shape[-1]
    return (_centre_gram(gram_x) * _centre_gram(gram_y)).sum((-2, -1)) / (n - 1) ** 2


def unbiased_hsic(gram_x: Tensor, gram_y: Tensor) -> Tensor:
    """Unbiased HSIC of Song et al. 2012 (formula in the module docstring).

    Args:
        gram_x, gram_y: symmetric ``[..., n, n]`` Gram matrices (leading dims broadcast).

    Returns:
        ``[...]`` unbiased estimate of ``||C_xy||_F^2`` (squared Frobenius norm of
        the cross-covariance for linear kernels). Raises ``ValueError`` if ``n < 4``.
    """
    n = gram_x.shape[-1]
    _check_unbiased_n(n)
    return _unbiased_hsic_gram_scaled(gram_x, gram_y) / (n * (n - 3))


def hsic(gram_x: Tensor, gram_y: Tensor, unbiased: bool = True) -> Tensor:
    """:func:`unbiased_hsic` or :func:`biased_hsic` of ``[..., n, n]`` Grams -> ``[...]``."""
    return unbiased_hsic(gram_x, gram_y) if unbiased else biased_hsic(gram_x, gram_y)


def linear_cka(
    x: Tensor,
    y: Tensor,
    unbiased: bool = False,
    *,
    form: Form = "auto",
    eps: float = 0.0,
) -> Tensor:
    """Linear CKA between two representations of the same ``n`` examples.

    Args:
        x: ``[n, ...]``; trailing dims are flattened to ``[n, d_x]``.
        y: ``[n, ...]``; flattened to ``[n, d_y]``. Widths may differ.
        unbiased: ``False``: Kornblith et al. 2019 (biased HSIC). ``True``: debiased
            HSIC of Song et al. 2012 as in Nguyen et al. 2021; needs ``n >= 4``.
        form: ``"feature"`` works with ``d x d`` products (``X^T Y``, column sums, row
            norms), ``"gram"`` with ``n x n`` Gram matrices; both give the same value.
            ``"auto"`` picks the feature form when ``n > max(d_x, d_y)``.
        eps: added under the square root of the denominator (after clamping it at 0);
            ``0`` returns NaN for a zero-variance input. See :func:`cka_loss`.

    Computed in float32 (bf16/fp16 inputs are cast up; float64 stays float64),
    also under ``torch.autocast``, which is disabled inside.
    Each input is centred (after subtracting its first row, which is exact for
    constant columns and removes large offsets) and scaled to unit Frobenius norm
    before any product is formed; CKA is invariant to both. Differentiable.

    Returns:
        Scalar tensor in ``[0, 1]`` for the biased form (the unbiased form can be
        slightly negative).
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must describe the same examples, got n={x.shape[0]} and n={y.shape[0]}")
    n = x.shape[0]
    if unbiased:
        _check_unbiased_n(n)
    elif n < 2:
        raise ValueError(f"linear CKA needs at least 2 examples, got n={n}")
    with autocast_disabled(x, y):
        dtype = torch.promote_types(_compute_dtype(x), _compute_dtype(y))
        x, y = _normalise(x, dtype), _normalise(y, dtype)
        if form == "auto":
            form = "feature" if n > max(x.shape[1], y.shape[1]) else "gram"
        if form == "feature":
            hsic = _unbiased_hsic_feature_scaled if unbiased else _biased_hsic_feature_scaled
            h_xy, h_xx, h_yy = hsic(x, y), hsic(x, x), hsic(y, y)
        elif form == "gram":
            k, l = x @ x.T, y @ y.T
            hsic = _unbiased_hsic_gram_scaled if unbiased else _biased_hsic_gram_scaled
            h_xy, h_xx, h_yy = hsic(k, l), hsic(k, k), hsic(l, l)
        else:
            raise ValueError(f"form must be 'auto', 'gram' or 'feature', got {form!r}")
        if eps > 0:
            return h_xy / (h_xx * h_yy).clamp_min(0).add(eps).sqrt()
        return h_xy / (h_xx * h_yy).sqrt()


def cka_loss(
    x: Tensor,
    y: Tensor,
    unbiased: bool = UNBIASED_CKA_LOSS,
    eps: float = 1e-12,
    *,
    form: Form = "auto",
) -> Tensor:
    """``1 - linear_cka(x, y, unbiased)``: a scalar loss, about 1 for independent features and
    0 for aligned ones.

    Estimator: debiased HSIC by default (:data:`UNBIASED_CKA_LOSS`; needs ``n >= 4``; the loss
    can then exceed 1 slightly, as the estimate of an independent pair can be slightly negative);
    ``unbiased=False`` gives the biased form of Kornblith et al. 2019 (in ``[0, 1]``, but near 0
    for independent features that are wide compared with ``n``).

    Shapes, dtype and ``form`` as in :func:`linear_cka`. ``eps`` guards the
    denominator ``sqrt(HSIC(K, K) * HSIC(L, L))``: the self terms are computed on
    unit-norm inputs, where their product is at least about ``1 / (r_x r_y)`` for
    ranks ``r``, so ``eps = 1e-12`` moves ordinary values by well under ``1e-6``.
    A representation that is constant across the batch centres to exactly zero;
    its CKA is then 0 (loss 1) with finite, zero gradient, instead of NaN.
    """
    return 1.0 - linear_cka(x, y, unbiased, form=form, eps=eps)


def unpaired_order(
    n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """A random order of ``n >= 2`` examples that pairs none with itself: ``perm[i] != i`` for every ``i``.

    A uniformly random ``n``-cycle: ``randperm(n)`` visits the examples in a random order and
    each is sent to the next one visited. ``generator`` (on ``device``) keeps the draw off the
    global random stream. Returns an int64 ``[n]`` index tensor on ``device``.
    """
    if n < 2:
        raise ValueError(f"an unpaired order needs at least 2 examples, got n={n}")
    visit = torch.randperm(n, generator=generator, device=device)
    perm = torch.empty_like(visit)
    perm[visit] = visit.roll(-1)
    return perm


def permutation_floor(
    x: Tensor, y: Tensor, perm: Tensor, unbiased: bool = UNBIASED_CKA_LOSS, *, form: Form = "auto"
) -> Tensor:
    """``linear_cka(x, y[perm], unbiased)``: CKA of ``x`` with ``y``'s examples re-paired by ``perm``.

    With ``perm`` from :func:`unpaired_order` (no example paired with itself) this is the CKA
    that the same features read without pairing, the floor against which a paired value is
    judged (about 0 for the debiased estimator, far above 0 for the biased one at large widths).
    ``x``, ``y``: ``[n, ...]`` as in :func:`linear_cka`; ``perm``: ``[n]`` indices. Not
    differentiated: computed under ``no_grad``. Returns a scalar tensor.
    """
    with torch.no_grad():
        return linear_cka(x.detach(), y.detach()[perm], unbiased, form=form)


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _normalise(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``[n, ...]`` -> ``[n, d]``, centred and scaled to unit Frobenius norm (0 stays 0)."""
    x = x.flatten(1).to(dtype)
    x = x - x[:1]
    x = x - x.mean(dim=0, keepdim=True)
    # sqrt(sum + tiny) rather than a norm: its gradient at an all-zero x is finite.
    return x / (x.square().sum() + torch.finfo(dtype).tiny).sqrt()


def _check_unbiased_n(n: int) -> None:
    if n < 4:
        raise ValueError(
            f"unbiased (debiased) HSIC/CKA needs at least 4 examples, got n={n}; "
            "use a batch of at least 4 or unbiased=False"
        )


def _centre_gram(k: Tensor) -> Tensor:
    """``H K H`` for ``[..., n, n]``."""
    k = k - k.mean(dim=-1, keepdim=True)
    return k - k.mean(dim=-2, keepdim=True)


# The *_scaled estimators drop constant factors ((n-1)^-2 and (n(n-3))^-1) that
# cancel in CKA, so that on unit-norm inputs all terms are O(1).


def _biased_hsic_gram_scaled(k: Tensor, l: Tensor) -> Tensor:
    return (_centre_gram(k) * _centre_gram(l)).sum((-2, -1))


def _biased_hsic_feature_scaled(x: Tensor, y: Tensor) -> Tensor:
    """``||Y^T X||_F^2`` for centred ``x [n, d_x]``, ``y [n, d_y]`` (equals ``tr(K L)``)."""
    return (x.T @ y).square().sum()


def _unbiased_hsic_gram_scaled(k: Tensor, l: Tensor) -> Tensor:
    n = k.shape[-1]
    off = 1.0 - torch.eye(n, dtype=k.dtype, device=k.device)
    k, l = k * off, l * off
    k_rows, l_rows = k.sum(-1), l.sum(-1)  # K~ 1, L~ 1: [..., n]
    trace = (k * l).sum((-2, -1))
    sums = k_rows.sum(-1) * l_rows.sum(-1) / ((n - 1) * (n - 2))
    cross = (k_rows * l_rows).sum(-1) * (2.0 / (n - 2))  # 1^T K~ L~ 1, K~ symmetric
    return trace + sums - cross


def _unbiased_hsic_feature_scaled(x: Tensor, y: Tensor) -> Tensor:
    """``n (n-3) HSIC_1`` from ``x [n, d_x]``, ``y [n, d_y]`` without an ``n x n`` matrix.

    With ``K = X X^T``: ``diag K`` = row norms ``r_x``, ``K 1 = X s_x`` with
    column sums ``s_x``, so ``tr(K~ L~) = ||X^T Y||_F^2 - r_x . r_y``,
    ``1^T K~ 1 = ||s_x||^2 - sum r_x`` and ``K~ 1 = X s_x - r_x``.
    Valid whether or not ``x`` and ``y`` are centred.
    """
    n = x.shape[0]
    r_x, r_y = x.square().sum(1), y.square().sum(1)
    s_x, s_y = x.sum(0), y.sum(0)
    trace = (x.T @ y).square().sum() - (r_x * r_y).sum()
    sums = (s_x.square().sum() - r_x.sum()) * (s_y.square().sum() - r_y.sum()) / ((n - 1) * (n - 2))
    cross = ((x @ s_x - r_x) * (y @ s_y - r_y)).sum() * (2.0 / (n - 2))
    return trace + sums - cross
