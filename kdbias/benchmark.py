"""Throughput and overhead of every run of the experiment matrix, measured side by side.

``python -m kdbias.benchmark --smoke --json bench.json`` (CPU, a few minutes: batch 16, one
thread, one timed step per round and side) or, on a GPU,
``python -m kdbias.benchmark --json bench.json [--compile]`` at the plan's per-GPU batches.

For each run (``teacher_resnet18``, ``teacher_convnextv2``, ``baseline``, ``exp1``, ``exp2``,
``exp3_224``, ``exp3_112``) at the plan's model sizes (random weights: throughput does not
depend on them) the benchmark measures, in one process:

- the images/s of the WHOLE training step (loader -> device -> on-device augmentation ->
  teacher forward -> student forward/backward -> optimiser and schedule step) twice: inside a
  real ``Trainer.fit`` (no validation, logger, checkpointing, progress bar or model summary;
  a callback stamps the end of every step after ``warmup`` steps) and in a plain PyTorch loop
  doing the same work with the same module's ``training_losses``, optimiser, schedule and
  augmentation. The two alternate (``L P``, ``P L``, ...) for ``rounds`` rounds;
  ``lightning_overhead_ratio`` = median over rounds of (Lightning time per step / plain time
  per step), a step's time being the median of its intervals on a CPU and the synchronised
  window / steps on a GPU; on a CPU ``lightning_overhead_ratio_cpu_time`` is the same from
  the process's CPU time, which other jobs on a shared machine disturb less. The top-level
  figures are medians over the runs;
- FLOPs per image from ``torch.utils.flop_counter.FlopCounterMode`` on one small batch:
  student forward + backward plus teacher forward (CPU flash attention included);
- on a GPU, the model-FLOP utilisation against a bf16 ``n x n`` matmul rate measured in the
  same process;
- host syncs: Python-level ``.item()``-like calls during augmentation + ``training_losses``
  (and, on a GPU, synchronising CUDA calls of a whole step, via ``torch.cuda.set_sync_debug_mode``).

Besides the runs: kdbias's data path (uint8 tensors, batched augmentation with
``CIFARDataModule.augment_batch``) against torchvision's per-sample pipeline over PIL images
(``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``, same
worker count): ``data_speedup_vs_torchvision``; and the DINOv2 teacher at 224 vs 112 px.

``--train-check SECONDS`` instead trains one run for that long (bf16 on a GPU) and reports the
peak memory and whether the loss falls.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kdbias.data import CIFARDataModule
from kdbias.data.cifar import DatasetNotFoundError, load_cifar
from kdbias.data.datasets import load_digits_split
from kdbias.experiment import TRAINING_DEFAULTS
from kdbias.models import build_model
from kdbias.modules.cka_distill import CKADistillModule
from kdbias.models.input_adapter import InputAdapter
from kdbias.modules.kl_distill import KLDistillModule
from kdbias.modules.teacher import TeacherModule
from kdbias.recipes import RECIPES

SCHEMA_VERSION = 1

__all__ = [
    "RUNS",
    "BenchConfig",
    "HostSyncCounter",
    "count_flops",
    "main",
    "median_ratio",
    "overhead_summary",
    "run_benchmark",
    "step_time",
    "train_check",
]


# -- the experiment matrix ----------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One run of the matrix: which recipe's paper preset, which student and teacher."""

    name: str
    recipe: str
    kind: str  # "supervised" | "kl" | "cka"
    model: str
    teacher: str | None = None
    teacher_image_size: int | None = None


RUNS: dict[str, RunSpec] = {
    spec.name: spec
    for spec in (
        RunSpec("teacher_resnet18", "teacher_resnet18", "supervised", "resnet18_cifar"),
        RunSpec("teacher_convnextv2", "teacher_convnextv2", "supervised", "convnextv2_tiny_cifar"),
        RunSpec("baseline", "baseline", "supervised", "deit_tiny_p4"),
        RunSpec("exp1", "exp1", "kl", "deit_tiny_p4", "resnet18_cifar"),
        RunSpec("exp2", "exp2", "kl", "deit_tiny_p4", "convnextv2_tiny_cifar"),
        RunSpec("exp3_224", "exp3", "cka", "deit_tiny_p4", "dinov2_vits14", 224),
        RunSpec("exp3_112", "exp3", "cka", "deit_tiny_p4", "dinov2_vits14", 112),
    )
}
ALIASES = {"exp3": ("exp3_224", "exp3_112"), "teachers": ("teacher_resnet18", "teacher_convnextv2")}
TINY_VIT = {"depth": 2}  # --tiny: ViT students and the DINOv2 teacher shrink to 2 blocks
TINY_LAYER_PAIRS = ((0, 0), (1, 1))


def parse_runs(text: str | Sequence[str]) -> list[str]:
    """``"baseline,exp3"`` -> ``["baseline", "exp3_224", "exp3_112"]`` (``all`` = every run)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    out: list[str] = []
    for name in names:
        expanded = tuple(RUNS) if name == "all" else ALIASES.get(name, (name,))
        for run in expanded:
            if run not in RUNS:
                raise ValueError(f"unknown run {run!r}; choose from {', '.join([*RUNS, *ALIASES, 'all'])}")
            if run not in out:
                out.append(run)
    return out


def paper_settings(spec: RunSpec) -> dict[str, Any]:
    """The recipe's paper preset merged over the experiment defaults."""
    return {**TRAINING_DEFAULTS, **RECIPES[spec.recipe].paper}


# -- configuration --------------------------------------------------------------------------
@dataclass
class BenchConfig:
    """Everything the benchmark does; ``None`` sizes resolve per device (see ``resolve``)."""

    runs: list[str] = field(default_factory=lambda: list(RUNS))
    device: str = "auto"
    smoke: bool = False
    compile: bool = False
    precision: str = "auto"  # bf16-mixed on a GPU, 32-true on a CPU
    batch_size: int | None = None  # None: the plan's per-GPU batch on a GPU, 16 (smoke) / 64 on a CPU
    warmup: int | None = None  # untimed steps at the start of every measured round
    steps: int | None = None  # timed steps per round and side
    rounds: int | None = None  # Lightning/plain alternations per run
    prime: int | None = None  # untimed plain steps before the first round (compilation, autotuning)
    num_workers: int | None = None
    data: str = "auto"  # auto | cifar10 | digits | synthetic
    data_dir: str = "data"
    data_bench: bool = True
    data_batch: int | None = None
    data_batches: int | None = None
    data_reps: int | None = None
    data_threads: int | None = None  # torch threads of the data comparison (CPU default 1: see --data-threads)
    dinov2: bool = True
    dinov2_reps: int | None = None
    flop_batch: int | None = None  # images of the FLOP-counting batch (default 4; 2 in a CPU smoke)
    sync_check: bool | None = None  # count host syncs in one extra step per run (default: not in a CPU smoke)
    matmul_size: int = 8192
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    teacher_weights: str | None = None  # local DINOv2 weights file for the exp3 runs (None: random)
    tiny: bool = False  # 2-block ViTs: for tests of the benchmark itself
    time_budget_s: float | None = None  # skip the remaining runs once exceeded
    json_path: str | None = None

    def resolve(self) -> BenchConfig:
        cuda = self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
        self.device = "cuda" if cuda else "cpu"
        if self.threads is None and self.smoke and not cuda:
            # On a CPU shared with other jobs, intra-op threads wait for one another at every op
            # (a descheduled thread stalls the rest): one thread measures the work, not the scheduler.
            self.threads = 1
        if self.sync_check is None:
            self.sync_check = cuda or not self.smoke
        if self.precision == "auto":
            self.precision = "bf16-mixed" if cuda else "32-true"
        defaults = (
            dict(warmup=3, steps=10, rounds=3, prime=3 if not self.compile else 4, num_workers=4,
                 data_batches=20, data_reps=3, dinov2_reps=5)
            if cuda
            else dict(warmup=1, steps=1 if self.smoke else 3, rounds=3, prime=2 if self.compile else 0,
                      num_workers=0, data_batches=10 if self.smoke else 20, data_reps=3 if self.smoke else 5,
                      dinov2_reps=1 if self.smoke else 2)
        )
        if self.flop_batch is None:
            self.flop_batch = 2 if self.smoke and not cuda else 4
        if self.data_threads is None and not cuda:
            self.data_threads = 1
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.runs = parse_runs(self.runs)
        return self

    def batch_for(self, spec: RunSpec) -> int:
        if self.batch_size is not None:
            return self.batch_size
        if self.device == "cuda":
            return int(paper_settings(spec)["batch_size"])
        return 16 if self.smoke else 64

    def data_batch_size(self) -> int:
        if self.data_batch is not None:
            return self.data_batch
        if self.device == "cuda":
            return int(paper_settings(RUNS["baseline"])["batch_size"])
        return 128


# -- measurement helpers -------------------------------------------------------------------
def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class StepClock:
    """Stamps the end of steps ``warmup .. warmup + steps`` (``steps`` intervals).

    On a GPU only the window's two ends synchronise (the host may run ahead inside it, as in
    training); per-step intervals are then not meaningful and only the window is used. On a
    CPU the process's CPU time is stamped too: unlike wall time it does not grow while other
    processes hold the cores, so on a shared machine it is the steadier measure of work.
    """

    def __init__(self, warmup: int, steps: int, device: torch.device | str) -> None:
        self.warmup, self.steps = max(1, warmup), steps
        self.cuda = torch.device(device).type == "cuda"
        self.count = 0
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []

    def tick(self) -> None:
        self.count += 1
        if self.count < self.warmup or self.count > self.warmup + self.steps:
            return
        if self.cuda and self.count in (self.warmup, self.warmup + self.steps):
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        self.cpu_stamps.append(time.process_time())

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    def intervals(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]

    def per_step(self) -> float:
        return step_time(self.intervals(), windowed=self.cuda)

    def cpu_per_step(self) -> float | None:
        """Median process CPU seconds per step (CPU only: on a GPU the host runs ahead)."""
        if self.cuda:
            return None
        return step_time([b - a for a, b in zip(self.cpu_stamps, self.cpu_stamps[1:])])


def step_time(intervals: Sequence[float], windowed: bool = False) -> float:
    """Seconds per step: the median interval, or the mean over the window when ``windowed``."""
    if not intervals:
        raise ValueError("no timed steps: increase --steps")
    return sum(intervals) / len(intervals) if windowed else statistics.median(intervals)


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the pairwise ratios ``numerators[i] / denominators[i]`` (paired rounds)."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("need the same non-zero number of paired measurements")
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def overhead_summary(lightning_s: Sequence[float], plain_s: Sequence[float], batch_size: int,
                     lightning_cpu_s: Sequence[float] | None = None,
                     plain_cpu_s: Sequence[float] | None = None) -> dict[str, Any]:
    """Figures of one run from per-round seconds per step of both sides (paired by round).

    ``lightning_overhead_ratio`` uses wall time; ``lightning_overhead_ratio_cpu_time`` (when the
    CPU-time lists are given) the process's CPU time, paired and reduced the same way.
    """
    lightning_step, plain_step = statistics.median(lightning_s), statistics.median(plain_s)
    out = {
        "lightning_ms_per_step": 1e3 * lightning_step,
        "plain_ms_per_step": 1e3 * plain_step,
        "lightning_images_per_s": batch_size / lightning_step,
        "plain_images_per_s": batch_size / plain_step,
        "lightning_overhead_ratio": median_ratio(lightning_s, plain_s),
        "round_ratios": [l / p for l, p in zip(lightning_s, plain_s)],
        "lightning_overhead_ratio_cpu_time": None,
        "round_ratios_cpu_time": None,
    }
    if lightning_cpu_s and plain_cpu_s:
        out["lightning_overhead_ratio_cpu_time"] = median_ratio(lightning_cpu_s, plain_cpu_s)
        out["round_ratios_cpu_time"] = [l / p for l, p in zip(lightning_cpu_s, plain_cpu_s)]
    return out


_SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu")


class HostSyncCounter:
    """Counts Python-level calls that read a tensor's value on the host while active.

    Patches ``torch.Tensor.item``, ``tolist``, ``__bool__``, ``__float__``, ``__int__``,
    ``__index__``, ``numpy`` and ``cpu`` (each one a device->host synchronisation for a CUDA
    tensor); ``calls`` maps method name -> count. C++-internal syncs are not seen: on a GPU
    use ``torch.cuda.set_sync_debug_mode`` as well (see :func:`cuda_sync_count`).
    """

    def __init__(self, methods: Sequence[str] = _SYNC_METHODS) -> None:
        self.methods = tuple(methods)
        self.calls: Counter[str] = Counter()
        self._saved: dict[str, Any] = {}

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def __enter__(self) -> HostSyncCounter:
        for name in self.methods:
            self._saved[name] = torch.Tensor.__dict__.get(name)
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                self.calls[_name] += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, saved in self._saved.items():
            if saved is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, saved)
        self._saved.clear()


@contextlib.contextmanager
def cuda_sync_count() -> Iterator[list[int]]:
    """Count synchronising CUDA calls (``torch.cuda.set_sync_debug_mode("warn")``) in the block."""
    box = [0]
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield box
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    box[0] = sum("synchronizing CUDA operation" in str(w.message) for w in caught)


def _flop_mapping() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for the CPU flash-attention kernels, which FlopCounterMode lacks."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}

    def forward(q, k, v, *args, out_shape=None, **kwargs):
        return fc.sdpa_flop_count(q, k, v)

    def backward(grad, q, k, v, *args, out_shape=None, **kwargs):
        return fc.sdpa_backward_flop_count(grad, q, k, v)

    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = forward
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = backward
    return mapping


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs of ``fn()`` (matmuls, convolutions, attention; forward and any backward it runs)."""
    from torch.utils.flop_counter import FlopCounterMode

    eager = getattr(torch.compiler, "set_stance", None)
    stance = eager("force_eager") if eager is not None else contextlib.nullcontext()  # count compiled modules eagerly
    with stance, FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_rate(device: str, size: int = 8192, iters: int = 20) -> float | None:
    """Measured bf16 ``size^3`` matmul FLOP/s on a GPU; ``None`` on a CPU."""
    if device != "cuda":
        return None
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    rate = 2.0 * size**3 * iters / (time.perf_counter() - start)
    del a, b
    torch.cuda.empty_cache()
    return rate


def _autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    if precision.startswith("bf16") and "mixed" in precision:
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    if precision.startswith("16") and "mixed" in precision:
        return torch.autocast(device_type=device, dtype=torch.float16)
    return contextlib.nullcontext()


def machine_info(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "device": device,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device == "cuda" else None,
        "lightning": L.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    with contextlib.suppress(Exception):
        import timm

        info["timm"] = timm.__version__
    return info


# -- data ------------------------------------------------------------------------------------
def load_images(kind: str, data_dir: str, num_images: int) -> tuple[Tensor, Tensor, str]:
    """uint8 ``[N, 3, 32, 32]``, int64 ``[N]`` and a description of where they came from.

    ``auto``: CIFAR-10's training files if present in ``data_dir``, else the digits upsampled
    to 32 px (1,437 real images, tiled to ``num_images``). ``synthetic``: uniform noise.
    """
    if kind in ("auto", "cifar10"):
        try:
            images, labels = load_cifar("cifar10", data_dir, train=True)
            source = f"cifar10 train split from {data_dir}"
        except (DatasetNotFoundError, FileNotFoundError, OSError):
            if kind == "cifar10":
                raise
            kind = "digits"
    if kind == "digits":
        images, labels, _, _ = load_digits_split(seed=0)
        source = f"digits (sklearn 8x8, upsampled to 32x32 RGB; {len(labels)} images tiled)"
    elif kind == "synthetic":
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (num_images, 3, 32, 32), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (num_images,), generator=generator)
        source = "synthetic uniform uint8 CIFAR-shaped"
    elif kind not in ("auto", "cifar10"):
        raise ValueError(f"unknown data source {kind!r}; choose auto, cifar10, digits or synthetic")
    if len(labels) < num_images:
        reps = math.ceil(num_images / len(labels))
        images, labels = images.repeat(reps, 1, 1, 1), labels.repeat(reps)
    return images[:num_images].contiguous(), labels[:num_images].contiguous(), source


class BenchDataModule(CIFARDataModule):
    """A CIFARDataModule over given uint8 tensors: nothing to download or load."""

    def __init__(self, images: Tensor, labels: Tensor, dataset: str = "cifar10", **kwargs: Any) -> None:
        super().__init__(dataset=dataset, **kwargs)
        self.train_images, self.train_labels = images, labels
        self.val_images, self.val_labels = images[:64], labels[:64]

    def prepare_data(self) -> None:  # nothing to download
        pass


class PILDataset(Dataset):
    """torchvision-style dataset (as ``datasets.CIFAR10``): HWC uint8 array -> PIL -> transform."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable) -> None:
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def _time_batches(loader: DataLoader, n_batches: int, step: Callable[[Tensor, Tensor], Any], device: str) -> float:
    """Images/s over ``n_batches`` after one untimed batch (worker start-up excluded)."""
    iterator = iter(loader)
    step(*next(iterator))
    _sync(device)
    start = time.perf_counter()
    count = 0
    for _ in range(n_batches):
        images, labels = next(iterator)
        step(images, labels)
        count += len(labels)
    _sync(device)
    return count / (time.perf_counter() - start)


def bench_data(images: Tensor, labels: Tensor, cfg: BenchConfig) -> dict[str, Any]:
    """kdbias's data path vs torchvision's per-sample pipeline, alternating ``data_reps`` times."""
    from torchvision import transforms

    batch, device, workers = cfg.data_batch_size(), cfg.device, cfg.num_workers
    n_batches = min(cfg.data_batches, len(labels) // batch - 2)
    if n_batches < 1:
        raise ValueError(f"{len(labels)} images are too few for data batches of {batch}")
    dm = BenchDataModule(images, labels, "cifar10", batch_size=batch, num_workers=workers, mix=None, augment=True)
    info = dm.info
    tv_transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(info.mean, info.std),
    ])
    tv_loader = DataLoader(
        PILDataset(images, labels, tv_transform), batch_size=batch, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=dm.pin_memory, persistent_workers=workers > 0,
    )
    kd_loader = dm.train_dataloader()

    def kd_step(x: Tensor, y: Tensor) -> None:
        dm.augment_batch(x.to(device, non_blocking=True), y.to(device, non_blocking=True))

    def tv_step(x: Tensor, y: Tensor) -> None:
        x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def measure(threads: int, reps: int) -> tuple[list[float], list[float]]:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            kd, tv = [], []
            for _ in range(reps):
                kd.append(_time_batches(kd_loader, n_batches, kd_step, device))
                tv.append(_time_batches(tv_loader, n_batches, tv_step, device))
            return kd, tv
        finally:
            torch.set_num_threads(previous)

    default_threads = torch.get_num_threads()
    threads = cfg.data_threads or default_threads
    kd, tv = measure(threads, cfg.data_reps)
    other = None
    if threads != default_threads:
        kd_other, tv_other = measure(default_threads, max(1, cfg.data_reps // 2))
        other = {"threads": default_threads, "kdbias_images_per_s": statistics.median(kd_other),
                 "torchvision_images_per_s": statistics.median(tv_other), "speedup": median_ratio(kd_other, tv_other)}
    return {
        "batch_size": batch,
        "num_workers": workers,
        "threads": threads,
        "batches_per_rep": n_batches,
        "kdbias_images_per_s": statistics.median(kd),
        "torchvision_images_per_s": statistics.median(tv),
        "speedup": median_ratio(kd, tv),
        "rep_speedups": [k / t for k, t in zip(kd, tv)],
        "at_default_threads": other,
        "kdbias_path": "uint8 TensorBatchDataset -> device -> CIFARDataModule.augment_batch "
                       "(crop 4 px, hflip, normalise)",
        "torchvision_path": "PIL per sample: RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, "
                            "Normalize -> device",
    }


# -- modules ----------------------------------------------------------------------------------
def build_run_module(spec: RunSpec, cfg: BenchConfig, dataset: str = "cifar10", **overrides: Any) -> L.LightningModule:
    """The run's LightningModule with its paper optimisation settings and random weights."""
    settings = {**paper_settings(spec), **overrides}
    common = dict(
        num_classes=10, dataset=dataset, optimizer=settings["optimizer"], lr=settings["lr"],
        weight_decay=settings["weight_decay"], momentum=settings["momentum"],
        warmup_epochs=settings["warmup_epochs"], min_lr_ratio=settings["min_lr_ratio"],
        label_smoothing=settings["label_smoothing"], compile=cfg.compile,
    )
    vit_kwargs = dict(TINY_VIT) if cfg.tiny and spec.model.startswith("deit") else {}
    if spec.kind == "supervised":
        return TeacherModule(spec.model, pretrained=None, model_kwargs=vit_kwargs, **common)
    if spec.kind == "kl":
        teacher = TeacherModule(spec.teacher, num_classes=10, dataset=dataset, pretrained=None)
        return KLDistillModule(spec.model, teacher, model_kwargs=vit_kwargs, **common)
    extra = dict(layer_pairs=TINY_LAYER_PAIRS, teacher_kwargs=dict(TINY_VIT)) if cfg.tiny else {}
    with contextlib.redirect_stdout(sys.stderr):  # the "RANDOM weights" note
        return CKADistillModule(
            spec.model, teacher=spec.teacher, teacher_pretrained=cfg.teacher_weights,
            teacher_image_size=spec.teacher_image_size,
            model_kwargs=vit_kwargs, **extra, **common,
        )


def teacher_flops(module: L.LightningModule, images: Tensor) -> int:
    """FLOPs of the frozen teacher's forward on ``images`` (0 without a teacher)."""
    if not hasattr(module, "teacher_network"):
        return 0
    with torch.inference_mode():
        return count_flops(lambda: module.teacher_network(module.teacher_input(images)))


def _optimizers(module: L.LightningModule, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """The module's own ``configure_optimizers`` outside a Trainer (a stand-in supplies the step count)."""
    module._trainer = SimpleNamespace(estimated_stepping_batches=total_steps, max_epochs=1)
    try:
        conf = module.configure_optimizers()
    finally:
        module._trainer = None
    if isinstance(conf, dict):
        scheduler = conf.get("lr_scheduler")
        scheduler = scheduler.get("scheduler") if isinstance(scheduler, dict) else scheduler
        return conf["optimizer"], scheduler
    return conf, None


def plain_steps(module: L.LightningModule, dm: CIFARDataModule, clock: StepClock, device: str, precision: str,
                sync_probe: dict[str, Any] | None = None) -> None:
    """The plain PyTorch loop: ``clock.total_steps`` steps of exactly the Lightning step's work.

    With ``sync_probe`` (a dict) one more step runs after the timed ones with host-sync
    counters active; their counts land in the dict.
    """
    module.to(device).train()  # a finished Trainer.fit leaves the module on the CPU (strategy teardown)
    optimizer, scheduler = _optimizers(module, clock.total_steps + 1)
    iterator = iter(dm.train_dataloader())

    def one_step(counter: HostSyncCounter | None = None) -> None:
        images, labels = next(iterator)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with counter if counter is not None else contextlib.nullcontext():
            images, targets = dm.augment_batch(images, labels)
            with _autocast(device, precision):
                losses, _ = module.training_losses(images, targets)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

    for _ in range(clock.total_steps):
        one_step()
        clock.tick()
    if sync_probe is not None:
        counter = HostSyncCounter()
        if device == "cuda":
            with cuda_sync_count() as box:
                one_step(counter)
                torch.cuda.synchronize()
            sync_probe["cuda_sync_ops_per_step"] = box[0]
        else:
            one_step(counter)
            sync_probe["cuda_sync_ops_per_step"] = None
        sync_probe["host_sync_calls"] = dict(counter.calls)


class _ClockCallback(Callback):
    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.clock.tick()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Lightning's per-fit banners and advice (GPU available, few workers, ...)."""
    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def lightning_steps(module: L.LightningModule, dm: CIFARDataModule, clock: StepClock, cfg: BenchConfig,
                    root: Path) -> None:
    """A real ``Trainer.fit`` of ``clock.total_steps`` steps with everything but training off."""
    with _quiet():
        trainer = L.Trainer(
            accelerator="gpu" if cfg.device == "cuda" else "cpu", devices=1, precision=cfg.precision,
            max_epochs=1, limit_train_batches=clock.total_steps, limit_val_batches=0, num_sanity_val_steps=0,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[_ClockCallback(clock)], benchmark=cfg.device == "cuda", default_root_dir=str(root),
        )
        trainer.fit(module, datamodule=dm)
    module.trainer = None  # detach, so the plain loop and the next fit start clean
    dm.trainer = None


def bench_run(spec: RunSpec, cfg: BenchConfig, images: Tensor, labels: Tensor, root: Path,
              peak_flops: float | None) -> dict[str, Any]:
    """All figures of one run (see the module docstring)."""
    settings = paper_settings(spec)
    batch = cfg.batch_for(spec)
    device = cfg.device
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    module = build_run_module(spec, cfg).to(device)
    dm = BenchDataModule(images, labels, "cifar10", batch_size=batch, num_workers=cfg.num_workers,
                         mix=settings["mix"], mix_prob=settings["mix_prob"], seed=0)
    row: dict[str, Any] = {
        "run": spec.name, "recipe": spec.recipe, "model": spec.model, "teacher": spec.teacher,
        "teacher_image_size": spec.teacher_image_size, "batch_size": batch,
        "paper_batch_size": int(settings["batch_size"]), "optimizer": settings["optimizer"],
        "mix": settings["mix"], "precision": cfg.precision, "compile": cfg.compile,
    }

    # FLOPs on one small, augmented batch, eager, counted before any timing.
    x, y = dm.augment_batch(images[: cfg.flop_batch].to(device), labels[: cfg.flop_batch].to(device))
    module.to(device).train()

    def train_step() -> None:
        with _autocast(device, cfg.precision):
            losses, _ = module.training_losses(x, y)
        losses["loss"].backward()

    total = count_flops(train_step)
    module.zero_grad(set_to_none=True)
    t_flops = teacher_flops(module, x)
    row.update(flops_per_image=total / cfg.flop_batch, teacher_flops_per_image=t_flops / cfg.flop_batch,
               student_flops_per_image=(total - t_flops) / cfg.flop_batch)

    if cfg.prime:
        plain_steps(module, dm, StepClock(cfg.prime, 0, device), device, cfg.precision)
    lightning_s, plain_s, intervals = [], [], {"lightning": [], "plain": []}
    cpu_s: dict[str, list[float]] = {"lightning": [], "plain": []}
    for r in range(cfg.rounds):
        for side in ("lightning", "plain") if r % 2 == 0 else ("plain", "lightning"):
            clock = StepClock(cfg.warmup, cfg.steps, device)
            if side == "lightning":
                lightning_steps(module, dm, clock, cfg, root)
                lightning_s.append(clock.per_step())
            else:
                plain_steps(module, dm, clock, device, cfg.precision)
                plain_s.append(clock.per_step())
            intervals[side] += [1e3 * t for t in clock.intervals()]
            if device != "cuda":
                cpu_s[side].append(clock.cpu_per_step())
    row.update(overhead_summary(lightning_s, plain_s, batch, cpu_s["lightning"], cpu_s["plain"]))
    row["step_times_ms"] = intervals if device != "cuda" else {
        "lightning": [1e3 * t for t in lightning_s], "plain": [1e3 * t for t in plain_s]}
    achieved = row["flops_per_image"] * row["lightning_images_per_s"]
    row["achieved_tflops"] = achieved / 1e12
    row["mfu"] = achieved / peak_flops if peak_flops else None
    if cfg.sync_check:
        probe: dict[str, Any] = {}
        plain_steps(module, dm, StepClock(1, 0, device), device, cfg.precision, sync_probe=probe)
        row.update(probe)
    if device == "cuda":
        row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    row["status"] = "ok"
    return row


def bench_dinov2(cfg: BenchConfig, images: Tensor) -> dict[str, Any]:
    """The frozen DINOv2-S/14 teacher's forward at 224 vs 112 px: ms per batch and FLOPs."""
    device, batch = cfg.device, cfg.batch_for(RUNS["exp3_224"])
    x = ((images[:batch].float() / 255.0 - 0.45) / 0.25).to(device)
    nets = {}
    for size in (224, 112):
        torch.manual_seed(0)
        net = build_model("dinov2_vits14", num_classes=0, img_size=size, **(TINY_VIT if cfg.tiny else {}))
        adapter = InputAdapter((0.45,) * 3, (0.25,) * 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), size)
        net, adapter = net.eval().to(device), adapter.to(device)
        if cfg.compile:
            net.compile()
        nets[size] = (net, adapter)

    def forward(size: int, inputs: Tensor) -> Tensor:
        net, adapter = nets[size]
        with torch.inference_mode(), _autocast(device, cfg.precision):
            return net(adapter(inputs))

    out: dict[str, Any] = {"batch_size": batch, "precision": cfg.precision, "compile": cfg.compile}
    for size in (224, 112):
        out[str(size)] = {"flops_per_image": count_flops(lambda: forward(size, x[: cfg.flop_batch])) / cfg.flop_batch}
        for _ in range(2 if (device == "cuda" or cfg.compile) else 0 if cfg.smoke else 1):
            forward(size, x)  # warm-up (and compilation); a CPU smoke's first rep is warm enough
    times: dict[int, list[float]] = {224: [], 112: []}
    for _ in range(cfg.dinov2_reps):
        for size in (224, 112):
            _sync(device)
            start = time.perf_counter()
            forward(size, x)
            _sync(device)
            times[size].append(time.perf_counter() - start)
    for size in (224, 112):
        ms = 1e3 * statistics.median(times[size])
        out[str(size)].update(ms_per_batch=ms, images_per_s=batch / (ms / 1e3))
    out["speedup_112_vs_224"] = out["224"]["ms_per_batch"] / out["112"]["ms_per_batch"]
    out["flop_ratio_224_vs_112"] = out["224"]["flops_per_image"] / out["112"]["flops_per_image"]
    del nets
    return out


# -- the whole benchmark --------------------------------------------------------------------------
def _median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run everything ``cfg`` asks for and return the JSON-ready result (written as it goes)."""
    cfg.resolve()
    with _threads(cfg.threads):
        return _run_benchmark(cfg, log)


def _run_benchmark(cfg: BenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    wall_start = time.perf_counter()
    if cfg.device == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    needed = max(
        [cfg.data_batch_size() * (cfg.data_batches + 2) if cfg.data_bench else 0]
        + [cfg.batch_for(RUNS[r]) * (max(cfg.warmup + cfg.steps, cfg.prime) + 3) for r in cfg.runs]
        + [cfg.flop_batch, cfg.batch_for(RUNS["exp3_224"])]
    )
    images, labels, source = load_images(cfg.data, cfg.data_dir, max(needed, 2048))
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": "kdbias.benchmark",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": False,
        "machine": machine_info(cfg.device),
        "config": {k: v for k, v in asdict(cfg).items() if k != "json_path"},
        "data_source": source,
        "lightning_overhead_ratio": None,
        "lightning_overhead_ratio_cpu_time": None,
        "data_speedup_vs_torchvision": None,
        "matmul_bf16_tflops": None,
        "data": None,
        "dinov2": None,
        "runs": [],
        "wall_s": None,
    }

    def save() -> None:
        result["wall_s"] = time.perf_counter() - wall_start
        ok = [r for r in result["runs"] if r.get("status") == "ok"]
        result["lightning_overhead_ratio"] = _median_or_none([r["lightning_overhead_ratio"] for r in ok])
        result["lightning_overhead_ratio_cpu_time"] = _median_or_none(
            [r["lightning_overhead_ratio_cpu_time"] for r in ok if r.get("lightning_overhead_ratio_cpu_time")])
        if cfg.json_path:
            path = Path(cfg.json_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2, default=str) + "\n")

    log(f"kdbias.benchmark on {result['machine']['gpu'] or result['machine']['cpu']} "
        f"({cfg.device}, {torch.get_num_threads()} threads, {cfg.precision}, compile={cfg.compile}); data: {source}")
    peak = matmul_rate(cfg.device, cfg.matmul_size)
    result["matmul_bf16_tflops"] = peak / 1e12 if peak else None
    if cfg.data_bench:
        result["data"] = bench_data(images, labels, cfg)
        result["data_speedup_vs_torchvision"] = result["data"]["speedup"]
        log(f"data path: kdbias {result['data']['kdbias_images_per_s']:,.0f} img/s vs torchvision "
            f"{result['data']['torchvision_images_per_s']:,.0f} img/s -> x{result['data']['speedup']:.1f}")
        save()
    if cfg.dinov2:
        result["dinov2"] = d = bench_dinov2(cfg, images)
        log(f"DINOv2-S/14 @ batch {d['batch_size']}: 224 px {d['224']['ms_per_batch']:.1f} ms "
            f"({d['224']['flops_per_image'] / 1e9:.2f} GFLOP/img), 112 px {d['112']['ms_per_batch']:.1f} ms "
            f"({d['112']['flops_per_image'] / 1e9:.2f} GFLOP/img) -> x{d['speedup_112_vs_224']:.2f} faster")
        save()
    with tempfile.TemporaryDirectory(prefix="kdbias-bench-") as root:
        for name in cfg.runs:
            spec = RUNS[name]
            if cfg.time_budget_s is not None and time.perf_counter() - wall_start > cfg.time_budget_s:
                result["runs"].append({"run": name, "status": "skipped: time budget"})
                log(f"{name}: skipped (time budget of {cfg.time_budget_s:.0f} s spent)")
                continue
            start = time.perf_counter()
            try:
                row = bench_run(spec, cfg, images, labels, Path(root), peak)
            except Exception as error:  # noqa: BLE001 - e.g. out of memory: record it, go on
                if cfg.device == "cuda":
                    torch.cuda.empty_cache()
                row = {"run": name, "status": f"error: {type(error).__name__}: {str(error)[:300]}"}
            row["wall_s"] = time.perf_counter() - start
            result["runs"].append(row)
            log(format_row(row))
            save()
    result["complete"] = True
    save()
    log(format_table(result))
    return result


# -- printing ----------------------------------------------------------------------------------------
_COLUMNS = (
    ("run", "run", "{}"), ("batch", "batch_size", "{}"), ("L img/s", "lightning_images_per_s", "{:,.0f}"),
    ("plain img/s", "plain_images_per_s", "{:,.0f}"), ("L/plain", "lightning_overhead_ratio", "{:.3f}"),
    ("L/plain cpu", "lightning_overhead_ratio_cpu_time", "{:.3f}"),
    ("GFLOP/img", "flops_per_image", "{:.2f}", 1e-9), ("teacher GF", "teacher_flops_per_image", "{:.2f}", 1e-9),
    ("MFU", "mfu", "{:.1%}"), ("syncs", "host_sync_total", "{}"), ("wall s", "wall_s", "{:.0f}"),
)


def _cell(row: dict[str, Any], column: tuple) -> str:
    key, fmt = column[1], column[2]
    value = row.get(key)
    if key == "host_sync_total" and "host_sync_calls" in row:
        value = sum(row["host_sync_calls"].values()) + (row.get("cuda_sync_ops_per_step") or 0)
    if value is None:
        return "-"
    if len(column) > 3:
        value = value * column[3]
    return fmt.format(value)


def format_row(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return f"{row['run']}: {row.get('status')}"
    return "  ".join(f"{c[0]}={_cell(row, c)}" for c in _COLUMNS)


def format_table(result: dict[str, Any]) -> str:
    header = [c[0] for c in _COLUMNS]
    rows = [[_cell(r, c) if r.get("status") == "ok" else (r["run"] if c[1] == "run" else "-") for c in _COLUMNS]
            for r in result["runs"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    for r in result["runs"]:
        if r.get("status") != "ok":
            lines.append(f"  {r['run']}: {r.get('status')}")
    ratio, speed = result.get("lightning_overhead_ratio"), result.get("data_speedup_vs_torchvision")
    lines.append(f"lightning_overhead_ratio (wall time, median over runs) = {ratio:.3f}" if ratio
                 else "lightning_overhead_ratio = -")
    cpu_ratio = result.get("lightning_overhead_ratio_cpu_time")
    if cpu_ratio:
        lines.append(f"lightning_overhead_ratio_cpu_time (process CPU time, median over runs) = {cpu_ratio:.3f}")
    lines.append(f"data_speedup_vs_torchvision = {speed:.1f}" if speed else "data_speedup_vs_torchvision = -")
    if result.get("matmul_bf16_tflops"):
        lines.append(f"bf16 matmul rate = {result['matmul_bf16_tflops']:.0f} TFLOP/s (MFU reference)")
    return "\n".join(lines)


# -- training check (memory, loss falling) ---------------------------------------------------------------
class _LossTrace(Callback):
    def __init__(self) -> None:
        self.losses: list[Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach().float())  # no host read in the loop


def train_check(run: str, seconds: float, cfg: BenchConfig, warmup_steps: int = 10,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``run`` on the digits (tiled) for ``seconds``; peak memory and the loss trend.

    Returns ``{"run", "steps", "images_per_s", "max_memory_gib", "loss_first", "loss_last",
    "loss_falling", "finite", ...}``; the losses are read from the device once, at the end.
    """
    cfg.resolve()
    with _threads(cfg.threads):
        return _train_check(run, seconds, cfg, warmup_steps, log)


def _train_check(run: str, seconds: float, cfg: BenchConfig, warmup_steps: int,
                 log: Callable[[str], None]) -> dict[str, Any]:
    spec = RUNS[run]
    batch = cfg.batch_for(spec)
    device = cfg.device
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.cuda.reset_peak_memory_stats()
    images, labels, source = load_images("digits", cfg.data_dir, batch * 100)
    max_steps = 10**6
    torch.manual_seed(0)
    module = build_run_module(spec, cfg, dataset="digits", warmup_epochs=warmup_steps / max_steps)
    dm = BenchDataModule(images, labels, "digits", batch_size=batch, num_workers=cfg.num_workers, seed=0)
    trace = _LossTrace()
    start = time.perf_counter()
    with _quiet(), tempfile.TemporaryDirectory(prefix="kdbias-train-check-") as root:
        trainer = L.Trainer(
            accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=cfg.precision,
            max_steps=max_steps, max_time={"seconds": seconds}, limit_val_batches=0, num_sanity_val_steps=0,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[trace], benchmark=device == "cuda", default_root_dir=root,
        )
        trainer.fit(module, datamodule=dm)
    _sync(device)
    elapsed = time.perf_counter() - start
    losses = torch.stack(trace.losses).cpu() if trace.losses else torch.zeros(0)
    k = max(1, len(losses) // 10)
    first, last = (losses[:k].mean().item(), losses[-k:].mean().item()) if len(losses) else (math.nan, math.nan)
    out = {
        "run": run, "seconds": seconds, "batch_size": batch, "precision": cfg.precision, "compile": cfg.compile,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "data_source": source,
        "teacher_weights": (cfg.teacher_weights or "random") if spec.teacher else None,
        "steps": len(losses), "images_per_s": len(losses) * batch / elapsed,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "loss_first": first, "loss_last": last, "loss_falling": bool(last < first),
        "finite": bool(torch.isfinite(losses).all()) if len(losses) else False,
    }
    log(f"train-check {run}: {out['steps']} steps of {batch} in {elapsed:.0f} s ({out['images_per_s']:,.0f} img/s), "
        f"loss {first:.3f} -> {last:.3f} ({'falling' if out['loss_falling'] else 'NOT falling'}), peak memory "
        + (f"{out['max_memory_gib']:.2f} GiB" if out["max_memory_gib"] is not None else "n/a (cpu)"))
    if cfg.json_path:
        Path(cfg.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json_path).write_text(json.dumps(out, indent=2) + "\n")
    return out


# -- command line --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdbias.benchmark", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="quick CPU pass: batch 16, 1 thread, 1 warm-up + 1 timed step x 3 rounds per side, "
                        "no sync probe")
    p.add_argument("--json", dest="json_path", default=None, help="write the results here")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the models")
    p.add_argument("--runs", default="all", help=f"comma list of {', '.join(RUNS)}, or exp3, teachers, all")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", help="auto: bf16-mixed on a GPU, 32-true on a CPU")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: the plan's per-GPU batch on a GPU, 16 (--smoke) / 64 on a CPU")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per round (default 3 GPU / 1 CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default 10 GPU / 3 CPU)")
    p.add_argument("--rounds", type=int, default=None, help="Lightning/plain alternations (default 3)")
    p.add_argument("--prime", type=int, default=None, help="untimed plain steps before round 1 (compilation)")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default 4 GPU / 0 CPU)")
    p.add_argument("--data", default="auto", choices=["auto", "cifar10", "digits", "synthetic"],
                   help="auto: CIFAR-10 files if present, else the digits upsampled")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--data-bench", action=argparse.BooleanOptionalAction, default=True,
                   help="kdbias vs torchvision data path")
    p.add_argument("--data-batch", type=int, default=None,
                   help="batch of the data-path comparison (default 1024 GPU / 128 CPU)")
    p.add_argument("--data-batches", type=int, default=None)
    p.add_argument("--data-reps", type=int, default=None)
    p.add_argument("--data-threads", type=int, default=None,
                   help="torch threads while comparing data paths (CPU default 1: each torchvision worker is "
                        "single-threaded, and on a shared CPU multi-threaded small ops measure the scheduler; "
                        "the default thread count is measured too and reported under at_default_threads)")
    p.add_argument("--dinov2", action=argparse.BooleanOptionalAction, default=True, help="DINOv2 224 vs 112 px")
    p.add_argument("--dinov2-reps", type=int, default=None)
    p.add_argument("--flop-batch", type=int, default=None,
                   help="images of the FLOP-counting batch (default 4; 2 with --smoke on a CPU)")
    p.add_argument("--sync-check", action=argparse.BooleanOptionalAction, default=None,
                   help="count host syncs in one extra step per run (default: on, except in a CPU --smoke)")
    p.add_argument("--matmul-size", type=int, default=8192, help="side of the bf16 matmuls of the MFU reference")
    p.add_argument("--teacher-weights", default=None,
                   help="local DINOv2-S/14 weights file for the exp3 runs (default: random weights, offline)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's; 1 with --smoke on a CPU)")
    p.add_argument("--tiny", action="store_true", help="2-block ViTs (tests of the benchmark itself)")
    p.add_argument("--time-budget", dest="time_budget_s", type=float, default=None,
                   help="skip the remaining runs after this many seconds")
    p.add_argument("--train-check", type=float, default=None, metavar="SECONDS",
                   help="instead: train the first of --runs for SECONDS; report peak memory and loss trend")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: never wait on the hub
    args = vars(build_parser().parse_args(argv))
    seconds = args.pop("train_check")
    cfg = BenchConfig(**args)
    if seconds is not None:
        return train_check(parse_runs(cfg.runs)[0], seconds, cfg)
    return run_benchmark(cfg)


if __name__ == "__main__":
    main()
