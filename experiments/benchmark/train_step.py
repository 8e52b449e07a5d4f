"""The training step, measured inside the real experiment Trainer and in a plain loop.

Per run (:func:`measure_run`): one fit of the experiment's real Trainer (every callback the
experiments attach; analytics off; measured steps are non-logging steps) of
``warmup + steps + sync_steps + read_steps`` steps, with :class:`StepProbe` appended to its
callbacks: it times ``steps`` steps after ``warmup``, then counts synchronising CUDA calls
over ``sync_steps`` steps (GPU), then Python-level host reads over ``read_steps`` steps.
FLOPs (whole step, teacher share) are counted before the fit on one batch of the run.

Lightning's overhead (:func:`measure_overhead`): the real Trainer vs :class:`PlainLoop`,
which does the same work by hand -- the DataModule's loader, the transfer, its on-device
``augment_batch``, the module's ``training_losses`` under the same autocast, the
``last_losses``/``train_acc`` bookkeeping of ``training_step``, backward, the module's own
optimiser and per-step schedule -- alternating A/B over rounds, median of paired rounds.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from kdbias.modules.base import hard_labels

from .experiment import Built, Plan, RunSpec, build, enlarge_train_split, fit, preset_model, release, run_overrides
from .measure import (
    CudaSyncCounter,
    HostReadCounter,
    StepClock,
    autocast,
    dynamo_counts,
    overhead_summary,
)
from .teacher_cost import step_flops


class StepProbe(Callback):
    """Times a window of steps, then counts CUDA syncs, then host reads (see the module docstring).

    Each window runs from one ``on_train_batch_end`` to a later one, so it spans whole loop
    iterations: fetch, transfer, augmentation, step, optimiser, schedule and every callback.
    """

    def __init__(self, clock: StepClock, sync_steps: int = 0, read_steps: int = 0) -> None:
        self.clock, self.sync_steps, self.read_steps = clock, sync_steps, read_steps
        self.cuda_syncs = CudaSyncCounter()
        self.reads = HostReadCounter()
        self.count = 0

    @property
    def total_steps(self) -> int:
        return self.clock.total_steps + self.sync_steps + self.read_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.tick()
        self.count += 1
        a = self.clock.total_steps
        b = a + self.sync_steps
        if self.sync_steps and self.count == a:
            self.cuda_syncs.start()
        if self.sync_steps and self.count == b:
            self.cuda_syncs.stop()
        if self.read_steps and self.count == b:
            self.reads.start()
        if self.read_steps and self.count == b + self.read_steps:
            self.reads.stop()

    def _stop(self) -> None:
        self.reads.stop()
        self.cuda_syncs.stop()

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._stop()

    def figures(self, batch_size: int) -> dict[str, Any]:
        step = self.clock.per_step()
        cpu = self.clock.cpu_per_step()
        syncs = self.cuda_syncs.count
        return {
            "ms_per_step": 1e3 * step,
            "cpu_ms_per_step": None if cpu is None else 1e3 * cpu,
            "images_per_s": batch_size / step,
            "host_syncs_per_step": None if syncs is None or not self.sync_steps else syncs / self.sync_steps,
            "host_sync_sites": self.cuda_syncs.examples or None,
            "host_reads_per_step": self.reads.total / self.read_steps if self.read_steps else None,
            "host_read_calls": (
                {"counted": dict(self.reads.sites), "cpu_bookkeeping_not_counted": dict(self.reads.ignored)}
                if self.read_steps
                else None
            ),
        }


def measure_run(
    spec: RunSpec, plan: Plan, teachers: dict[str, Any], compiled: bool = False, count: bool = True
) -> dict[str, Any]:
    """Figures of one run with compile off (``images_per_s`` ...) or on (``*_compiled``)."""
    sizes = plan.sizes
    warmup = sizes["compile_warmup"] if compiled else sizes["warmup"]
    # No host-read window with compile on: an active TorchFunctionMode is part of dynamo's guards
    # (it would recompile the graphs it counts); the reads are the eager code's anyway.
    reads = 0 if compiled else sizes["read_steps"]
    probe = StepProbe(StepClock(warmup, sizes["steps"], plan.device), sizes["sync_steps"], reads)
    overrides = run_overrides(spec, plan, probe.total_steps, compile=compiled, teachers=teachers)
    if compiled:  # the training step's graphs only: no sanity validation to compile (the train check has it)
        overrides["trainer.num_sanity_val_steps"] = 0
    built = build(spec, plan, overrides)
    datamodule, trainer = built.datamodule, built.trainer
    batch = datamodule.batch_size
    enlarge_train_split(datamodule, (probe.total_steps + 2) * batch)
    precision = str(trainer.precision)
    row: dict[str, Any] = {
        "batch_size": batch,
        "precision": precision,
        "built_by": built.built_by,
        "dataset": datamodule.dataset,
    }
    if count:
        row.update(step_flops(built.module, datamodule, plan.device, precision, batch))
    trainer.callbacks.append(probe)
    if plan.cuda:
        torch.cuda.reset_peak_memory_stats()
    before = dynamo_counts()
    start = time.perf_counter()
    fit(built, plan)
    fit_s = time.perf_counter() - start
    after = dynamo_counts()
    figures = probe.figures(batch)
    figures["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30 if plan.cuda else None
    figures["fit_s"] = fit_s
    if compiled:
        figures["compiled_graphs"] = after["unique_graphs"] - before["unique_graphs"]
        figures["compiled_frames"] = after["frames_total"] - before["frames_total"]
        figures["graph_breaks"] = after["graph_breaks"] - before["graph_breaks"]
        figures = {
            (k if k in ("compiled_graphs", "compiled_frames", "graph_breaks") else f"{k}_compiled"): v
            for k, v in figures.items()
        }
    row.update(figures)
    del built
    release(plan)
    return row


# -- Lightning vs a plain loop -------------------------------------------------------------------
def _optimizers(module: L.LightningModule, total_steps: int, max_epochs: int) -> tuple[Any, Any]:
    """The module's own ``configure_optimizers`` outside a Trainer (a stand-in gives the step count)."""
    module._trainer = SimpleNamespace(estimated_stepping_batches=total_steps, max_epochs=max_epochs)
    try:
        config = module.configure_optimizers()
    finally:
        module._trainer = None
    scheduler = config["lr_scheduler"]
    return config["optimizer"], scheduler["scheduler"] if isinstance(scheduler, dict) else scheduler


class PlainLoop:
    """The work of one Lightning training step, written out (see the module docstring)."""

    def __init__(self, built: Built, plan: Plan, total_steps: int) -> None:
        self.module, self.datamodule, self.device = built.module, built.datamodule, plan.device
        self.precision = str(built.trainer.precision)
        self.module.to(self.device).train()
        self.optimizer, self.scheduler = _optimizers(self.module, total_steps, built.trainer.max_epochs or 1)
        self.loader = self.datamodule.train_dataloader()
        self.iterator = iter(self.loader)

    def step(self) -> None:
        try:
            images, labels = next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            images, labels = next(self.iterator)
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        images, targets = self.datamodule.augment_batch(images, labels)
        module = self.module
        with autocast(self.device, self.precision):
            losses, logits = module.training_losses(images, targets)
        module.last_losses = {name: value.detach() for name, value in losses.items()}
        module.train_acc.update(logits.detach(), hard_labels(targets))
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        self.scheduler.step()

    def timed(self, warmup: int, steps: int) -> tuple[float, float | None]:
        clock = StepClock(warmup, steps, self.device)
        for _ in range(clock.total_steps):
            self.step()
            clock.tick()
        return clock.per_step(), clock.cpu_per_step()


_STEP_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
)


class HookTimer:
    """Wall time spent in each callback's per-step hooks (instance attributes wrap the methods
    the callback overrides; Lightning looks hooks up on the instance). Where the overhead goes."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.seconds: dict[str, float] = {}
        for callback in callbacks:
            name = type(callback).__name__
            for hook in _STEP_HOOKS:
                if getattr(type(callback), hook, None) is getattr(Callback, hook):
                    continue  # not overridden: Lightning's no-op
                self.seconds.setdefault(name, 0.0)
                setattr(callback, hook, self._wrap(getattr(callback, hook), name))

    def _wrap(self, fn: Any, name: str) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed


def _lightning_round(
    spec: RunSpec, plan: Plan, extra: dict[str, Any], warmup: int, steps: int, hooks: dict[str, float]
) -> tuple[float, Any]:
    clock = StepClock(warmup, steps, plan.device)
    built = build(spec, plan, {**run_overrides(spec, plan, clock.total_steps), **extra})
    enlarge_train_split(built.datamodule, (clock.total_steps + 2) * built.datamodule.batch_size)
    timer = HookTimer(built.trainer.callbacks)
    built.trainer.callbacks.append(StepProbe(clock))
    fit(built, plan)
    for name, seconds in timer.seconds.items():
        hooks[name] = hooks.get(name, 0.0) + seconds / clock.total_steps
    del built
    return clock.per_step(), clock.cpu_per_step()


def compare(spec: RunSpec, plan: Plan, extra: dict[str, Any], rounds: int, warmup: int, steps: int) -> dict[str, Any]:
    """Real Trainer vs plain loop on ``spec`` with ``extra`` overrides, A/B order alternated."""
    total = rounds * (max(1, warmup) + steps)
    built = build(spec, plan, {**run_overrides(spec, plan, total), **extra})
    batch = built.datamodule.batch_size
    enlarge_train_split(built.datamodule, (total + 2) * batch)
    plain = PlainLoop(built, plan, total)
    times: dict[str, list[float]] = {"lightning": [], "plain": []}
    cpu: dict[str, list[float]] = {"lightning": [], "plain": []}
    hooks: dict[str, float] = {}  # seconds per step in each callback's step hooks, summed over rounds
    for r in range(rounds):
        for side in ("lightning", "plain") if r % 2 == 0 else ("plain", "lightning"):
            if side == "plain":
                wall, cpu_s = plain.timed(warmup, steps)
            else:
                wall, cpu_s = _lightning_round(spec, plan, extra, warmup, steps, hooks)
            times[side].append(wall)
            if cpu_s is not None:
                cpu[side].append(cpu_s)
    out = overhead_summary(times["lightning"], times["plain"], batch, cpu["lightning"] or None, cpu["plain"] or None)
    out.update(
        experiment=spec.experiment,
        precision=plain.precision,
        built_by=built.built_by,
        timed_steps_per_round=steps,
        warmup_steps_per_round=warmup,
        callback_hook_ms_per_step={name: 1e3 * s / rounds for name, s in sorted(hooks.items(), key=lambda i: -i[1])},
    )
    del plain, built
    release(plan)
    return out


def measure_overhead(plan: Plan, spec: RunSpec) -> dict[str, Any]:
    """Lightning's per-step overhead on a tiny model (steps of a few ms, where it shows) and its
    ratio at the plan's model size (the baseline run's preset network and batch)."""
    s = plan.sizes
    tiny_kwargs = {"depth": 2, "embed_dim": 64, "num_heads": 2}
    tiny = compare(
        spec,
        plan,
        {"model.arch_kwargs": tiny_kwargs, "data.batch_size": s["overhead_batch"]},
        s["overhead_rounds"],
        s["overhead_warmup"],
        s["overhead_steps"],
    )
    tiny["model"] = f"deit_tiny_p4 with {tiny_kwargs}"
    preset_kwargs = preset_model(spec.experiment, plan.preset).get("arch_kwargs") or {}
    full = compare(
        spec, plan, {"model.arch_kwargs": preset_kwargs}, s["plan_rounds"], s["plan_warmup"], s["plan_steps"]
    )
    full["model"] = "deit_tiny_p4 (the plan's student)"
    return {"tiny": tiny, "plan_model": full}
