"""Layer-by-layer minibatch CKA (Nguyen et al. 2021, "Do wide and deep networks learn the same things?").

For each batch of ``n`` examples and each pair of layers ``(i, j)`` the unbiased
HSIC of the linear Grams ``K_i``, ``L_j`` is summed over batches, together with the
self terms ``HSIC(K_i, K_i)`` and ``HSIC(L_j, L_j)``::

    CKA_ij = sum_b HSIC(K_i, L_j) / sqrt(sum_b HSIC(K_i, K_i) * sum_b HSIC(L_j, L_j))

With the unbiased estimator this converges to population CKA as batches are
added, whatever the batch size, which must however be the same for every batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from kdbias.losses.cka import unbiased_hsic

__all__ = ["MinibatchCKA", "cka_matrix", "diagonal_alignment"]


class MinibatchCKA:
    """Accumulates unbiased-HSIC sums for a ``[num_layers_x, num_layers_y]`` CKA matrix.

    Args:
        num_layers_x: number of layers in the first model (rows).
        num_layers_y: number of layers in the second model (columns).
        dtype: accumulation and computation dtype (float64 by default; Grams are
            formed in it too, on the features' device).

    Usage: ``reset()``, ``update(feats_x, feats_y)`` once per batch, ``compute()``.
    """

    def __init__(self, num_layers_x: int, num_layers_y: int, dtype: torch.dtype = torch.float64) -> None:
        if num_layers_x < 1 or num_layers_y < 1:
            raise ValueError(f"need at least one layer per side, got {num_layers_x} and {num_layers_y}")
        self.num_layers_x = num_layers_x
        self.num_layers_y = num_layers_y
        self.dtype = dtype
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self.hsic_xy: Tensor | None = None  # [Lx, Ly]
        self.hsic_xx: Tensor | None = None  # [Lx]
        self.hsic_yy: Tensor | None = None  # [Ly]
        self.batch_size: int | None = None
        self.num_batches = 0

    @torch.no_grad()
    def update(self, feats_x: Sequence[Tensor], feats_y: Sequence[Tensor]) -> None:
        """Add one batch.

        Args:
            feats_x: ``num_layers_x`` tensors ``[n, ...]`` (trailing dims flattened).
            feats_y: ``num_layers_y`` tensors ``[n, ...]`` for the same ``n`` examples.
                Passing the same sequence object as ``feats_x`` reuses its Grams.

        Raises ``ValueError`` for a wrong number of layers, ``n < 4``, or an ``n``
        that differs between layers or from earlier batches.
        """
        if len(feats_x) != self.num_layers_x or len(feats_y) != self.num_layers_y:
            raise ValueError(
                f"expected {self.num_layers_x} x-layers and {self.num_layers_y} y-layers, "
                f"got {len(feats_x)} and {len(feats_y)}"
            )
        sizes = {f.shape[0] for f in (*feats_x, *feats_y)}
        if len(sizes) != 1:
            raise ValueError(f"all layers of a batch must hold the same examples, got batch sizes {sorted(sizes)}")
        n = sizes.pop()
        if n < 4:
            raise ValueError(f"minibatch CKA needs at least 4 examples per batch, got n={n}; use a larger batch")
        if self.batch_size is not None and n != self.batch_size:
            raise ValueError(
                f"minibatch CKA needs equal batch sizes, got n={n} after n={self.batch_size}; "
                "drop the last incomplete batch (drop_last=True)"
            )
        grams_x = self._grams(feats_x)
        grams_y = grams_x if feats_y is feats_x else self._grams(feats_y).to(grams_x.device)
        xy = _pairwise_unbiased_hsic(grams_x, grams_y)
        xx = unbiased_hsic(grams_x, grams_x)
        yy = xx if grams_y is grams_x else unbiased_hsic(grams_y, grams_y)
        if self.hsic_xy is None:
            self.hsic_xy, self.hsic_xx, self.hsic_yy = xy, xx, yy
        else:
            self.hsic_xy = self.hsic_xy + xy
            self.hsic_xx = self.hsic_xx + xx
            self.hsic_yy = self.hsic_yy + yy
        self.batch_size = n
        self.num_batches += 1

    def compute(self) -> Tensor:
        """``[num_layers_x, num_layers_y]`` CKA in ``dtype``, on the features' device."""
        if self.hsic_xy is None:
            raise RuntimeError("MinibatchCKA.compute() called before any update()")
        return self.hsic_xy / torch.outer(self.hsic_xx, self.hsic_yy).sqrt()

    def _grams(self, feats: Sequence[Tensor]) -> Tensor:
        """``[L, n, n]`` linear Grams of the centred, flattened features."""
        grams = []
        for f in feats:
            f = f.detach().flatten(1).to(self.dtype)
            f = f - f.mean(dim=0, keepdim=True)  # unbiased HSIC is shift invariant; this aids precision
            grams.append(f @ f.T)
        return torch.stack(grams)


def cka_matrix(
    batches_x: Iterable[Sequence[Tensor]],
    batches_y: Iterable[Sequence[Tensor]],
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Minibatch CKA matrix over paired batches (see :class:`MinibatchCKA`).

    Args:
        batches_x: iterable over batches, each a sequence of per-layer ``[n, ...]`` tensors.
        batches_y: iterable of the same length over the matching batches of the other model.

    Returns:
        ``[num_layers_x, num_layers_y]`` tensor in ``dtype``.
    """
    acc: MinibatchCKA | None = None
    for feats_x, feats_y in zip(batches_x, batches_y, strict=True):
        if acc is None:
            acc = MinibatchCKA(len(feats_x), len(feats_y), dtype)
        acc.update(feats_x, feats_y)
    if acc is None:
        raise ValueError("cka_matrix got no batches")
    return acc.compute()


def diagonal_alignment(matrix: Tensor) -> dict[str, float]:
    """How strongly layers at the same relative depth match, for a ``[Lx, Ly]`` CKA matrix.

    The relative-depth diagonal holds, for each row ``i``, the column
    ``j(i) = round(i * (Ly - 1) / (Lx - 1))`` with halves rounded up (for a square
    matrix, the ordinary diagonal). Needs ``Lx, Ly >= 2``.

    Returns:
        ``{"diag": mean of the Lx diagonal entries, "off_diag": mean of all other
        entries, "contrast": diag - off_diag}`` as Python floats.
    """
    m = torch.as_tensor(matrix).detach().double().cpu()
    if m.dim() != 2 or min(m.shape) < 2:
        raise ValueError(f"need a [Lx, Ly] matrix with Lx, Ly >= 2, got shape {tuple(m.shape)}")
    lx, ly = m.shape
    # Integer arithmetic for round-half-up of i * (ly - 1) / (lx - 1).
    cols = torch.tensor([(2 * i * (ly - 1) + (lx - 1)) // (2 * (lx - 1)) for i in range(lx)])
    on = torch.zeros_like(m, dtype=torch.bool)
    on[torch.arange(lx), cols] = True
    diag, off = m[on].mean().item(), m[~on].mean().item()
    return {"diag": diag, "off_diag": off, "contrast": diag - off}


def _pairwise_unbiased_hsic(grams_x: Tensor, grams_y: Tensor) -> Tensor:
    """Unbiased HSIC of every pair: ``[Lx, n, n]``, ``[Ly, n, n]`` -> ``[Lx, Ly]``."""
    n = grams_x.shape[-1]
    off = 1.0 - torch.eye(n, dtype=grams_x.dtype, device=grams_x.device)
    k, l = grams_x * off, grams_y * off
    k_rows, l_rows = k.sum(-1), l.sum(-1)  # [L, n]
    trace = k.flatten(1) @ l.flatten(1).T
    sums = torch.outer(k_rows.sum(-1), l_rows.sum(-1)) / ((n - 1) * (n - 2))
    cross = (k_rows @ l_rows.T) * (2.0 / (n - 2))
    return (trace + sums - cross) / (n * (n - 3))
