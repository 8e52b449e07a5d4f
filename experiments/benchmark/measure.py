"""Measurement arithmetic (pure functions, tested against written-out numbers) and probes.

Arithmetic: :func:`step_time`, :func:`median_ratio`, :func:`overhead_ms`,
:func:`overhead_summary`, :func:`achieved_tflops`, :func:`mfu`, :func:`window_means`.

Probes: :class:`StepClock` (stamps of a window of steps), :func:`count_flops`
(``FlopCounterMode``), :func:`matmul_tflops` (measured bf16 matmul rate, the MFU reference),
:class:`HostReadCounter` (a ``TorchFunctionMode`` counting ``item``/``tolist``/... calls),
:class:`CudaSyncCounter` (``torch.cuda.set_sync_debug_mode("warn")`` warnings),
:func:`dynamo_counts`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

#: NVIDIA datasheet peaks, BF16 Tensor Core, dense (no sparsity), TFLOP/s, by GPU name fragment.
DATASHEET_BF16_DENSE_TFLOPS: dict[str, float] = {"H200": 989.0}
DATASHEET_NOTE = "NVIDIA H200 datasheet peak, BF16 Tensor Core, dense (1,979 TFLOP/s is with 2:4 sparsity)"


# -- arithmetic ------------------------------------------------------------------------------
def step_time(intervals: Sequence[float], windowed: bool = False) -> float:
    """Seconds per step: the median interval, or the mean over the window when ``windowed``
    (on a GPU only the window's ends are synchronised, so single intervals mean little)."""
    if not intervals:
        raise ValueError("no timed steps")
    return sum(intervals) / len(intervals) if windowed else statistics.median(intervals)


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the paired ratios ``numerators[i] / denominators[i]`` (one pair per round)."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("need the same non-zero number of paired measurements")
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def overhead_ms(lightning_s: Sequence[float], plain_s: Sequence[float]) -> float:
    """Median over paired rounds of (Lightning - plain) seconds per step, in milliseconds."""
    if len(lightning_s) != len(plain_s) or not lightning_s:
        raise ValueError("need the same non-zero number of paired measurements")
    return 1e3 * statistics.median(a - b for a, b in zip(lightning_s, plain_s))


def overhead_summary(
    lightning_s: Sequence[float],
    plain_s: Sequence[float],
    batch_size: int,
    lightning_cpu_s: Sequence[float] | None = None,
    plain_cpu_s: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Figures of one A/B comparison from per-round seconds per step (paired by round).

    Wall-time figures always; process-CPU-time figures (``*_cpu``) when both CPU lists are
    given (on a CPU: other jobs on a shared machine disturb CPU time less than wall time).
    """
    lightning_step, plain_step = statistics.median(lightning_s), statistics.median(plain_s)
    out: dict[str, Any] = {
        "rounds": len(lightning_s),
        "batch_size": batch_size,
        "lightning_ms_per_step": 1e3 * lightning_step,
        "plain_ms_per_step": 1e3 * plain_step,
        "overhead_ms_per_step": overhead_ms(lightning_s, plain_s),
        "ratio": median_ratio(lightning_s, plain_s),
        "round_overheads_ms": [1e3 * (a - b) for a, b in zip(lightning_s, plain_s)],
        "lightning_images_per_s": batch_size / lightning_step,
        "plain_images_per_s": batch_size / plain_step,
        "overhead_ms_per_step_cpu": None,
        "ratio_cpu": None,
    }
    if lightning_cpu_s and plain_cpu_s:
        out["overhead_ms_per_step_cpu"] = overhead_ms(lightning_cpu_s, plain_cpu_s)
        out["ratio_cpu"] = median_ratio(lightning_cpu_s, plain_cpu_s)
    return out


def achieved_tflops(gflop_per_image: float | None, images_per_s: float | None) -> float | None:
    """Model TFLOP/s of a training step: GFLOP per image x images per second / 1000."""
    if gflop_per_image is None or images_per_s is None:
        return None
    return gflop_per_image * images_per_s / 1e3


def mfu(tflops: float | None, peak_tflops: float | None) -> float | None:
    """Model-FLOP utilisation: achieved / peak (``None`` without either)."""
    if tflops is None or not peak_tflops:
        return None
    return tflops / peak_tflops


def datasheet_peak(device_name: str | None) -> float | None:
    """The datasheet bf16 dense peak of a GPU by name (``None`` if not tabulated)."""
    for fragment, peak in DATASHEET_BF16_DENSE_TFLOPS.items():
        if device_name and fragment in device_name:
            return peak
    return None


def window_means(values: Sequence[float], fraction: float = 0.1) -> tuple[float, float]:
    """Means of the first and of the last ``max(1, fraction * n)`` values."""
    if not values:
        raise ValueError("no values")
    k = max(1, int(len(values) * fraction))
    return statistics.fmean(values[:k]), statistics.fmean(values[-k:])


# -- timing ----------------------------------------------------------------------------------
def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class StepClock:
    """Stamps the ends of steps ``warmup .. warmup + steps`` (``steps`` intervals).

    Call :meth:`tick` at the end of every step. On a GPU only the window's two ends
    synchronise (the host runs ahead inside it, as in training). The process's CPU time is
    stamped too (:meth:`cpu_per_step`, CPU runs only).
    """

    def __init__(self, warmup: int, steps: int, device: torch.device | str) -> None:
        self.warmup, self.steps = max(1, warmup), steps
        self.cuda = torch.device(device).type == "cuda"
        self.count = 0
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    def tick(self) -> None:
        self.count += 1
        if self.count < self.warmup or self.count > self.warmup + self.steps:
            return
        if self.cuda and self.count in (self.warmup, self.warmup + self.steps):
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        self.cpu_stamps.append(time.process_time())

    def intervals(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]

    def per_step(self) -> float:
        return step_time(self.intervals(), windowed=self.cuda)

    def cpu_per_step(self) -> float | None:
        if self.cuda:
            return None
        return step_time([b - a for a, b in zip(self.cpu_stamps, self.cpu_stamps[1:])])


# -- FLOPs and the matmul reference -----------------------------------------------------------
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
    """Total FLOPs of ``fn()`` (matmuls, convolutions, attention; forward and any backward it runs).
    Compiled functions run eagerly while counting (``torch.compiler.set_stance("force_eager")``)."""
    from torch.utils.flop_counter import FlopCounterMode

    set_stance = getattr(torch.compiler, "set_stance", None)
    stance = set_stance("force_eager") if set_stance is not None else contextlib.nullcontext()
    with stance, FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_tflops(device: torch.device | str, size: int = 8192, iters: int = 30) -> float | None:
    """Measured bf16 ``size x size`` matmul rate in TFLOP/s on a GPU; ``None`` on a CPU."""
    if torch.device(device).type != "cuda":
        return None
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    rate = 2.0 * size**3 * iters / (time.perf_counter() - start) / 1e12
    del a, b
    torch.cuda.empty_cache()
    return rate


# -- host syncs ---------------------------------------------------------------------------------
#: Tensor methods that read a value on the host (a device->host sync for a CUDA tensor).
HOST_READS = frozenset({"item", "tolist", "cpu", "__bool__", "__float__", "__int__", "__index__", "numpy"})
#: Reads of CPU tensors here are not counted: a non-fused optimiser keeps its step counters on
#: the CPU (``.item()`` per parameter, no device involved); on a GPU kdbias uses the fused ones.
CPU_BOOKKEEPING_SITES = ("torch/optim/",)
_PASS_THROUGH = ("torch/overrides.py", "torch/_tensor.py", "benchmark/measure.py")


def _site(frame: Any) -> str:
    """``package/module.py:line`` of the first frame outside torch's dispatch helpers."""
    while frame is not None and frame.f_code.co_filename.replace(os.sep, "/").endswith(_PASS_THROUGH):
        frame = frame.f_back
    if frame is None:
        return "?"
    path = frame.f_code.co_filename.replace(os.sep, "/")
    path = path.rsplit("site-packages/", 1)[-1] if "site-packages/" in path else "/".join(path.split("/")[-3:])
    return f"{path}:{frame.f_lineno}"


class HostReadCounter(TorchFunctionMode):
    """Counts Python-level host reads of tensor values (:data:`HOST_READS`) while active.

    ``calls``: method name -> count; ``sites``: ``"name@device file:line"`` -> count;
    ``ignored``: the same for CPU reads in :data:`CPU_BOOKKEEPING_SITES` (not in ``total``).
    Entering and leaving may happen in different callback hooks (:meth:`start`/:meth:`stop`).
    Syncs inside C++ are not seen: on a GPU :class:`CudaSyncCounter` sees those.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.sites: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.active = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            first = args[0] if args else None
            kind = first.device.type if isinstance(first, torch.Tensor) else "?"
            site = _site(sys._getframe(1))
            key = f"{name}@{kind} {site}"
            if kind == "cpu" and site.startswith(CPU_BOOKKEEPING_SITES):
                self.ignored[key] += 1
            else:
                self.calls[name] += 1
                self.sites[key] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def start(self) -> None:
        if not self.active:
            self.__enter__()
            self.active = True

    def stop(self) -> None:
        if self.active:
            self.__exit__(None, None, None)
            self.active = False


class CudaSyncCounter:
    """Counts synchronising CUDA calls between :meth:`start` and :meth:`stop` from the
    warnings of ``torch.cuda.set_sync_debug_mode("warn")`` (``count`` is ``None`` on a CPU)."""

    MESSAGE = "synchroniz"  # "called a synchronizing CUDA operation"

    def __init__(self) -> None:
        self.count: int | None = None
        self.examples: list[str] = []
        self._catcher: Any = None
        self._caught: list[Any] | None = None
        self._previous: int | None = None

    def start(self) -> None:
        if not torch.cuda.is_available() or self._catcher is not None:
            return
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        self._previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        if self._catcher is None:
            return
        torch.cuda.set_sync_debug_mode(self._previous or 0)
        self._catcher.__exit__(None, None, None)
        hits = [w for w in self._caught or [] if self.MESSAGE in str(w.message)]
        self.count = len(hits)
        self.examples = sorted({f"{os.path.basename(w.filename)}:{w.lineno}" for w in hits})[:8]
        self._catcher, self._caught = None, None


# -- torch.compile ------------------------------------------------------------------------------
def dynamo_counts() -> dict[str, int]:
    """Dynamo's global counters: graphs compiled, frames converted (each cache miss), captured calls, graph breaks."""
    from torch._dynamo.utils import counters

    return {
        "unique_graphs": int(counters["stats"]["unique_graphs"]),
        "frames_total": int(counters["frames"]["total"]),
        "frames_ok": int(counters["frames"]["ok"]),
        "calls_captured": int(counters["stats"]["calls_captured"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }


# -- environment ------------------------------------------------------------------------------------
@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's per-fit banners and advice (warnings and INFO logs)."""
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


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context Lightning's precision plugin uses for ``precision``."""
    kind = torch.device(device).type
    if "mixed" in precision and precision.startswith("bf16"):
        return torch.autocast(device_type=kind, dtype=torch.bfloat16)
    if "mixed" in precision and precision.startswith("16"):
        return torch.autocast(device_type=kind, dtype=torch.float16)
    return contextlib.nullcontext()
