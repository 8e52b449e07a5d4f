"""What the teacher costs: its share of a training step's FLOPs, and DINOv2 at 224 vs 112 px.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (:func:`.measure.count_flops`):
a whole step is the module's ``training_losses`` (teacher forward included) plus the
backward, on one augmented batch of the run's DataModule; the teacher's part is the same
teacher call the step makes (``teacher.logits`` for soft KL, the block taps
``teacher_tokens`` for EXP-3).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import lightning as L
import torch

from kdbias.data import CIFARDataModule

from .experiment import TINY_KWARGS, TINY_LAYER_PAIRS, Plan, preset_model
from .measure import autocast, count_flops, sync


def step_flops(
    module: L.LightningModule, datamodule: CIFARDataModule, device: torch.device, precision: str, batch: int
) -> dict[str, float]:
    """GFLOP per image of a whole training step and of its teacher forward, and the share."""
    module.to(device).train()
    datamodule.setup("fit")
    images, labels = datamodule.train_images[:batch].to(device), datamodule.train_labels[:batch].to(device)
    x, y = datamodule.augment_batch(images, labels)

    def step() -> None:
        with autocast(device, precision):
            losses, _ = module.training_losses(x, y)
        losses["loss"].backward()

    total = count_flops(step)
    module.zero_grad(set_to_none=True)
    teacher_flops = 0
    if getattr(module, "teacher", None) is not None:
        call = module.teacher_tokens if hasattr(module, "teacher_tokens") else module.teacher.logits
        with torch.no_grad(), autocast(device, precision):
            teacher_flops = count_flops(lambda: call(x))
    n = len(labels)
    return {
        "gflop_per_image": total / n / 1e9,
        "teacher_gflop_per_image": teacher_flops / n / 1e9,
        "teacher_flop_share": teacher_flops / total if total else None,
    }


def dinov2_tradeoff(plan: Plan) -> dict[str, Any]:
    """EXP-3's frozen DINOv2-S/14 at 224 vs 112 px: ms per batch and GFLOP per image of the
    block taps a step computes (the preset's teacher blocks), at EXP-3's batch and precision."""
    from kdbias.teacher import FrozenTeacher

    model = preset_model("exp3", plan.preset)
    pairs = TINY_LAYER_PAIRS if plan.tiny else model.get("layer_pairs") or [[11, 11]]
    blocks = [int(t) for _, t in pairs]
    kwargs = TINY_KWARGS["dinov2_vits14"] if plan.tiny else dict(model.get("teacher_kwargs") or {})
    batch, device = plan.sizes["dinov2_batch"], plan.device
    precision = "bf16-mixed" if plan.cuda else "32-true"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=generator).to(device)  # dataset-normalised images
    teachers = {}
    for size in (224, 112):
        teacher = FrozenTeacher.from_pretrained("dinov2_vits14", None, plan.dataset, size, kwargs)
        teachers[size] = teacher.to(device)

    def forward(size: int, images: torch.Tensor) -> Any:
        with torch.no_grad(), autocast(device, precision):
            return teachers[size].blocks(images, blocks)

    out: dict[str, Any] = {
        "batch_size": batch,
        "precision": precision,
        "teacher_blocks": blocks,
        "teacher_kwargs": kwargs or None,
        "weights": "random (offline; speed does not depend on them)",
    }
    flop_batch = min(batch, 8)
    for size in (224, 112):
        out[str(size)] = {"gflop_per_image": count_flops(lambda s=size: forward(s, x[:flop_batch])) / flop_batch / 1e9}
        for _ in range(2 if plan.cuda else 1):
            forward(size, x)  # warm-up (cuDNN/cuBLAS heuristics, allocator)
    times: dict[int, list[float]] = {224: [], 112: []}
    for rep in range(plan.sizes["dinov2_reps"]):
        for size in (224, 112) if rep % 2 == 0 else (112, 224):
            sync(device)
            start = time.perf_counter()
            forward(size, x)
            sync(device)
            times[size].append(time.perf_counter() - start)
    for size in (224, 112):
        ms = 1e3 * statistics.median(times[size])
        out[str(size)].update(ms_per_batch=ms, images_per_s=batch / (ms / 1e3))
    out["speedup_112_vs_224"] = out["224"]["ms_per_batch"] / out["112"]["ms_per_batch"]
    out["flop_ratio_224_vs_112"] = out["224"]["gflop_per_image"] / out["112"]["gflop_per_image"]
    return out
