"""Map batches from the dataset's normalisation to what a model expects."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class InputAdapter(nn.Module):
    """Re-normalise (and optionally resize) images on their device.

    Batches arrive normalised with the dataset's statistics ``(data_mean, data_std)``.
    A model trained with other statistics (ImageNet's for ConvNeXt V2 and DINOv2) needs
    ``x * (data_std / model_std) + (data_mean - model_mean) / model_std``; the adapter is
    an exact identity when both are equal and no resize is asked for.

    Args:
        data_mean, data_std: per-channel statistics of the incoming batches (3 floats each).
        model_mean, model_std: the model's statistics; ``None`` means the dataset's.
        image_size: side in pixels to resize to (bilinear), ``None`` to keep the input's.

    Shapes: ``[B, 3, H, W] -> [B, 3, image_size, image_size]`` (float, same dtype).
    """

    def __init__(
        self,
        data_mean: Sequence[float],
        data_std: Sequence[float],
        model_mean: Sequence[float] | None = None,
        model_std: Sequence[float] | None = None,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        data_mean_t = torch.tensor(data_mean, dtype=torch.float32).view(1, -1, 1, 1)
        data_std_t = torch.tensor(data_std, dtype=torch.float32).view(1, -1, 1, 1)
        model_mean_t = data_mean_t if model_mean is None else torch.tensor(model_mean).view(1, -1, 1, 1)
        model_std_t = data_std_t if model_std is None else torch.tensor(model_std).view(1, -1, 1, 1)
        self.renormalise = not (torch.equal(data_mean_t, model_mean_t) and torch.equal(data_std_t, model_std_t))
        self.register_buffer("scale", (data_std_t / model_std_t).float(), persistent=False)
        self.register_buffer("shift", ((data_mean_t - model_mean_t) / model_std_t).float(), persistent=False)
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.renormalise:
            x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        if self.image_size is not None and x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x
