"""The benchmark's JSON file and its printed table; no torch import (the shell script calls it).

The file is rewritten atomically (temporary file + rename) after every stage and every run,
so a stage killed by its time limit leaves every figure measured so far. Stages merge into
one file: top-level sections are replaced, rows of ``runs`` are updated key by key.

``python -m experiments.benchmark.table --json F --print``: the table of a result file;
``--record-stage NAME --rc RC --wall S --limit S``: note a stage's exit status in it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
TOP_LEVEL = ("device", "lightning_overhead_ms_per_step", "data_speedup_vs_torchvision", "runs")
FIGURES = (
    "images_per_s",
    "ms_per_step",
    "cpu_ms_per_step",
    "tflops",
    "mfu",
    "mfu_datasheet",
    "peak_mem_gib",
    "host_syncs_per_step",
    "host_sync_sites",
    "host_reads_per_step",
    "host_read_calls",
    "fit_s",
)
#: Keys of every row, ``None`` until measured (``*_compiled``: the same figure with compile on).
ROW_KEYS = (
    "run",
    "experiment",
    "teacher_image_size",
    "status",
    "status_compiled",
    "batch_size",
    "precision",
    "dataset",
    "built_by",
    "gflop_per_image",
    "teacher_gflop_per_image",
    "teacher_flop_share",
    *FIGURES,
    *(f"{k}_compiled" for k in FIGURES),
    "compiled_graphs",
    "compiled_frames",
    "graph_breaks",
)
#: Figures that need a GPU (``null`` on a CPU).
GPU_ONLY = ("mfu", "mfu_datasheet", "peak_mem_gib", "host_syncs_per_step")


def skeleton(runs: Sequence[tuple[str, str, int | None]]) -> dict[str, Any]:
    """An empty result: every top-level key, a row of ``None`` per ``(run, experiment, size)``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "experiments.benchmark",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": None,
        "complete": False,
        "device": None,
        "reference": None,
        "lightning_overhead_ms_per_step": None,
        "lightning_overhead_ratio_plan_model": None,
        "data_speedup_vs_torchvision": None,
        "overhead": None,
        "data_path": None,
        "dinov2_224_vs_112": None,
        "train_check": None,
        "runs": [dict(dict.fromkeys(ROW_KEYS), run=r, experiment=e, teacher_image_size=s) for r, e, s in runs],
        "stages": {},
        "notes": [],
    }


def load(path: str | Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save(path: str | Path, result: dict[str, Any]) -> None:
    """Write ``result`` as JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def row(result: dict[str, Any], run: str) -> dict[str, Any]:
    for r in result["runs"]:
        if r["run"] == run:
            return r
    raise KeyError(run)


def record_stage(path: str | Path, name: str, **fields: Any) -> dict[str, Any]:
    result = load(path) or skeleton([])
    stage = result.setdefault("stages", {}).setdefault(name, {})
    stage.update(fields)
    if "rc" in fields:
        stage["timed_out"] = fields["rc"] in (124, 137)
    save(path, result)
    return result


# -- printing ------------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = value * scale if scale != 1.0 else value
        return format(int(value) if spec == "d" else value, spec)
    return str(value)


_COLUMNS = (
    ("run", "run", "", 1.0),
    ("batch", "batch_size", "d", 1.0),
    ("img/s", "images_per_s", ",.0f", 1.0),
    ("img/s comp", "images_per_s_compiled", ",.0f", 1.0),
    ("GFLOP/img", "gflop_per_image", ".2f", 1.0),
    ("teacher", "teacher_flop_share", ".0%", 1.0),
    ("TFLOP/s", "tflops", ".1f", 1.0),
    ("TFLOP/s comp", "tflops_compiled", ".1f", 1.0),
    ("MFU", "mfu", ".1%", 1.0),
    ("MFU comp", "mfu_compiled", ".1%", 1.0),
    ("MFU sheet", "mfu_datasheet", ".1%", 1.0),
    ("GiB", "peak_mem_gib", ".1f", 1.0),
    ("syncs/step", "host_syncs_per_step", ".1f", 1.0),
    ("reads/step", "host_reads_per_step", ".1f", 1.0),
    ("graphs", "compiled_graphs", "d", 1.0),
    ("breaks", "graph_breaks", "d", 1.0),
)


def format_table(result: dict[str, Any]) -> str:
    header = [c[0] for c in _COLUMNS]
    cells = [
        [_fmt(r.get(key), spec, scale) if key != "run" else r["run"] for _, key, spec, scale in _COLUMNS]
        for r in result.get("runs", [])
    ]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]
    lines = [f"kdbias benchmark ({result.get('mode')}) on {(result.get('device') or {}).get('name')}"]
    ref = result.get("reference") or {}
    if ref.get("matmul_bf16_tflops"):
        lines.append(
            f"MFU reference: measured bf16 matmul {ref['matmul_bf16_tflops']:.0f} TFLOP/s; "
            f"MFU sheet: vs {ref.get('datasheet_bf16_dense_tflops')} TFLOP/s ({ref.get('datasheet')})"
        )
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(cell, widths)) for cell in cells]
    for r in result.get("runs", []):
        for key in ("status", "status_compiled"):
            if r.get(key) not in (None, "ok"):
                lines.append(f"  {r['run']} ({key}): {str(r[key])[:200]}")
    over = result.get("overhead") or {}
    tiny, full = over.get("tiny") or {}, over.get("plan_model") or {}
    if tiny:
        cpu = tiny.get("overhead_ms_per_step_cpu")
        lines.append(
            f"Lightning overhead (tiny model, {tiny.get('rounds')} A/B rounds): "
            f"{_fmt(tiny.get('overhead_ms_per_step'), '.2f')} ms/step wall"
            + (f", {cpu:.2f} ms/step CPU time" if cpu is not None else "")
            + f" on {_fmt(tiny.get('plain_ms_per_step'), '.2f')} ms plain steps (target <= 1 ms)"
        )
    if full:
        lines.append(
            f"Lightning / plain at the plan's model (batch {full.get('batch_size')}): "
            f"{_fmt(full.get('ratio'), '.3f')} wall"
            + (f", {full['ratio_cpu']:.3f} CPU time" if full.get("ratio_cpu") is not None else "")
        )
    data = result.get("data_path") or {}
    for workers, d in (data.get("by_workers") or {}).items():
        lines.append(
            f"data path, {workers} workers: kdbias {d['kdbias_images_per_s']:,.0f} img/s vs torchvision "
            f"{d['torchvision_images_per_s']:,.0f} img/s -> x{d['speedup']:.1f}"
        )
    v = result.get("dinov2_224_vs_112") or {}
    if v.get("224") and v.get("112"):
        lines.append(
            f"DINOv2 teacher taps @ batch {v['batch_size']}: 224 px {v['224']['ms_per_batch']:.1f} ms "
            f"({v['224']['gflop_per_image']:.2f} GFLOP/img) vs 112 px {v['112']['ms_per_batch']:.1f} ms "
            f"({v['112']['gflop_per_image']:.2f} GFLOP/img): x{v['speedup_112_vs_224']:.2f} faster"
        )
    t = result.get("train_check") or {}
    if t.get("steps") is not None:
        lines.append(
            f"exp3 train check ({t['precision']}, batch {t['batch_size']}, {t['seconds']:.0f} s, compile "
            f"{t['compile_backend']}): {t['steps']} steps, {_fmt(t.get('images_per_s_after_warmup'), ',.0f')} img/s "
            f"after warm-up, peak {_fmt(t.get('peak_mem_gib'), '.1f')} GiB, loss {_fmt(t.get('loss_first'), '.3f')} "
            f"-> {_fmt(t.get('loss_last'), '.3f')} (falling: {t.get('loss_falling')}), recompiles after warm-up: "
            f"{_fmt(t.get('graphs_after_warmup'), 'd')} graphs / {_fmt(t.get('frames_after_warmup'), 'd')} frames"
        )
    elif t.get("status"):
        lines.append(f"exp3 train check: {t['status']}")
    for name, stage in (result.get("stages") or {}).items():
        lines.append(
            f"stage {name}: "
            + ", ".join(f"{k}={_fmt(v, '.0f' if isinstance(v, float) else '')}" for k, v in stage.items())
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark.table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="the result file")
    parser.add_argument("--print", action="store_true", help="print its table")
    parser.add_argument("--record-stage", default=None, help="note this stage's exit status in the file")
    parser.add_argument("--rc", type=int, default=None)
    parser.add_argument("--wall", type=float, default=None)
    parser.add_argument("--limit", type=float, default=None)
    args = parser.parse_args(argv)
    if args.record_stage:
        record_stage(args.json, args.record_stage, rc=args.rc, wall_s=args.wall, limit_s=args.limit)
    if args.print:
        result = load(args.json)
        print(format_table(result) if result else f"no result in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
