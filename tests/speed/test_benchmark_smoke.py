"""The benchmark tooling on a configuration of seconds: matrix, overrides, builders, JSON, table."""

import json
import re
from pathlib import Path

import pytest
from speed_helpers import ROOT, spec_of

from experiments.benchmark import __main__ as bench
from experiments.benchmark import table
from experiments.benchmark.experiment import (
    TINY_KWARGS,
    Plan,
    build,
    cli_args,
    matrix,
    run_overrides,
    select_runs,
    teacher_checkpoint,
)
from kdbias import registry

RUNS = ["teacher_resnet18", "teacher_convnextv2", "baseline", "exp1", "exp2", "exp3_224", "exp3_112"]


def test_matrix_comes_from_the_registry():
    specs = matrix()
    assert [s.name for s in specs] == RUNS
    assert {s.experiment for s in specs} == {e.name for e in registry.EXPERIMENTS.values() if e.control_of is None}
    assert [(s.name, s.teacher_image_size) for s in specs if s.experiment == "exp3"] == [
        ("exp3_224", 224),
        ("exp3_112", 112),
    ]
    assert [s.name for s in select_runs("baseline,exp3")] == ["baseline", "exp3_224", "exp3_112"]
    with pytest.raises(ValueError, match="unknown run"):
        select_runs("exp9")


def test_overrides_and_their_command_line(dry_plan, tmp_path):
    teachers = {"teacher_resnet18": tmp_path / "t.ckpt"}
    o = run_overrides(spec_of("exp1"), dry_plan, 7, teachers=teachers)
    assert o["analytics.enabled"] is False and o["trainer.max_steps"] == 7 and o["model.compile"] is False
    assert o["model.teacher"] == str(tmp_path / "t.ckpt") and o["model.arch_kwargs"] == TINY_KWARGS["deit_tiny_p4"]
    exp3 = run_overrides(spec_of("exp3_112"), dry_plan, 3, compile=True)
    assert exp3["model.teacher_image_size"] == 112 and exp3["model.teacher_pretrained"] is None
    assert exp3["model.compile"] == "aot_eager" and exp3["model.layer_pairs"] == [[0, 0], [1, 1]]
    with pytest.raises(ValueError, match="needs a checkpoint"):
        run_overrides(spec_of("exp2"), dry_plan, 3)
    args = cli_args(
        {
            "trainer.max_steps": 5,
            "model.teacher": None,
            "model.arch_kwargs": {"depth": 2},
            "data.dataset": "digits",
            "analytics.enabled": False,
        }
    )
    assert args == [
        "--trainer.max_steps",
        "5",
        "--model.teacher",
        "null",
        "--model.arch_kwargs",
        '{"depth": 2}',
        "--data.dataset",
        "digits",
        "--analytics.enabled",
        "false",
    ]


def test_the_real_trainer_comes_from_kdbias_cli(dry_plan):
    built = build(spec_of("baseline"), dry_plan, run_overrides(spec_of("baseline"), dry_plan, 5))
    names = {type(c).__name__ for c in built.trainer.callbacks}
    assert built.built_by == "KDBiasCLI"
    assert {"RunCheckpoint", "SummaryCallback", "ScheduleMonitor", "NonFiniteGuard", "RNGStateCallback"} <= names
    assert built.trainer.max_steps == 5 and built.datamodule.dataset == "digits"
    assert len(built.module.model.blocks) == 2  # the tiny override reached the module


def test_every_run_builds_on_the_paper_preset(tmp_path):
    # what the GPU run builds (paper preset: bf16-mixed, per-GPU batches), tiny networks, no fit
    plan = Plan.make(False, tmp_path / "runs")
    plan.tiny = True
    folder = tmp_path / "teachers"
    teachers = {name: teacher_checkpoint(name, plan, folder) for name in ("teacher_resnet18", "teacher_convnextv2")}
    batches = {}
    for spec in matrix():
        overrides = run_overrides(spec, plan, 5, compile=spec.name == "exp3_224", teachers=teachers)
        built = build(spec, plan, overrides)
        assert built.built_by == "KDBiasCLI" and built.trainer.max_steps == 5
        assert str(built.trainer.precision) == "bf16-mixed" and built.datamodule.dataset == plan.dataset
        batches[spec.name] = built.datamodule.batch_size
        if spec.experiment == "exp3":
            assert built.module.hparams.teacher_image_size == spec.teacher_image_size
            assert built.module.teacher.source == "random"
    assert batches == {
        "teacher_resnet18": 128,
        "teacher_convnextv2": 128,
        "baseline": 1024,
        "exp1": 1024,
        "exp2": 1024,
        "exp3_224": 512,
        "exp3_112": 512,
    }


def test_benchmark_smoke_writes_the_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    result = bench.main(["--dry-run", "--stages", "eager", "--runs", "baseline,exp3_112", "--json", str(path)])
    saved = json.loads(path.read_text())
    assert saved == json.loads(json.dumps(result, default=str))
    assert set(table.TOP_LEVEL) <= set(saved)
    assert saved["mode"] == "dry-run" and saved["device"]["type"] == "cpu"
    assert saved["stages"]["eager"]["status"] == "complete" and saved["complete"] is False  # train, compile not run
    rows = {r["run"]: r for r in saved["runs"]}
    assert list(rows) == RUNS  # a row per run of the matrix, measured or not
    for name in ("baseline", "exp3_112"):
        r = rows[name]
        assert set(table.ROW_KEYS) <= set(r) and r["status"] == "ok", r["status"]
        assert r["images_per_s"] > 0 and r["batch_size"] == 4 and r["built_by"] == "KDBiasCLI"
        assert r["images_per_s"] == pytest.approx(4 / (r["ms_per_step"] / 1e3))
        assert r["tflops"] == pytest.approx(r["gflop_per_image"] * r["images_per_s"] / 1e3)
        assert r["host_reads_per_step"] == 0, r["host_read_calls"]
        for key in table.GPU_ONLY:
            assert r[key] is None, key
    assert rows["baseline"]["teacher_flop_share"] == 0
    assert 0 < rows["exp3_112"]["teacher_flop_share"] < 1
    assert rows["exp1"]["status"] is None and rows["exp1"]["images_per_s"] is None
    tiny = saved["overhead"]["tiny"]
    assert saved["lightning_overhead_ms_per_step"] == tiny["overhead_ms_per_step"]
    assert tiny["rounds"] == 3 and tiny["overhead_ms_per_step_cpu"] is not None
    assert saved["lightning_overhead_ratio_plan_model"] == saved["overhead"]["plan_model"]["ratio"]
    data = saved["data_path"]
    assert set(data["by_workers"]) == {"0", str(data["default_workers"])}
    assert saved["data_speedup_vs_torchvision"] == data["by_workers"][str(data["default_workers"])]["speedup"]
    d = saved["dinov2_224_vs_112"]
    assert d["224"]["gflop_per_image"] > 3 * d["112"]["gflop_per_image"]  # 4x the tokens
    assert d["flop_ratio_224_vs_112"] == pytest.approx(d["224"]["gflop_per_image"] / d["112"]["gflop_per_image"])
    printed = table.format_table(saved)
    assert "exp3_112" in printed and "Lightning overhead" in printed and "data path, 0 workers" in printed


def test_time_budget_skips_what_it_cannot_start(tmp_path):
    path = tmp_path / "bench.json"
    result = bench.main(
        ["--dry-run", "--stages", "compile", "--runs", "baseline", "--budget-s", "0", "--json", str(path)]
    )
    assert table.row(result, "baseline")["status_compiled"] == "skipped: time budget"
    assert result["stages"]["compile"]["status"] == "complete"


def test_table_records_stages_atomically(tmp_path):
    path = tmp_path / "r.json"
    table.save(path, table.skeleton([("baseline", "baseline", None)]))
    assert (
        table.main(["--json", str(path), "--record-stage", "eager", "--rc", "124", "--wall", "170", "--limit", "170"])
        == 0
    )
    saved = table.load(path)
    assert saved["stages"]["eager"] == {"rc": 124, "wall_s": 170.0, "limit_s": 170.0, "timed_out": True}
    assert not list(tmp_path.glob(".r.json.*"))  # no temporary file left behind
    assert "baseline" in table.format_table(saved)


def test_cli_help_and_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "--dry-run" in capsys.readouterr().out
    args = bench.build_parser().parse_args(["--smoke", "--json", "x.json", "--stages", "eager,compile"])
    assert args.dry_run and args.json_path == "x.json" and args.stages == "eager,compile"


def test_the_library_does_not_import_the_tooling():
    pattern = re.compile(r"^\s*(from|import)\s+experiments\b", re.MULTILINE)
    offenders = [str(p) for p in (ROOT / "kdbias").rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
    assert not (ROOT / "kdbias" / "benchmark.py").exists()
    assert Path(bench.__file__).parent == ROOT / "experiments" / "benchmark"
