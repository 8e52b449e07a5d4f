"""Block outputs of any teacher as patch tokens on a common grid, and layer pairing by relative depth.

A ViT block gives patch tokens ``[B, N, D]`` on a square ``sqrt(N) x sqrt(N)`` grid; a CNN
block (ResNet BasicBlock, ConvNeXt block) a map ``[B, C, H, W]``, read as ``H * W`` tokens
of width ``C`` (row-major, like a ViT's). Two block outputs are compared on the coarser of
their two grids, the finer one average-pooled to it (:func:`to_tokens`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbias.losses.token import pool_tokens_to_grid

__all__ = [
    "RELATIVE",
    "REFERENCE_STUDENT_BLOCKS",
    "relative_depth_pairs",
    "resolve_layer_pairs",
    "to_tokens",
    "token_shapes",
    "token_side",
]

#: ``layer_pairs="relative"``: pair blocks by relative depth (:func:`relative_depth_pairs`).
RELATIVE = "relative"
#: Student blocks of a 12-block student that ``"relative"`` pairs (EXP-3's student blocks).
REFERENCE_STUDENT_BLOCKS = (3, 6, 9, 11)
_REFERENCE_DEPTH = 12


def token_side(features: Tensor) -> int:
    """Side of the square token grid of ``[B, N, D]`` tokens or a ``[B, C, H, W]`` map."""
    if features.dim() == 4:
        if features.shape[-1] != features.shape[-2]:
            raise ValueError(f"feature map {tuple(features.shape)} is not square")
        return int(features.shape[-1])
    if features.dim() == 3:
        side = math.isqrt(features.shape[1])
        if side * side != features.shape[1]:
            raise ValueError(f"{features.shape[1]} tokens do not form a square grid")
        return side
    raise ValueError(f"expected tokens [B, N, D] or a map [B, C, H, W], got {tuple(features.shape)}")


def to_tokens(features: Tensor, grid: int) -> Tensor:
    """Tokens ``[B, grid * grid, width]`` of a block output, average-pooled to ``grid x grid``.

    ``features``: ViT patch tokens ``[B, N, D]`` (pooled by
    :func:`~kdbias.losses.pool_tokens_to_grid`) or a CNN map ``[B, C, H, W]`` (adaptive
    average pooling of ``H x W`` to ``grid x grid``, block means when ``grid`` divides ``H``,
    then flattened row-major: token ``i * grid + j`` is cell ``(i, j)``). ``1 <= grid <= side``.
    """
    if features.dim() == 3:
        return pool_tokens_to_grid(features, grid)
    side = token_side(features)
    if not 1 <= grid <= side:
        raise ValueError(f"cannot pool a {side}x{side} map to {grid}x{grid}; grid must be in [1, {side}]")
    pooled = features if grid == side else F.adaptive_avg_pool2d(features, grid)
    return pooled.flatten(2).transpose(1, 2)


def relative_depth_pairs(
    student_blocks: Sequence[int], student_depth: int, teacher_depth: int
) -> list[tuple[int, int]]:
    """``[(s, t), ...]``: each student block ``s`` (0-based, of ``student_depth``) with the teacher
    block at the same relative depth, ``t = round((s + 1) * teacher_depth / student_depth) - 1``
    (halves round up), so the last block pairs with the last. DeiT-Tiny (12) blocks 3, 6, 9, 11
    -> ResNet-18 (8 BasicBlocks) 2, 4, 6, 7 (``layer2[0]``, ``layer3[0]``, ``layer4[0]``,
    ``layer4[1]``); -> DINOv2-S (12) 3, 6, 9, 11."""
    if student_depth < 1 or teacher_depth < 1:
        raise ValueError(f"depths must be >= 1, got {student_depth} and {teacher_depth}")
    pairs = []
    for s in student_blocks:
        if not 0 <= s < student_depth:
            raise ValueError(f"student block {s} is out of range for {student_depth} blocks")
        t = math.floor((s + 1) * teacher_depth / student_depth + 0.5) - 1
        pairs.append((int(s), min(max(t, 0), teacher_depth - 1)))
    return pairs


def resolve_layer_pairs(
    layer_pairs: Sequence[Sequence[int]] | str, student_depth: int, teacher_depth: int
) -> list[tuple[int, int]]:
    """Explicit ``[(s, t), ...]`` as ints, or ``"relative"``: :data:`REFERENCE_STUDENT_BLOCKS` (of a
    12-block student; for another depth each at its relative depth, duplicates dropped) paired by
    :func:`relative_depth_pairs`."""
    if isinstance(layer_pairs, str):
        if layer_pairs != RELATIVE:
            raise ValueError(f"layer_pairs must be a list of (student, teacher) pairs or {RELATIVE!r}")
        scaled = [math.floor((s + 1) * student_depth / _REFERENCE_DEPTH + 0.5) - 1 for s in REFERENCE_STUDENT_BLOCKS]
        blocks = sorted({min(max(s, 0), student_depth - 1) for s in scaled})
        return relative_depth_pairs(blocks, student_depth, teacher_depth)
    return [(int(s), int(t)) for s, t in layer_pairs]


@torch.no_grad()
def token_shapes(
    blocks_fn, image_size: int, indices: Sequence[int], like: nn.Module | None = None
) -> list[tuple[int, int]]:
    """``[(side, width), ...]`` of the block outputs ``blocks_fn(images, indices)`` returns for two
    zero images ``[2, 3, image_size, image_size]`` (on ``like``'s device and dtype when given)."""
    reference = next(like.parameters(), None) if like is not None else None
    kwargs = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
    outputs = blocks_fn(torch.zeros(2, 3, image_size, image_size, **kwargs), list(indices))
    return [(token_side(o), int(o.shape[1] if o.dim() == 4 else o.shape[-1])) for o in outputs]
