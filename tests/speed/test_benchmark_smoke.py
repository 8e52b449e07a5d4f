"""kdbias.benchmark: its arithmetic, its FLOP counts, and its JSON on a configuration of seconds."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from kdbias import benchmark as bench
from kdbias.benchmark import BenchConfig, count_flops, median_ratio, overhead_summary, step_time


# -- arithmetic -------------------------------------------------------------------------------
def test_step_time_is_median_or_window_mean():
    assert step_time([0.1, 0.5, 0.2]) == pytest.approx(0.2)
    assert step_time([0.1, 0.5, 0.3], windowed=True) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="no timed steps"):
        step_time([])


def test_median_ratio_pairs_rounds():
    # round 2 is slow for both sides: pairing cancels it; the median drops the odd round
    assert median_ratio([1.1, 2.2, 1.5], [1.0, 2.0, 1.0]) == pytest.approx(1.1)
    with pytest.raises(ValueError):
        median_ratio([1.0], [1.0, 2.0])


def test_overhead_summary_figures():
    out = overhead_summary([0.11, 0.30, 0.12], [0.10, 0.25, 0.10], batch_size=32,
                           lightning_cpu_s=[0.2, 0.2, 0.3], plain_cpu_s=[0.2, 0.1, 0.3])
    assert out["lightning_ms_per_step"] == pytest.approx(120.0)
    assert out["plain_ms_per_step"] == pytest.approx(100.0)
    assert out["lightning_images_per_s"] == pytest.approx(32 / 0.12)
    assert out["plain_images_per_s"] == pytest.approx(320.0)
    assert out["round_ratios"] == pytest.approx([1.1, 1.2, 1.2])
    assert out["lightning_overhead_ratio"] == pytest.approx(1.2)
    assert out["round_ratios_cpu_time"] == pytest.approx([1.0, 2.0, 1.0])
    assert out["lightning_overhead_ratio_cpu_time"] == pytest.approx(1.0)
    assert overhead_summary([0.1], [0.1], 8)["lightning_overhead_ratio_cpu_time"] is None


def test_step_clock_counts_only_the_timed_window():
    clock = bench.StepClock(warmup=2, steps=3, device="cpu")
    for _ in range(clock.total_steps + 2):  # ticks past the window are ignored
        clock.tick()
    assert len(clock.stamps) == 4 and len(clock.intervals()) == 3


def test_parse_runs_expands_aliases_and_rejects_unknown():
    assert bench.parse_runs("baseline,exp3") == ["baseline", "exp3_224", "exp3_112"]
    assert bench.parse_runs("all") == list(bench.RUNS)
    with pytest.raises(ValueError, match="unknown run"):
        bench.parse_runs("exp9")


# -- FLOPs ---------------------------------------------------------------------------------------------
def test_count_flops_linear_forward_and_backward_closed_form():
    layer = torch.nn.Linear(8, 16, bias=False)
    x = torch.randn(4, 8, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * 4 * 8 * 16
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 4 * 8 * 16  # fwd + grad_x + grad_w


def test_count_flops_sees_cpu_flash_attention():
    q = torch.randn(2, 3, 65, 64)
    # two batched matmuls: Q K^T and A V
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 2 * (2 * 2 * 3 * 65 * 65 * 64)


def test_paper_settings_follow_the_recipes():
    assert bench.paper_settings(bench.RUNS["exp3_224"])["batch_size"] == 512
    assert bench.paper_settings(bench.RUNS["baseline"])["batch_size"] == 1024
    assert bench.paper_settings(bench.RUNS["teacher_resnet18"])["optimizer"] == "sgd"
    cfg = BenchConfig(device="cpu", smoke=True).resolve()
    assert cfg.batch_for(bench.RUNS["exp3_224"]) == 16 and cfg.threads == 1 and cfg.sync_check is False


# -- the whole benchmark, tiny ---------------------------------------------------------------------------
TOP_LEVEL = {
    "schema_version", "tool", "date", "complete", "machine", "config", "data_source",
    "lightning_overhead_ratio", "lightning_overhead_ratio_cpu_time", "data_speedup_vs_torchvision", "matmul_bf16_tflops", "data", "dinov2",
    "runs", "wall_s",
}
RUN_KEYS = {
    "run", "recipe", "model", "teacher", "teacher_image_size", "batch_size", "paper_batch_size", "optimizer",
    "mix", "precision", "compile", "flops_per_image", "teacher_flops_per_image", "student_flops_per_image",
    "lightning_ms_per_step", "plain_ms_per_step", "lightning_images_per_s", "plain_images_per_s",
    "lightning_overhead_ratio", "round_ratios", "lightning_overhead_ratio_cpu_time", "round_ratios_cpu_time",
    "step_times_ms", "achieved_tflops", "mfu",
    "host_sync_calls", "cuda_sync_ops_per_step", "status", "wall_s",
}


def test_tiny_benchmark_writes_the_json_schema(tmp_path):
    path = tmp_path / "bench.json"
    cfg = BenchConfig(
        runs=["baseline", "exp3_112"], device="cpu", tiny=True, threads=1, batch_size=4, warmup=1, steps=2, rounds=2,
        data="digits", data_batch=16, data_batches=2, data_reps=2, dinov2_reps=1, flop_batch=2,
        json_path=str(path),
    )
    lines = []
    result = bench.run_benchmark(cfg, log=lines.append)
    saved = json.loads(path.read_text())
    assert saved == json.loads(json.dumps(result, default=str))
    assert TOP_LEVEL <= set(saved)
    assert saved["schema_version"] == bench.SCHEMA_VERSION and saved["complete"] is True
    assert {"device", "cpu", "gpu", "torch", "threads"} <= set(saved["machine"])
    assert saved["machine"]["gpu"] is None and saved["matmul_bf16_tflops"] is None
    assert saved["data_source"].startswith("digits")
    assert saved["data_speedup_vs_torchvision"] == pytest.approx(saved["data"]["speedup"])
    assert saved["data"]["kdbias_images_per_s"] > 0 and saved["data"]["torchvision_images_per_s"] > 0

    rows = {row["run"]: row for row in saved["runs"]}
    assert list(rows) == ["baseline", "exp3_112"]
    for row in rows.values():
        assert RUN_KEYS <= set(row), RUN_KEYS - set(row)
        assert row["status"] == "ok"
        assert len(row["round_ratios"]) == len(row["round_ratios_cpu_time"]) == 2
        assert row["lightning_overhead_ratio_cpu_time"] > 0
        assert len(row["step_times_ms"]["lightning"]) == len(row["step_times_ms"]["plain"]) == 2 * 2
        assert row["lightning_overhead_ratio"] == pytest.approx(sorted(row["round_ratios"])[0] / 2
                                                                 + sorted(row["round_ratios"])[1] / 2)
        assert row["lightning_images_per_s"] == pytest.approx(4 / (row["lightning_ms_per_step"] / 1e3))
        assert row["flops_per_image"] == pytest.approx(row["student_flops_per_image"] + row["teacher_flops_per_image"])
        assert row["mfu"] is None and row["host_sync_calls"] == {}
    assert rows["baseline"]["teacher_flops_per_image"] == 0
    assert rows["exp3_112"]["teacher_flops_per_image"] > 0
    assert rows["exp3_112"]["teacher_image_size"] == 112
    ratios = [r["lightning_overhead_ratio"] for r in rows.values()]
    assert saved["lightning_overhead_ratio"] == pytest.approx(sum(ratios) / 2)  # median of two
    d = saved["dinov2"]
    assert d["224"]["flops_per_image"] > 3 * d["112"]["flops_per_image"]  # 4x the tokens, at least 4x FLOPs
    assert d["flop_ratio_224_vs_112"] == pytest.approx(d["224"]["flops_per_image"] / d["112"]["flops_per_image"])
    assert "lightning_overhead_ratio" in lines[-1] or "data_speedup" in lines[-1]


def test_time_budget_skips_remaining_runs(tmp_path):
    cfg = BenchConfig(runs=["baseline"], device="cpu", tiny=True, batch_size=4, warmup=1, steps=1, rounds=1,
                      data_bench=False, dinov2=False, sync_check=False, time_budget_s=0.0)
    result = bench.run_benchmark(cfg, log=lambda _: None)
    assert result["runs"] == [{"run": "baseline", "status": "skipped: time budget"}]
    assert result["lightning_overhead_ratio"] is None


def test_train_check_reports_memory_and_loss_trend(tmp_path):
    path = tmp_path / "train.json"
    cfg = BenchConfig(runs=["baseline"], device="cpu", tiny=True, threads=1, batch_size=16, json_path=str(path))
    out = bench.train_check("baseline", 4.0, cfg, warmup_steps=1, log=lambda _: None)
    assert json.loads(path.read_text()) == out
    assert out["steps"] >= 2 and out["finite"]
    assert out["max_memory_gib"] is None  # CPU
    assert math.isfinite(out["loss_first"]) and math.isfinite(out["loss_last"])


def test_cli_parses_the_documented_flags():
    args = vars(bench.build_parser().parse_args(
        ["--smoke", "--json", "x.json", "--no-compile", "--runs", "baseline,exp1", "--time-budget", "60"]))
    assert args["smoke"] and args["json_path"] == "x.json" and args["compile"] is False
    assert args["runs"] == "baseline,exp1" and args["time_budget_s"] == 60.0
    assert bench.build_parser().parse_args(["--compile"]).compile is True
