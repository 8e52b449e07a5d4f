"""Mean attention distance of the student's heads, layer by layer, during training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from typing_extensions import override

from kdbias.analytics.attention_distance import mean_attention_distance
from kdbias.callbacks.base import AnalyticsCallback, eval_mode
from kdbias.models import attention_maps, check_block_indices, is_vit, num_blocks, num_prefix_tokens_of, patch_size_of

__all__ = ["AttentionDistanceCallback"]


class AttentionDistanceCallback(AnalyticsCallback):
    """Per-head mean attention distance (pixels) of a ViT student on fixed validation images.

    For each layer ``i`` in ``layers`` (all blocks when ``None``), the student's attention
    probabilities ``[B, heads, T, T]`` on ``num_images`` fixed validation images (seeded
    subset, unaugmented, eval mode) go through
    :func:`~kdbias.analytics.mean_attention_distance`; images are processed in chunks of
    ``batch_size`` and the per-chunk means are weighted by the chunk's number of images, so
    the result equals the mean over all images at once.

    Logs ``attn_dist/layer_<i>`` (mean over heads) and ``attn_dist/layer_<i>/head_<h>``.
    ``summary_items()``: ``{"attn_dist": {"<i>": mean px}, "attn_dist_heads": {"<i>": [px per head]}}``.
    When it measures: see :mod:`kdbias.callbacks.base`.
    """

    def __init__(
        self,
        every_n_epochs: int = 10,
        num_images: int = 512,
        batch_size: int = 128,
        layers: Sequence[int] | None = None,
        subset_seed: int = 0,
    ) -> None:
        super().__init__(every_n_epochs, subset_seed)
        if num_images < 1 or batch_size < 1:
            raise ValueError(f"num_images and batch_size must be >= 1, got {num_images} and {batch_size}")
        self.num_images, self.batch_size = int(num_images), int(batch_size)
        self.layers = None if layers is None else [int(i) for i in layers]
        self.subsets = {"val": ("val", self.num_images)}

    def _key_items(self) -> dict[str, Any]:
        return {"num_images": self.num_images, "layers": self.layers}

    @override
    def check_module(self, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        if model is None or not is_vit(model):
            raise TypeError(
                "AttentionDistanceCallback needs a ViT student (a timm VisionTransformer at "
                f"pl_module.model), got {type(model).__name__}; attention distance is undefined for "
                "CNNs. Drop this callback for CNN runs (e.g. the teachers)."
            )
        if self.layers is not None:
            check_block_indices(model, self.layers)

    def layer_indices(self, pl_module: L.LightningModule) -> list[int]:
        return list(range(num_blocks(pl_module.model))) if self.layers is None else list(self.layers)

    @torch.no_grad()
    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[int, torch.Tensor]:
        """``{layer: [heads] float32 pixels}`` on the fixed images."""
        model = pl_module.model
        layers = self.layer_indices(pl_module)
        patch, prefix = patch_size_of(model), num_prefix_tokens_of(model)
        sums: dict[int, torch.Tensor] = {}
        total = 0
        with eval_mode(pl_module), trainer.precision_plugin.forward_context():
            for images, _ in self.chunks("val", self.batch_size, pl_module.device):
                maps = attention_maps(model, pl_module.student_input(images), layers)
                n = images.shape[0]
                for i, attn in zip(layers, maps):
                    d = mean_attention_distance(attn, patch, prefix).double() * n
                    sums[i] = d if i not in sums else sums[i] + d
                total += n
        return {i: (s / total).float().cpu() for i, s in sums.items()}

    @override
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        per_layer = self.compute(trainer, pl_module)
        metrics: dict[str, float] = {}
        means, heads = {}, {}
        for i, d in per_layer.items():
            values = [float(v) for v in d]
            means[str(i)] = float(d.mean())
            heads[str(i)] = values
            metrics[f"attn_dist/layer_{i}"] = means[str(i)]
            for h, v in enumerate(values):
                metrics[f"attn_dist/layer_{i}/head_{h}"] = v
        self.last = {"attn_dist": means, "attn_dist_heads": heads}
        return metrics

    @override
    def summary_items(self) -> dict[str, Any]:
        return {"attn_dist": self.last.get("attn_dist"), "attn_dist_heads": self.last.get("attn_dist_heads")}
