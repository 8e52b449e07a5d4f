"""A timed EXP-3 training run with compile on: peak memory, loss trend, recompiles.

The real experiment Trainer (paper preset: bf16-mixed, batch 512, DINOv2-S/14 at 224 px with
random weights offline, analytics off) trains for ``seconds`` of wall time (Lightning's
``max_time``, compilation included). Epochs are CIFAR-10's length (the digits tiled when
CIFAR-10 is not on disk), each closed by the held-out validation and the checkpoints, as
in a real run. Warm-up ends when the second epoch starts: by then the training graphs
(first step) and the evaluation graphs (sanity check and first validation) are compiled.
Dynamo's counters are read at fit start, after warm-up and at the end: anything compiled
after warm-up is a recompile. Losses stay on the device until the end (no host reads in
the loop); "falling" compares the means of the first and the last tenth of the steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from .experiment import Plan, RunSpec, build, fit, release, run_overrides
from .measure import dynamo_counts, sync, window_means


class LossTrace(Callback):
    """Keeps every step's detached loss on the device; snapshots time and dynamo's counters at
    fit start, at the start of every epoch (the first after training: warm-up) and at the end.
    ``progress(summary)`` is called at every epoch start: a time-out still leaves figures."""

    def __init__(self, device: torch.device, progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.device, self.progress = device, progress
        self.losses: list[torch.Tensor] = []
        self.start: dict[str, Any] | None = None
        self.warm: dict[str, Any] | None = None
        self.end: dict[str, Any] | None = None

    def _snapshot(self) -> dict[str, Any]:
        sync(self.device)
        return {"time": time.perf_counter(), "step": len(self.losses), "dynamo": dynamo_counts()}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.start = self._snapshot()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(pl_module.last_losses["loss"])

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if not self.losses:
            return
        now = self._snapshot()
        if self.warm is None:
            self.warm = now
        if self.progress is not None:
            self.progress(self.summary(now, batch=trainer.datamodule.batch_size))

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = self._snapshot()

    def summary(self, end: dict[str, Any] | None, batch: int) -> dict[str, Any]:
        """Loss trend, throughput after warm-up and dynamo's counters up to ``end``."""
        losses = torch.stack(self.losses).float().cpu().tolist() if self.losses else []
        out: dict[str, Any] = dict.fromkeys(
            ("loss_first", "loss_last", "loss_falling", "finite", "warmup_s", "images_per_s_after_warmup",
             "dynamo_at_warmup", "dynamo_at_end", "graphs_after_warmup", "frames_after_warmup",
             "no_recompiles_after_warmup")
        )  # fmt: skip
        out["steps"] = len(losses)
        if losses:
            first, last = window_means(losses)
            falling, finite = bool(last < first), all(math.isfinite(v) for v in losses)
            out.update(loss_first=first, loss_last=last, loss_falling=falling, finite=finite)
        if self.start and end:
            out["dynamo_at_end"] = _delta(self.start["dynamo"], end["dynamo"])
        if self.start and self.warm and end:
            out["warmup_s"] = self.warm["time"] - self.start["time"]
            out["dynamo_at_warmup"] = _delta(self.start["dynamo"], self.warm["dynamo"])
            after = _delta(self.warm["dynamo"], end["dynamo"])
            out["graphs_after_warmup"] = after["unique_graphs"]
            out["frames_after_warmup"] = after["frames_total"]
            out["no_recompiles_after_warmup"] = after["unique_graphs"] == 0 and after["frames_total"] == 0
            steps, elapsed = end["step"] - self.warm["step"], end["time"] - self.warm["time"]
            out["images_per_s_after_warmup"] = steps * batch / elapsed if steps and elapsed > 0 else None
        return out


def _delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {key: b[key] - a[key] for key in b}


def train_check(
    plan: Plan, seconds: float, epoch_steps: int, progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    spec = RunSpec("exp3_224", "exp3", 224)
    overrides = run_overrides(spec, plan, -1, compile=True)
    overrides.pop("trainer.log_every_n_steps")  # the preset's logging, as in a real run
    whole = int(seconds)
    overrides["trainer.max_time"] = f"00:{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
    if plan.dry_run:
        overrides["trainer.max_epochs"] = 1000  # the smoke preset's 3 epochs would end it early
    torch._dynamo.reset()
    built = build(spec, plan, overrides)
    dm = built.datamodule
    batch = dm.batch_size
    dm.setup("fit")
    images = epoch_steps * batch  # the digits tiled (or CIFAR-10 cut) to an epoch of epoch_steps steps
    reps = math.ceil(images / len(dm.train_labels))
    dm.train_images = dm.train_images.repeat(reps, 1, 1, 1)[:images].contiguous()
    dm.train_labels = dm.train_labels.repeat(reps)[:images].contiguous()
    about: dict[str, Any] = {
        "run": spec.name,
        "seconds": seconds,
        "batch_size": batch,
        "precision": str(built.trainer.precision),
        "compile": True,
        "compile_backend": plan.compile_backend or "inductor",
        "teacher": "dinov2_vits14 @ 224 px, random weights (offline)",
        "analytics": "off",
        "built_by": built.built_by,
        "dataset": dm.dataset,
        "epoch_steps": len(dm.train_labels) // batch,
    }

    def peak() -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if plan.cuda else None

    def report(summary: dict[str, Any]) -> None:
        if progress is not None:
            progress({**about, **summary, "peak_mem_gib": peak(), "status": "running (partial: killed by its limit?)"})

    trace = LossTrace(plan.device, report)
    built.trainer.callbacks.append(trace)
    if plan.cuda:
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    fit(built, plan)
    out = {
        **about,
        "fit_wall_s": time.perf_counter() - began,
        "peak_mem_gib": peak(),
        **trace.summary(trace.end, batch),
    }
    out["epochs"] = out["steps"] / max(1, about["epoch_steps"])
    del built
    release(plan)
    return out
