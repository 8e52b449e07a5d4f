"""Feature and attention taps on timm ViTs, ResNets and ConvNeXts.

Blocks are numbered from 0 in forward order: a ViT's ``blocks``; every BasicBlock of a
ResNet (``layer1[0]`` ... ``layer4[1]``, 8 for ResNet-18); every block of every ConvNeXt
stage (3 + 3 + 9 + 3 = 18 for Tiny). Block outputs are ViT patch tokens [B, N, D]
(prefix tokens dropped, before the final norm) or CNN feature maps [B, C, H, W].
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from timm.models.convnext import ConvNeXt
from timm.models.resnet import ResNet
from timm.models.vision_transformer import VisionTransformer
from timm.utils import unwrap_model
from torch import Tensor, nn

_unwrap = unwrap_model  # the module under a ``torch.compile`` wrapper (hooks and timm methods live there)


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a timm VisionTransformer (DeiT, DINOv2)."""
    return isinstance(_unwrap(model), VisionTransformer)


def _require_vit(model: nn.Module, what: str) -> VisionTransformer:
    if not is_vit(model):
        raise TypeError(f"{what} needs a timm VisionTransformer, got {type(_unwrap(model)).__name__}")
    return _unwrap(model)


def block_modules(model: nn.Module) -> list[nn.Module]:
    """The model's blocks in forward order (see the module docstring)."""
    inner = _unwrap(model)
    if isinstance(inner, VisionTransformer):
        return list(inner.blocks)
    if isinstance(inner, ResNet):
        return [block for layer in (inner.layer1, inner.layer2, inner.layer3, inner.layer4) for block in layer]
    if isinstance(inner, ConvNeXt):
        return [block for stage in inner.stages for block in stage.blocks]
    raise TypeError(f"no block taps for {type(inner).__name__}; supported: VisionTransformer, ResNet, ConvNeXt")


def num_blocks(model: nn.Module) -> int:
    """Number of blocks ``block_modules`` returns."""
    return len(block_modules(model))


def check_block_indices(model: nn.Module, indices: Iterable[int]) -> list[int]:
    """``indices`` as a list of ints, each in 0..depth-1; ValueError otherwise."""
    depth = num_blocks(model)
    checked = []
    for index in indices:
        i = operator.index(index)
        if not 0 <= i < depth:
            raise ValueError(
                f"block index {i} is out of range for {type(_unwrap(model)).__name__} with {depth} blocks "
                f"(valid indices 0..{depth - 1}, negative indices not allowed)"
            )
        checked.append(i)
    return checked


def forward_features_and_blocks(model: nn.Module, x: Tensor, indices: Sequence[int]) -> tuple[Tensor, list[Tensor]]:
    """One forward pass: the model's output and the outputs of blocks ``indices``.

    x: [B, 3, H, W]. Returns (out, feats): ``out`` is what ``model(x)`` returns (logits
    [B, classes], or pooled features [B, D] for a headless model); ``feats[k]`` is the output
    of block ``indices[k]``: [B, N, D] patch tokens for a ViT, [B, C, H', W'] for a CNN.
    Outputs keep their autograd graph.
    """
    indices = check_block_indices(model, indices)
    if not indices:
        return model(x), []
    inner = _unwrap(model)
    if isinstance(inner, VisionTransformer):
        # timm returns intermediates in block order, once per block: map back to the request.
        wanted = sorted(set(indices))
        final, feats = inner.forward_intermediates(
            x, indices=wanted, output_fmt="NLC", norm=False, intermediates_only=False
        )
        by_index = dict(zip(wanted, feats))
        return inner.forward_head(final), [by_index[i] for i in indices]

    blocks = block_modules(inner)
    taken: dict[int, Tensor] = {}

    def keep(i: int):
        return lambda module, args, output: taken.__setitem__(i, output)

    handles = [blocks[i].register_forward_hook(keep(i)) for i in set(indices)]
    try:
        out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return out, [taken[i] for i in indices]


def block_outputs(model: nn.Module, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
    """Outputs of blocks ``indices`` (all blocks when None); shapes as in ``forward_features_and_blocks``."""
    if indices is None:
        indices = range(num_blocks(model))
    return forward_features_and_blocks(model, x, list(indices))[1]


@contextmanager
def materialized_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Run every attention layer of a ViT unfused, so that its softmax probabilities exist.

    timm's fused kernel (scaled_dot_product_attention) never forms them; the previous
    ``fused_attn`` flags are restored on exit, also after an exception.
    """
    attns = [block.attn for block in _require_vit(model, "materialized_attention").blocks]
    previous = [attn.fused_attn for attn in attns]
    try:
        for attn in attns:
            attn.fused_attn = False
        yield model
    finally:
        for attn, flag in zip(attns, previous):
            attn.fused_attn = flag


def attention_maps(model: nn.Module, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
    """Attention probabilities of blocks ``indices`` (all when None): [B, heads, T, T] each.

    T counts prefix tokens (CLS first); rows sum to 1. Taken before attention dropout, so
    in train mode too they are the softmax output. Wrap in ``torch.no_grad()`` for analysis.
    """
    vit = _require_vit(model, "attention_maps")
    indices = check_block_indices(vit, range(len(vit.blocks)) if indices is None else indices)
    if not indices:
        return []
    maps: dict[int, Tensor] = {}

    def keep(i: int):
        return lambda module, args: maps.__setitem__(i, args[0])

    with materialized_attention(vit):
        handles = [vit.blocks[i].attn.attn_drop.register_forward_pre_hook(keep(i)) for i in set(indices)]
        try:
            vit.forward_intermediates(x, indices=[max(indices)], stop_early=True, intermediates_only=True)
        finally:
            for handle in handles:
                handle.remove()
    return [maps[i] for i in indices]


def num_prefix_tokens_of(model: nn.Module) -> int:
    """Number of prefix (CLS, register, distillation) tokens ahead of the patch tokens."""
    return int(_require_vit(model, "num_prefix_tokens_of").num_prefix_tokens)


def patch_size_of(model: nn.Module) -> int:
    """Side of a (square) patch in input pixels."""
    size = _require_vit(model, "patch_size_of").patch_embed.patch_size
    height, width = (size, size) if isinstance(size, int) else size
    if height != width:
        raise ValueError(f"non-square patches {tuple(size)} have no single patch size")
    return int(height)


__all__ = [
    "attention_maps",
    "block_modules",
    "block_outputs",
    "check_block_indices",
    "forward_features_and_blocks",
    "is_vit",
    "materialized_attention",
    "num_blocks",
    "num_prefix_tokens_of",
    "patch_size_of",
]
