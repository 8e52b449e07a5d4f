"""Patch-token alignment: cosine distance between matching student and teacher tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbias.losses._precision import autocast_disabled

__all__ = ["pool_tokens_to_grid", "token_loss"]


def token_loss(student_tokens: Tensor, teacher_tokens: Tensor) -> Tensor:
    """Mean cosine distance ``1 - cos(s_bn, t_bn)`` between matching tokens.

    Args:
        student_tokens: ``[B, N, D]`` patch tokens, already projected to the teacher's width.
        teacher_tokens: ``[B, N, D]`` patch tokens on the same grid (see
            :func:`pool_tokens_to_grid`); not detached here.

    Returns:
        Scalar tensor in ``[0, 2]``, averaged over the ``B`` images and ``N``
        tokens: 0 for parallel tokens, 1 for orthogonal, 2 for opposite. A zero
        vector counts as orthogonal to everything. Computed and returned in float32
        (bf16/fp16 inputs are cast up; float64 inputs stay float64), also under
        ``torch.autocast``, which is disabled inside.
    """
    if student_tokens.shape != teacher_tokens.shape or student_tokens.dim() != 3:
        raise ValueError(
            "student and teacher tokens must both be [B, N, D] with equal shapes, got "
            f"{tuple(student_tokens.shape)} and {tuple(teacher_tokens.shape)}; project the "
            "student to the teacher's width and pool both to one grid with pool_tokens_to_grid"
        )
    with autocast_disabled(student_tokens, teacher_tokens):
        dtype = torch.float64 if torch.float64 in (student_tokens.dtype, teacher_tokens.dtype) else torch.float32
        cos = F.cosine_similarity(student_tokens.to(dtype), teacher_tokens.to(dtype), dim=-1, eps=1e-8)
        return (1.0 - cos).mean()


def pool_tokens_to_grid(tokens: Tensor, grid: int) -> Tensor:
    """Average-pool patch tokens from a square ``h x h`` grid down to ``grid x grid``.

    Args:
        tokens: ``[B, N, D]`` patch tokens only (drop CLS/register tokens first),
            row-major on a square grid, ``N = h * h``.
        grid: target side, ``1 <= grid <= h``.

    Returns:
        ``[B, grid * grid, D]`` in the input dtype, row-major: adaptive average pooling
        over the spatial grid (plain ``h / grid`` block means when ``grid`` divides
        ``h``, e.g. 16x16 -> 8x8 averages 2x2 blocks). ``tokens`` itself when ``grid == h``.
    """
    b, n, d = tokens.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} tokens do not form a square grid; pass patch tokens only (drop prefix tokens)")
    if not 1 <= grid <= side:
        raise ValueError(
            f"cannot pool a {side}x{side} token grid to {grid}x{grid}; grid must be in [1, {side}] "
            "(pool the finer of the two token sets to the coarser grid)"
        )
    if grid == side:
        return tokens
    maps = tokens.transpose(1, 2).reshape(b, d, side, side)
    pooled = F.adaptive_avg_pool2d(maps, grid)
    return pooled.flatten(2).transpose(1, 2)
