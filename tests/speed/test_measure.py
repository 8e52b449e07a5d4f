"""The benchmark's arithmetic against numbers written out here, and its probes on closed forms."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from experiments.benchmark import measure
from experiments.benchmark.measure import (
    CudaSyncCounter,
    HostReadCounter,
    StepClock,
    achieved_tflops,
    count_flops,
    datasheet_peak,
    median_ratio,
    mfu,
    overhead_ms,
    overhead_summary,
    step_time,
    window_means,
)


# -- arithmetic --------------------------------------------------------------------------------
def test_step_time_is_the_median_or_the_window_mean():
    assert step_time([0.010, 0.050, 0.020]) == pytest.approx(0.020)
    assert step_time([0.010, 0.050, 0.030], windowed=True) == pytest.approx(0.030)
    with pytest.raises(ValueError, match="no timed steps"):
        step_time([])


def test_median_ratio_pairs_rounds():
    # round 2 is slow on both sides: pairing cancels it; the median drops the odd round
    assert median_ratio([1.1, 2.2, 1.5], [1.0, 2.0, 1.0]) == pytest.approx(1.1)
    with pytest.raises(ValueError):
        median_ratio([1.0], [1.0, 2.0])


def test_overhead_ms_is_the_median_paired_difference():
    # per round: 21-20 = 1 ms, 35-30 = 5 ms, 20.5-20 = 0.5 ms -> median 1 ms
    assert overhead_ms([0.021, 0.035, 0.0205], [0.020, 0.030, 0.020]) == pytest.approx(1.0)
    assert overhead_ms([0.010], [0.012]) == pytest.approx(-2.0)  # Lightning faster in that round
    with pytest.raises(ValueError):
        overhead_ms([], [])


def test_overhead_summary_figures():
    out = overhead_summary(
        [0.021, 0.035, 0.0205],
        [0.020, 0.030, 0.020],
        batch_size=128,
        lightning_cpu_s=[0.0200, 0.0200, 0.0300],
        plain_cpu_s=[0.0195, 0.0190, 0.0300],
    )
    assert out["rounds"] == 3 and out["batch_size"] == 128
    assert out["lightning_ms_per_step"] == pytest.approx(21.0)  # median of 21, 35, 20.5
    assert out["plain_ms_per_step"] == pytest.approx(20.0)
    assert out["overhead_ms_per_step"] == pytest.approx(1.0)
    assert out["round_overheads_ms"] == pytest.approx([1.0, 5.0, 0.5])
    assert out["ratio"] == pytest.approx(1.05)  # ratios 1.05, 1.1667, 1.025
    assert out["lightning_images_per_s"] == pytest.approx(128 / 0.021)
    assert out["plain_images_per_s"] == pytest.approx(6400.0)
    assert out["overhead_ms_per_step_cpu"] == pytest.approx(0.5)  # 0.5, 1.0, 0.0 ms
    assert out["ratio_cpu"] == pytest.approx(0.0200 / 0.0195)
    bare = overhead_summary([0.01], [0.01], 8)
    assert bare["overhead_ms_per_step_cpu"] is None and bare["ratio_cpu"] is None


def test_tflops_and_mfu_arithmetic():
    # 14.6 GFLOP per image at 20,000 images/s = 292 TFLOP/s; vs 730 measured = 40 %, vs 989 = 29.5 %
    tflops = achieved_tflops(14.6, 20_000)
    assert tflops == pytest.approx(292.0)
    assert mfu(tflops, 730.0) == pytest.approx(0.4)
    assert mfu(tflops, 989.0) == pytest.approx(292.0 / 989.0)
    assert achieved_tflops(None, 100.0) is None and achieved_tflops(1.0, None) is None
    assert mfu(None, 989.0) is None and mfu(292.0, None) is None  # a CPU run: no reference


def test_datasheet_peak_names_the_h200():
    assert datasheet_peak("NVIDIA H200") == 989.0
    assert datasheet_peak("NVIDIA A100-SXM4-80GB") is None and datasheet_peak(None) is None
    assert "dense" in measure.DATASHEET_NOTE


def test_window_means_compare_first_and_last_tenth():
    losses = [3.0] * 10 + [2.0] * 80 + [1.0] * 10
    assert window_means(losses) == (3.0, 1.0)
    assert window_means([5.0, 4.0, 3.0]) == (5.0, 3.0)  # at least one value per window


def test_step_clock_stamps_only_its_window():
    clock = StepClock(warmup=2, steps=3, device="cpu")
    for _ in range(clock.total_steps + 2):  # ticks after the window are ignored
        clock.tick()
    assert clock.total_steps == 5 and len(clock.stamps) == 4 and len(clock.intervals()) == 3
    assert clock.per_step() > 0 and clock.cpu_per_step() is not None


# -- FLOPs ---------------------------------------------------------------------------------------------
def test_count_flops_linear_forward_and_backward_closed_form():
    layer = torch.nn.Linear(8, 16, bias=False)
    x = torch.randn(4, 8, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * 4 * 8 * 16
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 4 * 8 * 16  # forward + grad_x + grad_w


def test_count_flops_sees_cpu_flash_attention():
    q = torch.randn(2, 3, 65, 64)
    # two batched matmuls, Q K^T and A V: 2 * (2 * batch * heads * 65 * 65 * 64)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 2 * (2 * 2 * 3 * 65 * 65 * 64)


# -- host reads -----------------------------------------------------------------------------------------
def test_host_read_counter_counts_reads_and_nothing_else():
    t = torch.tensor([1.5])
    counter = HostReadCounter()
    counter.start()
    try:
        t.item()
        bool(t > 0)
        float(t)
        int(t)
        t.tolist()
        t.cpu()
        t.numpy()
        t.sum() * 2  # not a read
    finally:
        counter.stop()
    assert counter.calls == {"item": 1, "__bool__": 1, "__float__": 1, "__int__": 1, "tolist": 1, "cpu": 1, "numpy": 1}
    assert counter.total == 7
    assert any(site.startswith("item@cpu ") and "test_measure.py" in site for site in counter.sites)
    t.item()  # stopped: not counted
    assert counter.total == 7 and not counter.active


def test_host_read_counter_leaves_cpu_optimiser_bookkeeping_out():
    # a non-fused AdamW keeps its step counters on the CPU and reads them with .item(): no device
    # is involved (on a GPU kdbias uses the fused optimiser), so these are listed, not counted
    w = torch.nn.Parameter(torch.randn(3))
    optimizer = torch.optim.AdamW([w], foreach=False)
    w.sum().backward()
    counter = HostReadCounter()
    counter.start()
    try:
        optimizer.step()
    finally:
        counter.stop()
    assert counter.total == 0
    assert sum(counter.ignored.values()) >= 1
    assert all(site.split(" ", 1)[1].startswith("torch/optim/") for site in counter.ignored)


def test_cuda_sync_counter_collects_the_sync_warnings(monkeypatch):
    # the plumbing of the GPU count, simulated: torch warns once per synchronising call in "warn" mode
    modes = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    counter = CudaSyncCounter()
    with measure.quiet():  # as inside a benchmark fit, whose warnings are otherwise silenced
        counter.start()
        for _ in range(3):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
        counter.stop()
    assert counter.count == 3 and modes == ["warn", 0]
    assert counter.examples and counter.examples[0].startswith("test_measure.py:")


def test_cuda_sync_counter_is_none_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    counter = CudaSyncCounter()
    counter.start()
    counter.stop()
    assert counter.count is None
