"""Layer-by-layer minibatch CKA (Nguyen et al. 2021, "Do wide and deep networks learn the same things?").

For each batch of ``n`` examples and each pair of layers ``(i, j)`` the unbiased
HSIC of the linear Grams ``K_i``, ``L_j`` is summed over batches, together with the
self terms ``HSIC(K_i, K_i)`` and ``HSIC(L_j, L_j)``::

    CKA_ij = sum_b HSIC(K_i, L_j) / sqrt(sum_b HSIC(K_i, K_i) * sum_b HSIC(L_j, L_j))

With the unbiased estimator this converges to population CKA as batches are
added, whatever the batch size, which must however be the same for every batch.

The *permutation floor* of a cell is the same sum with the second model's examples re-paired
within each batch by a random cycle (:func:`~kdbias.losses.cka.unpaired_order`): the CKA the
same features read without pairing (about 0 for the unbiased estimator). The self terms are
unchanged by a re-pairing, so the floor shares the denominator.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from kdbias.losses._precision import autocast_disabled
from kdbias.losses.cka import unbiased_hsic, unpaired_order

__all__ = [
    "MinibatchCKA",
    "cell_contrast",
    "cka_matrix",
    "depth_matched_cells",
    "diagonal_alignment",
    "diagonal_contrast_split",
]


class MinibatchCKA:
    """Accumulates unbiased-HSIC sums for a ``[num_layers_x, num_layers_y]`` CKA matrix.

    Args:
        num_layers_x: number of layers in the first model (rows).
        num_layers_y: number of layers in the second model (columns).
        dtype: accumulation and computation dtype (float64 by default; Grams are
            formed in it too, on the features' device, also under ``torch.autocast``).
        floor_seed: also accumulate the permutation floor (:meth:`compute_floor`): batch ``b``'s
            second-model examples are re-paired by :func:`~kdbias.losses.cka.unpaired_order` drawn
            from a CPU ``torch.Generator`` seeded ``floor_seed`` at ``reset()`` (successive draws
            per batch). ``None``: no floor.

    Usage: ``reset()``, ``update(feats_x, feats_y)`` once per batch, ``compute()`` (and
    ``compute_floor()``).
    """

    def __init__(
        self, num_layers_x: int, num_layers_y: int, dtype: torch.dtype = torch.float64, floor_seed: int | None = None
    ) -> None:
        if num_layers_x < 1 or num_layers_y < 1:
            raise ValueError(f"need at least one layer per side, got {num_layers_x} and {num_layers_y}")
        self.num_layers_x = num_layers_x
        self.num_layers_y = num_layers_y
        self.dtype = dtype
        self.floor_seed = floor_seed
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self.floor_generator = None if self.floor_seed is None else torch.Generator().manual_seed(self.floor_seed)
        self.hsic_xy_floor: Tensor | None = None  # [Lx, Ly]
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
        with autocast_disabled(*feats_x, *feats_y):  # keep the Gram/HSIC products in self.dtype
            grams_x = self._grams(feats_x)
            grams_y = grams_x if feats_y is feats_x else self._grams(feats_y).to(grams_x.device)
            xy = _pairwise_unbiased_hsic(grams_x, grams_y)
            xx = unbiased_hsic(grams_x, grams_x)
            yy = xx if grams_y is grams_x else unbiased_hsic(grams_y, grams_y)
            if self.floor_generator is not None:
                perm = unpaired_order(n, self.floor_generator).to(grams_y.device)
                floor = _pairwise_unbiased_hsic(grams_x, grams_y[:, perm][:, :, perm])
                self.hsic_xy_floor = floor if self.hsic_xy_floor is None else self.hsic_xy_floor + floor
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

    def compute_floor(self) -> Tensor:
        """``[num_layers_x, num_layers_y]`` permutation-floor CKA (same denominator as :meth:`compute`)."""
        if self.floor_seed is None:
            raise RuntimeError("MinibatchCKA was built without floor_seed; pass one to accumulate the floor")
        if self.hsic_xy_floor is None:
            raise RuntimeError("MinibatchCKA.compute_floor() called before any update()")
        return self.hsic_xy_floor / torch.outer(self.hsic_xx, self.hsic_yy).sqrt()

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


Cell = tuple[int, int]


def depth_matched_cells(num_x: int, num_y: int) -> list[Cell]:
    """Cells ``(i, j)`` of a ``[num_x, num_y]`` layer-similarity matrix that match in relative depth.

    The depth mapping for models of different depth: row ``i`` (layer ``i`` of
    the ``num_x``-layer model, at relative depth ``i / (num_x - 1)``) is matched
    with column ``j(i) = round(i * (num_y - 1) / (num_x - 1))``, halves rounded
    up (exact integer arithmetic). One cell per row, in row order; first and
    last layers always match (``(0, 0)`` and ``(num_x - 1, num_y - 1)``). For a
    square matrix this is the ordinary diagonal ``(i, i)``. With
    ``num_x > num_y`` several rows share a column; with ``num_x < num_y`` some
    columns have no cell. Needs ``num_x, num_y >= 2``.
    """
    num_x, num_y = operator.index(num_x), operator.index(num_y)
    if num_x < 2 or num_y < 2:
        raise ValueError(f"relative depth needs at least 2 layers per side, got num_x={num_x}, num_y={num_y}")
    return [(i, (2 * i * (num_y - 1) + (num_x - 1)) // (2 * (num_x - 1))) for i in range(num_x)]


def cell_contrast(matrix: Tensor, cells: Iterable[Cell], exclude: Iterable[Cell] = ()) -> dict[str, float]:
    """Mean of chosen cells of a ``[Lx, Ly]`` matrix against the mean of the rest.

    Args:
        matrix: ``[Lx, Ly]`` tensor (or array-like), e.g. a CKA matrix; averaged in float64.
        cells: ``(row, col)`` pairs, 0-based (no negative indexing); duplicates count once.
        exclude: ``(row, col)`` pairs left out of both averages (e.g. cells trained
            directly); they need not be in ``cells``.

    Returns:
        ``{"on": mean over the set cells - exclude, "off": mean over every cell in
        neither cells nor exclude, "contrast": on - off}`` as Python floats, plus
        ``"n_on"`` and ``"n_off"``, the numbers of cells averaged (ints). Unweighted
        means over cells.

    Raises ``ValueError`` for a matrix that is not 2-D, a cell outside it, an
    empty ``cells``, or when the on or off set is empty after exclusion.
    """
    m = _as_matrix(matrix)
    on_all = _cell_mask(cells, m.shape, "cells")
    if not on_all.any():
        raise ValueError("cells is empty; pass at least one (row, col) pair")
    excluded = _cell_mask(exclude, m.shape, "exclude")
    on, off = on_all & ~excluded, ~(on_all | excluded)
    if not on.any():
        raise ValueError("every cell in cells is also in exclude; nothing left to average")
    if not off.any():
        raise ValueError("cells and exclude cover the whole matrix; no off cells left to average")
    on_mean, off_mean = m[on].mean().item(), m[off].mean().item()
    return {
        "on": on_mean,
        "off": off_mean,
        "contrast": on_mean - off_mean,
        "n_on": int(on.sum()),
        "n_off": int(off.sum()),
    }


def diagonal_alignment(matrix: Tensor) -> dict[str, float]:
    """How strongly layers at the same relative depth match, for a ``[Lx, Ly]`` CKA matrix.

    The relative-depth diagonal is :func:`depth_matched_cells` ``(Lx, Ly)``: for
    each row ``i`` the column ``j(i) = round(i * (Ly - 1) / (Lx - 1))`` with halves
    rounded up (for a square matrix, the ordinary diagonal). Needs ``Lx, Ly >= 2``.
    The mapping goes from rows to columns, so for ``Lx != Ly`` the result for
    ``matrix.T`` generally differs.

    Returns:
        ``{"diag": mean of the Lx diagonal entries, "off_diag": mean of the other
        Lx * Ly - Lx entries, "contrast": diag - off_diag}`` as Python floats
        (:func:`cell_contrast` of the diagonal cells).
    """
    m = _as_matrix(matrix)
    if min(m.shape) < 2:
        raise ValueError(f"need a [Lx, Ly] matrix with Lx, Ly >= 2, got shape {tuple(m.shape)}")
    c = cell_contrast(m, depth_matched_cells(*m.shape))
    return {"diag": c["on"], "off_diag": c["off"], "contrast": c["contrast"]}


def diagonal_contrast_split(matrix: Tensor, trained_pairs: Iterable[Cell]) -> dict[str, float]:
    """:func:`diagonal_alignment` with directly trained layer pairs held out.

    For a student trained to align the pairs ``trained_pairs`` (e.g. EXP-3's
    ``(3, 3), (6, 6), (9, 9), (11, 11)`` on a 12 x 12 matrix), separates those
    cells from the alignment that emerged elsewhere. With ``D`` the
    depth-matched diagonal :func:`depth_matched_cells` ``(Lx, Ly)`` and ``T`` the
    set of trained pairs (which need not lie on ``D``):

    * ``trained``: mean over the cells of ``T``;
    * ``untrained_diag``: mean over ``D - T``;
    * ``off_diag``: mean over every cell in neither ``D`` nor ``T``;
    * ``untrained_contrast``: ``untrained_diag - off_diag``;
    * ``n_trained``, ``n_untrained_diag``, ``n_off``: numbers of cells in each mean (ints).

    Args:
        matrix: ``[Lx, Ly]`` CKA matrix, ``Lx, Ly >= 2``; averaged in float64.
        trained_pairs: 0-based ``(row, col)`` pairs; duplicates count once.

    Raises ``ValueError`` for an empty or out-of-range ``trained_pairs`` or when
    every diagonal cell is trained.
    """
    m = _as_matrix(matrix)
    if min(m.shape) < 2:
        raise ValueError(f"need a [Lx, Ly] matrix with Lx, Ly >= 2, got shape {tuple(m.shape)}")
    trained = _cell_mask(trained_pairs, m.shape, "trained_pairs")
    if not trained.any():
        raise ValueError("trained_pairs is empty; use diagonal_alignment for a student without trained pairs")
    trained_cells = [tuple(c) for c in trained.nonzero().tolist()]
    diag = depth_matched_cells(*m.shape)
    if all(trained[i, j] for i, j in diag):
        raise ValueError("every depth-matched diagonal cell is a trained pair; no untrained diagonal cell to average")
    split = cell_contrast(m, diag, exclude=trained_cells)
    return {
        "trained": m[trained].mean().item(),
        "untrained_diag": split["on"],
        "off_diag": split["off"],
        "untrained_contrast": split["contrast"],
        "n_trained": len(trained_cells),
        "n_untrained_diag": split["n_on"],
        "n_off": split["n_off"],
    }


def _as_matrix(matrix: Tensor) -> Tensor:
    m = torch.as_tensor(matrix).detach().to(device="cpu", dtype=torch.float64)
    if m.dim() != 2:
        raise ValueError(f"need a 2-D [Lx, Ly] matrix, got shape {tuple(m.shape)}")
    return m


def _cell_mask(cells: Iterable[Cell], shape: torch.Size, name: str) -> Tensor:
    """Boolean ``shape`` mask of ``cells``; ``ValueError`` for a malformed or out-of-range cell."""
    rows, cols = shape
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for cell in cells:
        try:
            i, j = (operator.index(k) for k in cell)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must hold (row, col) integer pairs, got {cell!r}") from err
        if not (0 <= i < rows and 0 <= j < cols):
            raise ValueError(f"{name} cell {(i, j)} is outside the [{rows}, {cols}] matrix (0-based indices)")
        mask[i, j] = True
    return mask


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
