"""python -m experiments.benchmark: every run of the matrix, measured in the real experiment Trainer.

Stages (``--stages``, in this order; the JSON is rewritten after every run and section):

- ``eager``: the bf16 matmul rate (MFU reference, GPU); per run, compile off: images/s,
  GFLOP per image and the teacher's share, TFLOP/s, MFU, peak memory, host syncs and host
  reads per step; Lightning's overhead; the data path vs torchvision; DINOv2 224 vs 112 px;
- ``train``: a timed EXP-3 run with compile on (loss falls, no recompiles after warm-up);
- ``compile``: per run, compile on: images/s, graphs compiled, ... (``*_compiled``).

On a GPU every run uses its paper preset (per-GPU batch, bf16-mixed) with random weights
(offline). ``--dry-run`` runs every stage on the CPU at toy size (smoke preset, 2-block
networks, batch 4-8, a few steps, the ``aot_eager`` compile backend) to check the tooling.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STAGES = ("eager", "train", "compile")
COMPILE_ORDER = ("exp3_224", "baseline", "exp1", "exp3_112", "exp2", "teacher_resnet18", "teacher_convnextv2")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.benchmark",
        description=__doc__.split("\n\n")[0],
        epilog="See experiments/benchmark/__main__.py for the stages and gpu_check.sh for the one-command GPU check.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--dry-run",
        "--smoke",
        dest="dry_run",
        action="store_true",
        help="every stage on the CPU at toy size (checks the tooling)",
    )
    p.add_argument("--table", action=argparse.BooleanOptionalAction, default=True, help="print the table at the end")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)}")
    p.add_argument("--json", dest="json_path", default=None, help="result file (merged into when it exists)")
    p.add_argument("--fresh", action="store_true", help="start a new result file instead of merging")
    p.add_argument("--runs", default="all", help="comma list of runs or experiments (exp3: both sizes)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds this process may spend; runs and sections not started in time are skipped",
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="the same as an absolute time (Unix seconds; gpu_check.sh passes its stage limits)",
    )
    p.add_argument("--train-s", type=float, default=None, help="train check seconds (default 120; 8 with --dry-run)")
    p.add_argument(
        "--epoch-steps",
        type=int,
        default=None,
        help="train check epoch length in steps (default: CIFAR-10's at batch 512, 88; 6 with --dry-run)",
    )
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; aot_eager dry)")
    p.add_argument(
        "--data",
        default="auto",
        choices=["auto", "cifar10", "digits"],
        help="auto: CIFAR-10 when its files are in --data-dir, else the digits (tiled)",
    )
    p.add_argument("--data-dir", default="data")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: 1 with --dry-run)")
    return p


def log(message: str) -> None:
    print(f"[benchmark {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _error(error: BaseException) -> str:
    return f"error: {type(error).__name__}: {' '.join(str(error).split())[:400]}"


class Session:
    """One benchmark process: the plan, the result, its file and the time budget."""

    def __init__(
        self, args: argparse.Namespace, plan: Any, specs: list[Any], specs_all: list[Any], result: dict[str, Any]
    ) -> None:
        self.args, self.plan, self.specs, self.specs_all, self.result = args, plan, specs, specs_all, result
        ends = [time.time() + args.budget_s] if args.budget_s is not None else []
        self.deadline = min(ends + ([args.deadline] if args.deadline is not None else []), default=None)
        self._teachers: dict[str, Path] | None = None

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.time()

    def save(self) -> None:
        from .table import save

        if self.args.json_path:
            save(self.args.json_path, self.result)

    def teachers(self) -> dict[str, Path]:
        from kdbias import registry

        from .experiment import teacher_checkpoint

        if self._teachers is None:
            needed = sorted({e.teacher for e in registry.EXPERIMENTS.values() if e.teacher})
            folder = self.plan.runs_dir.parent / "teachers"
            self._teachers = {name: teacher_checkpoint(name, self.plan, folder) for name in needed}
        return self._teachers

    def derive(self, row: dict[str, Any]) -> None:
        from .measure import achieved_tflops, mfu

        ref = self.result.get("reference") or {}
        for suffix in ("", "_compiled"):
            tflops = achieved_tflops(row.get("gflop_per_image"), row.get(f"images_per_s{suffix}"))
            row[f"tflops{suffix}"] = tflops
            row[f"mfu{suffix}"] = mfu(tflops, ref.get("matmul_bf16_tflops"))
            row[f"mfu_datasheet{suffix}"] = mfu(tflops, ref.get("datasheet_bf16_dense_tflops"))

    def section(self, key: str, need_s: float, fn: Any) -> Any:
        """Run one section if the budget allows; its result (or why not) goes under ``key``."""
        if self.left() < need_s:
            self.result[key] = {"status": "skipped: time budget"}
            log(f"{key}: skipped (time budget)")
            return None
        start = time.perf_counter()
        try:
            value = fn()
            value["wall_s"] = time.perf_counter() - start
        except Exception as error:
            traceback.print_exc()
            value = {"status": _error(error)}
        self.result[key] = value
        self.save()
        return value

    def run_rows(self, specs: list[Any], compiled: bool, need_s: float) -> None:
        from .experiment import release
        from .table import row as row_of
        from .train_step import measure_run

        status = "status_compiled" if compiled else "status"
        for spec in specs:
            row = row_of(self.result, spec.name)
            if self.left() < need_s:
                row[status] = "skipped: time budget"
                log(f"{spec.name} ({'compile' if compiled else 'eager'}): skipped (time budget)")
                self.save()
                continue
            try:
                if compiled:
                    import torch

                    torch._dynamo.reset()
                count = not compiled or row.get("gflop_per_image") is None  # FLOPs: counted eagerly, once
                row.update(measure_run(spec, self.plan, self.teachers(), compiled=compiled, count=count))
                row[status] = "ok"
            except Exception as error:
                traceback.print_exc()
                row[status] = _error(error)
            finally:
                release(self.plan)  # also after an out-of-memory error
            self.derive(row)
            self.save()
            suffix = "_compiled" if compiled else ""
            log(
                f"{spec.name}{' compiled' if compiled else ''}: {row[status]}; "
                f"{row.get('images_per_s' + suffix) or 0:,.1f} img/s, {row.get('gflop_per_image') or 0:.3f} GFLOP/img, "
                f"teacher share {row.get('teacher_flop_share')}, syncs/step {row.get('host_syncs_per_step' + suffix)}, "
                f"reads/step {row.get('host_reads_per_step' + suffix)}, graphs {row.get('compiled_graphs')}"
            )


def machine_info() -> dict[str, Any]:
    """What ran the benchmark: device, CPU, versions, threads."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "type": "cuda" if cuda else "cpu",
        "name": torch.cuda.get_device_name(0) if cuda else f"cpu ({cpu})",
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "python": platform.python_version(),
    }
    for package in ("lightning", "timm", "torchvision", "jsonargparse"):
        try:
            info[package] = __import__(package).__version__
        except Exception:
            info[package] = None
    return info


def stage_eager(s: Session) -> None:
    from .data_path import compare_data_paths
    from .measure import DATASHEET_NOTE, datasheet_peak, matmul_tflops
    from .teacher_cost import dinov2_tradeoff
    from .train_step import measure_overhead

    plan, gpu = s.plan, s.plan.cuda
    rate = matmul_tflops(plan.device) if gpu else None
    sheet = datasheet_peak(s.result["device"]["name"]) if gpu else None
    s.result["reference"] = {
        "matmul_bf16_tflops": rate,
        "matmul": "bf16 8192 x 8192 x 8192, measured in this run",
        "datasheet_bf16_dense_tflops": sheet,
        "datasheet": DATASHEET_NOTE if sheet else None,
    }
    s.save()
    s.run_rows(s.specs, compiled=False, need_s=12 if gpu else 2)
    baseline = next(spec for spec in s.specs_all if spec.experiment == "baseline")
    over = s.section("overhead", 25 if gpu else 3, lambda: measure_overhead(plan, baseline))
    if over and "tiny" in over:
        s.result["lightning_overhead_ms_per_step"] = over["tiny"]["overhead_ms_per_step"]
        s.result["lightning_overhead_ratio_plan_model"] = over["plan_model"]["ratio"]
    data = s.section("data_path", 20 if gpu else 3, lambda: compare_data_paths(plan))
    if data and "speedup_at_default_workers" in data:
        s.result["data_speedup_vs_torchvision"] = data["speedup_at_default_workers"]
    s.section("dinov2_224_vs_112", 8 if gpu else 1, lambda: dinov2_tradeoff(plan))
    s.save()


def stage_train(s: Session) -> None:
    from .train_check import train_check

    seconds = s.args.train_s if s.args.train_s is not None else (8.0 if s.args.dry_run else 120.0)
    epoch_steps = s.args.epoch_steps or (6 if s.args.dry_run else 88)
    log(f"train check: exp3_224 for {seconds:.0f} s (compile backend {s.plan.compile_backend or 'inductor'})")

    def progress(partial: dict[str, Any]) -> None:  # after every epoch: a time-out still leaves figures
        s.result["train_check"] = partial
        s.save()

    s.section("train_check", 0, lambda: train_check(s.plan, seconds, epoch_steps, progress))


def stage_compile(s: Session) -> None:
    rank = {name: i for i, name in enumerate(COMPILE_ORDER)}
    specs = sorted(s.specs, key=lambda spec: rank.get(spec.name, len(rank)))
    s.run_rows(specs, compiled=True, need_s=40 if s.plan.cuda else 3)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: never wait on the hub
    stages = [name.strip() for name in args.stages.split(",") if name.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    import torch

    from .experiment import Plan, matrix, select_runs
    from .table import load, skeleton

    if args.threads or (args.dry_run and args.threads is None):
        torch.set_num_threads(args.threads or 1)
    specs_all = matrix()
    specs = select_runs(args.runs)
    rows = [(spec.name, spec.experiment, spec.teacher_image_size) for spec in specs_all]
    result = (None if args.fresh or not args.json_path else load(args.json_path)) or skeleton(rows)
    known = {r["run"] for r in result.get("runs", [])}
    result["runs"] += skeleton([r for r in rows if r[0] not in known])["runs"]
    result["device"] = machine_info()
    result["mode"] = "dry-run" if args.dry_run else ("gpu" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="kdbias-bench-") as root:
        plan = Plan.make(args.dry_run, Path(root) / "runs", args.data, args.data_dir, args.compile_backend)
        session = Session(args, plan, specs, specs_all, result)
        result.setdefault("notes", [])
        note = (
            f"{result['mode']}: data {plan.dataset}; random weights (offline); analytics off; measured steps are "
            f"non-logging steps; compile backend {plan.compile_backend or 'inductor'}; compile sweep: no sanity "
            "validation (compiled_graphs = the training step's graphs; the train check covers evaluation graphs)"
        )
        if note not in result["notes"]:
            result["notes"].append(note)
        for name in stages:
            start = time.perf_counter()
            log(f"stage {name} ({result['mode']}, {plan.device}, budget {session.left():.0f} s)")
            result["stages"].setdefault(name, {})["status"] = "running"
            session.save()
            try:
                {"eager": stage_eager, "train": stage_train, "compile": stage_compile}[name](session)
                status = "complete"
            except Exception as error:
                traceback.print_exc()
                status = _error(error)
            result["stages"][name].update(status=status, python_wall_s=time.perf_counter() - start)
            session.save()
    done = result.get("stages", {})
    result["complete"] = all(done.get(name, {}).get("status") == "complete" for name in STAGES)
    session.save()
    return result


if __name__ == "__main__":
    from .table import format_table

    outcome = main()
    if "--no-table" not in sys.argv:
        print(format_table(outcome))
