"""``bash experiments/benchmark/gpu_check.sh --dry-run``: every stage, on the CPU, as the GPU run."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from speed_helpers import GPU_CHECK

from experiments.benchmark import table

RUNS = ["teacher_resnet18", "teacher_convnextv2", "baseline", "exp1", "exp2", "exp3_224", "exp3_112"]


@pytest.mark.subprocess
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_dry_run_writes_the_json(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), GPU_CHECK_PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)  # the script puts the checkout there itself
    start = time.perf_counter()
    done = subprocess.run(
        ["bash", str(GPU_CHECK), "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    wall = time.perf_counter() - start
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert wall < 200, f"dry run took {wall:.0f} s"
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(table.TOP_LEVEL) <= set(result)
    assert result["mode"] == "dry-run" and result["device"]["type"] == "cpu"
    assert [r["run"] for r in result["runs"]] == RUNS
    for stage in ("eager", "train", "compile"):
        assert result["stages"][stage]["status"] == "complete", result["stages"]
        assert result["stages"][stage]["rc"] == 0 and result["stages"][stage]["timed_out"] is False
    for row in result["runs"]:
        assert row["status"] == "ok", (row["run"], row["status"])
        assert row["images_per_s"] > 0 and row["gflop_per_image"] > 0, row["run"]
        assert row["status_compiled"] in ("ok", "skipped: time budget"), (row["run"], row["status_compiled"])
        for key in ("mfu", "mfu_datasheet", "peak_mem_gib", "host_syncs_per_step"):
            assert row[key] is None, (row["run"], key)  # figures that need a GPU
    rows = {r["run"]: r for r in result["runs"]}
    assert rows["baseline"]["teacher_flop_share"] == 0 and rows["exp3_224"]["teacher_flop_share"] > 0
    assert any(r["status_compiled"] == "ok" and r["compiled_graphs"] > 0 for r in result["runs"])
    assert result["lightning_overhead_ms_per_step"] is not None and result["data_speedup_vs_torchvision"] > 0
    assert result["dinov2_224_vs_112"]["speedup_112_vs_224"] > 0
    check = result["train_check"]
    assert check["steps"] > 0 and check["finite"] is True and check["compile"] is True
    assert (tmp_path / "summary.txt").read_text().startswith("kdbias benchmark (dry-run)")
    assert "gpu_check done" in log
