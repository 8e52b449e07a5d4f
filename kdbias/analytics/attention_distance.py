"""Mean attention distance of ViT heads (Dosovitskiy et al. 2021, fig. 7).

A head's attention distance is the attention-weighted mean distance, in input
pixels, between a query patch and the patches it attends to: small for heads
that behave like convolutions, large for global heads.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = ["grid_distances", "mean_attention_distance"]


@functools.lru_cache(maxsize=16)
def grid_distances(grid: int, patch_size: float, device: torch.device | str = "cpu") -> Tensor:
    """Pairwise distances between the patches of a ``grid x grid`` patch grid.

    Patches are numbered row-major (token ``i`` sits at row ``i // grid``,
    column ``i % grid``), as in timm's ViTs.

    Returns:
        ``[grid**2, grid**2]`` float32 tensor on ``device``: ``patch_size`` times
        the Euclidean distance between grid positions, i.e. pixels between patch
        centres. Cached per ``(grid, patch_size, device)``; do not modify in place.
    """
    idx = torch.arange(grid, device=device, dtype=torch.float32)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    coords = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=-1)  # [N, 2]
    return torch.cdist(coords, coords) * float(patch_size)


def mean_attention_distance(attn: Tensor, patch_size: float, num_prefix_tokens: int = 1) -> Tensor:
    """Mean attention distance per head, in pixels.

    Args:
        attn: ``[B, heads, T, T]`` attention probabilities (rows sum to 1) with
            ``T = num_prefix_tokens + grid**2`` on a square grid. Any float dtype
            (bf16 included); the computation runs in float32.
        patch_size: side of one patch in input pixels.
        num_prefix_tokens: leading non-patch tokens (CLS, distillation, registers).

    Prefix query rows and prefix key columns are dropped and the remaining rows
    are *not* renormalised, so attention mass a query puts on the prefix tokens
    contributes zero distance. Per query ``q``:
    ``d(q) = sum_k attn[q, k] * patch_size * ||pos(q) - pos(k)||``.

    Returns:
        ``[heads]`` float32 tensor: ``d(q)`` averaged over all patch queries and all
        ``B`` images, in pixels.
    """
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(
            f"attn must have shape [B, heads, T, T], got {tuple(attn.shape)}; "
            "pass the softmax output of one attention layer"
        )
    if num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
    tokens = attn.shape[-1]
    num_patches = tokens - num_prefix_tokens
    if num_patches <= 0:
        raise ValueError(
            f"attn has T={tokens} tokens but num_prefix_tokens={num_prefix_tokens}; "
            "there must be at least one patch token"
        )
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(
            f"T - num_prefix_tokens = {num_patches} patch tokens is not a square grid; "
            "check num_prefix_tokens (1 for CLS, 2 with a distillation token)"
        )
    dist = grid_distances(grid, float(patch_size), attn.device)
    patches = attn[:, :, num_prefix_tokens:, num_prefix_tokens:].float()
    per_query = torch.einsum("bhqk,qk->bhq", patches, dist)  # [B, heads, N]
    return per_query.mean(dim=(0, 2))
