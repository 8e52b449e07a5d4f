"""Fake run directories for the report, run_all and notebook tests (no training); a
uniquely named module, since `from conftest import ...` depends on which conftest is first
on sys.path when several test folders have one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml


def write_run(
    runs_dir: Path,
    experiment: str,
    seed: int = 0,
    version: int | None = None,
    dataset: str = "digits",
    preset: str = "smoke",
    complete: bool = True,
    last_ckpt: bool = True,
    model: str = "deit_tiny_p4",
    scalars: dict[str, list[tuple[int, float]]] | None = None,
    heatmap: bool = False,
    **summary: Any,
) -> Path:
    """``<runs_dir>/<experiment>/version_<n>`` with hparams.yaml, optional last.ckpt,
    summary.json (when ``complete``), TensorBoard scalars and a CKA heatmap PNG."""
    root = Path(runs_dir) / experiment
    if version is None:
        version = len(list(root.glob("version_*"))) if root.is_dir() else 0
    run_dir = root / f"version_{version}"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    config = dict(experiment=experiment, seed=seed, dataset=dataset, preset=preset, model=model,
                  smoke=preset == "smoke")
    (run_dir / "hparams.yaml").write_text(yaml.safe_dump({"config": config, "seed": seed}))
    if last_ckpt:
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"fake")
    if scalars:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir))
        for tag, points in scalars.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)
        writer.close()
    if heatmap:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        path = run_dir / "analytics" / "cka_heatmaps" / "epoch_2.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        plt.imsave(path, np.eye(4) * 0.8 + 0.1, cmap="magma")
        summary.setdefault("cka_heatmap", "analytics/cka_heatmaps/epoch_2.png")
    if complete:
        full = dict(experiment=experiment, dataset=dataset, preset=preset, seed=seed, epochs_completed=3,
                    best_epoch=2, train_time_s=60.0, teacher_acc=None)
        full.update(summary)
        full.setdefault("best_val_acc", full.get("val_acc"))
        (run_dir / "summary.json").write_text(json.dumps(full, indent=2))
    return run_dir


def attention(px: float, layers: int = 12, heads: int = 3) -> dict[str, Any]:
    """Summary analytics keys for a model whose every head sits at ``px`` pixels."""
    return {
        "attn_dist": {str(i): px for i in range(layers)},
        "attn_dist_heads": {str(i): [px - 1.0, px, px + 1.0][:heads] for i in range(layers)},
    }


@pytest.fixture
def make_run():
    return write_run


@pytest.fixture
def full_matrix(tmp_path: Path) -> Path:
    """A realistic complete smoke matrix (two student seeds), with scalars and heatmaps."""
    return write_full_matrix(tmp_path / "runs")


def write_full_matrix(runs: Path) -> Path:
    """Teachers (seed 0) and four students for seeds 0 and 1, every analytics key filled."""

    def curve(final: float) -> dict[str, list[tuple[int, float]]]:
        return {"val/acc": [(s, final * (s + 1) / 3) for s in range(3)],
                "train/loss": [(s, 2.3 - 0.5 * s) for s in range(3)]}

    write_run(runs, "teacher_resnet18", model="resnet18_cifar", val_acc=0.95, scalars=curve(0.95))
    write_run(runs, "teacher_convnextv2", model="convnextv2_tiny_cifar", val_acc=0.96, scalars=curve(0.96))
    accs = {"baseline": (0.80, 0.82), "exp1": (0.79, 0.80), "exp2": (0.83, 0.84), "exp3": (0.85, 0.86)}
    px = {"baseline": 9.0, "exp1": 6.0, "exp2": 10.0, "exp3": 13.0}
    trace = {"baseline": 80.0, "exp1": 120.0, "exp2": 90.0, "exp3": 60.0}
    teacher = {"exp1": 0.95, "exp2": 0.96, "exp3": 0.70}
    for seed in (0, 1):
        for name in ("baseline", "exp1", "exp2", "exp3"):
            extra: dict[str, Any] = dict(attention(px[name] + seed * 0.1))
            if name != "baseline":
                extra.update(cka_diag_alignment={"exp1": 0.3, "exp2": 0.5, "exp3": 0.8}[name] + seed * 0.01,
                             cka_diag_contrast=0.1, teacher_acc=teacher[name])
            write_run(runs, name, seed=seed, val_acc=accs[name][seed], scalars=curve(accs[name][seed]),
                      heatmap=name != "baseline", hessian_trace=trace[name] + seed, hessian_top_eig=trace[name] / 10,
                      gen_gap_acc=0.05, gen_gap_loss=0.2, **extra)
    return runs
