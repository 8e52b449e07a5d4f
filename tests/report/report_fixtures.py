"""Fake run directories for the report, run_all and notebook tests (no training); a
uniquely named module, since `from conftest import ...` depends on which conftest is first
on sys.path when several test folders have one.

:func:`write_run` writes what a finished run leaves: ``config.yaml``, ``hparams.yaml``, an
optional ``last.ckpt`` and, when ``complete``, a ``summary.json`` shaped like the runner's
(``status``, ``test_acc``, ``method``, ``config_signature``, ``teacher``, ...), with the
method of the experiment's registry entry unless the test overrides it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kdbias import registry

TEACHER_NETWORKS = {
    "teacher_resnet18": ("resnet18_cifar", "ResNet"),
    "teacher_convnextv2": ("convnextv2_tiny_cifar", "ConvNeXt"),
}
HEADLESS = {"name": "vit_small_patch14_dinov2", "family": "ViT", "source": "hub"}
PAIRS = [[3, 3], [6, 6], [9, 9], [11, 11]]


def default_method(experiment: str) -> dict[str, Any]:
    """The ``method`` a run of ``experiment`` records (smoke-sized numbers)."""
    spec = registry.get(experiment)
    batch = 512 if "student_b512" in spec.pieces else 128
    arch = TEACHER_NETWORKS.get(experiment, ("deit_tiny_p4",))[0]
    method: dict[str, Any] = {
        "loss": "ce",
        "ce_weight": 1.0,
        "arch": arch,
        "batch_size": batch,
        "global_batch_size": batch,
        "epochs": 3,
        "holdout": 144,
        "precision": "32-true",
    }
    if spec.module == "KLDistillModule":
        method.update(loss="soft_kl", ce_weight=0.5, temperature=4.0, alpha=0.5, distill_token=None)
    if spec.module == "CKADistillModule":
        method.update(
            loss="cka",
            lambda_cka=0.5,
            lambda_tok=0.5,
            layer_pairs=PAIRS,
            cka_representation="image",
            teacher_image_size=224,
        )
    return method


def default_teacher(runs_dir: Path, experiment: str) -> dict[str, Any] | None:
    spec = registry.get(experiment)
    if spec.teacher is not None:
        name, family = TEACHER_NETWORKS[spec.teacher]
        return {
            "name": name,
            "family": family,
            "source": str(runs_dir / spec.teacher / "version_0" / "checkpoints" / "best.ckpt"),
        }
    if spec.module == "CKADistillModule":
        return dict(HEADLESS)
    return None


def _png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.eye(4) * 0.8 + 0.1, cmap="magma")


def write_run(
    runs_dir: Path,
    experiment: str,
    seed: int = 0,
    version: int | None = None,
    dataset: str = "digits",
    preset: str = "smoke",
    complete: bool = True,
    last_ckpt: bool = True,
    scalars: dict[str, list[tuple[int, float]]] | None = None,
    heatmap: bool = False,
    raw: bytes | str | None = None,
    correct: Any = None,
    teacher_correct: Any = None,
    **summary: Any,
) -> Path:
    """``<runs_dir>/<experiment>/version_<n>`` of a (finished) run.

    ``summary`` overrides the written ``summary.json`` keys; ``method`` is merged into the
    experiment's default method and, unless given, ``config_signature`` is a hash of the
    method (so runs with another τ get another signature). ``val_acc`` alone also sets
    ``test_acc``.
    ``heatmap``: a PNG per ``cka`` entry. ``raw``: written verbatim as ``summary.json``.

    Per-image test predictions (``test_predictions.npz``) are written for every complete run:
    ``correct`` (bool ``[N]``) when given (``test_acc`` then defaults to its mean), else the
    first ``test_acc · 1000`` of :data:`TEST_IMAGES` images correct (when that is a whole
    number); ``teacher_correct`` likewise for a teacher's predictions. ``correct=False``: none.
    """
    runs_dir = Path(runs_dir)
    root = runs_dir / experiment
    if version is None:
        version = len(list(root.glob("version_*"))) if root.is_dir() else 0
    run_dir = root / f"version_{version}"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump({"seed_everything": seed, "preset": preset, "data": {"dataset": dataset}})
    )
    (run_dir / "hparams.yaml").write_text(
        yaml.safe_dump(
            {"config": {"experiment": experiment, "seed": seed, "dataset": dataset, "preset": preset}, "seed": seed}
        )
    )
    if last_ckpt:
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"fake")
    if scalars:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir))
        for tag, points in scalars.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)
        writer.close()
    if raw is not None:
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
        (run_dir / "summary.json").write_bytes(data)
        return run_dir
    if not complete:
        return run_dir
    spec = registry.EXPERIMENTS.get(experiment)
    override = summary.pop("method", {})
    method = {**(default_method(experiment) if spec else {}), **override} if isinstance(override, dict) else override
    full: dict[str, Any] = dict(
        experiment=experiment,
        dataset=dataset,
        preset=preset,
        seed=seed,
        status="complete",
        epochs_completed=3,
        best_epoch=2,
        train_time_s=60.0,
        teacher_acc=None,
        label=spec.label if spec else experiment,
        role=spec.role if spec else "student",
        control_of=spec.control_of if spec else None,
        method=method,
        config_signature=hashlib.sha256(json.dumps(method, sort_keys=True).encode()).hexdigest()[:16],
        teacher=default_teacher(runs_dir, experiment) if spec else None,
        selected_checkpoint="checkpoints/best.ckpt",
        selection="best held-out val/acc",
    )
    full.update(summary)
    if "val_acc" in summary and "test_acc" not in summary:
        full["test_acc"] = summary["val_acc"]
    if correct is not None and correct is not False and "test_acc" not in summary and "val_acc" not in summary:
        full["test_acc"] = float(np.mean(correct))
    if correct is None and isinstance(full.get("test_acc"), float):
        correct = first_correct(full["test_acc"])
    if teacher_correct is None and spec is not None and spec.teacher is not None and full.get("teacher_acc"):
        teacher_correct = first_correct(full["teacher_acc"], TEST_IMAGES if correct is None else len(correct))
    if correct is not None and correct is not False:
        write_predictions(run_dir, correct, teacher_correct, full.get("selected_checkpoint", "checkpoints/best.ckpt"))
        full.setdefault("test_images", len(correct))
    full.setdefault("best_val_acc", full.get("val_acc"))
    if heatmap:
        for key, entry in (full.get("cka") or {}).items():
            rel = f"analytics/cka_heatmaps/{key}/epoch_2.png"
            _png(run_dir / rel)
            entry.setdefault("heatmap", rel)
            matrix = np.full((12, 12), entry["off_diag"]) + np.eye(12) * (entry["diag"] - entry["off_diag"])
            matrix = {"cka": matrix.tolist(), "trained_pairs": entry.get("trained_pairs")}
            blocks = {"student_blocks": list(range(12)), "teacher_blocks": list(range(12)), "epoch": 2}
            (run_dir / rel).with_suffix(".json").write_text(json.dumps({**blocks, **matrix}))
    (run_dir / "summary.json").write_text(json.dumps(full, indent=2))
    return run_dir


TEST_IMAGES = 1000


def first_correct(acc: float, n: int = TEST_IMAGES) -> Any:
    """``[N]`` bool with the first ``acc · N`` images correct; ``None`` when that is not whole."""
    k = acc * n
    if not isinstance(acc, float) or abs(k - round(k)) > 1e-6 or not 0 <= acc <= 1:
        return None
    out = np.zeros(n, dtype=bool)
    out[: round(k)] = True
    return out


def write_predictions(
    run_dir: Path, correct: Any, teacher_correct: Any = None, checkpoint: str = "checkpoints/best.ckpt"
):
    """``test_predictions.npz`` of ``correct`` (labels cycle through 10 classes; a wrong image
    is predicted as the next class)."""
    from kdbias.schema.predictions import PREDICTIONS_FILE, Predictions, encode_predictions

    correct = np.asarray(correct, dtype=bool)
    label = np.arange(len(correct)) % 10
    pred = np.where(correct, label, (label + 1) % 10)
    teacher = None
    if teacher_correct is not None:
        teacher = np.where(np.asarray(teacher_correct, dtype=bool), label, (label + 1) % 10)
    data = Predictions(np.arange(len(correct)), label, pred, correct, checkpoint, teacher)
    (run_dir / PREDICTIONS_FILE).write_bytes(encode_predictions(data))


def attention(px: float, layers: int = 12, heads: int = 3) -> dict[str, Any]:
    """Summary analytics keys for a model whose every head sits at ``px`` pixels."""
    return {
        "attn_dist": {str(i): px for i in range(layers)},
        "attn_dist_heads": {str(i): [px - 1.0, px, px + 1.0][:heads] for i in range(layers)},
    }


def cka_entry(
    contrast: float,
    teacher: str,
    trained: float | None = None,
    untrained: float | None = None,
    floor: float | None = None,
    source: str = "fixture",
) -> dict:
    """One ``cka[key]`` entry: ``diag`` = 0.5 + contrast, ``off_diag`` = 0.5; with ``floor``, every
    figure's permutation floor: ``floor_contrast`` = ``floor``, ``floor_diag`` = 0.01 + floor,
    ``floor_off_diag`` = 0.01 (and ``floor_trained`` = 2 · floor with ``trained``)."""
    entry: dict[str, Any] = {
        "diag": 0.5 + contrast,
        "off_diag": 0.5,
        "contrast": contrast,
        "teacher": teacher,
        "source": source,
        "trained_pairs": None,
    }
    if trained is not None:
        entry.update(trained=trained, untrained_contrast=untrained, trained_pairs=PAIRS)
    if floor is not None:
        entry.update(floor_diag=0.01 + floor, floor_off_diag=0.01, floor_contrast=floor)
        if trained is not None:
            entry.update(floor_trained=2 * floor, floor_untrained_contrast=floor)
    return entry


@pytest.fixture
def make_run():
    return write_run


@pytest.fixture
def full_matrix(tmp_path: Path) -> Path:
    """A realistic complete smoke matrix (three student seeds), with scalars and heatmaps."""
    return write_full_matrix(tmp_path / "runs")


def write_full_matrix(runs: Path, seeds: tuple[int, ...] = (0, 1, 2)) -> Path:
    """Teachers (seed 0) and every student of the registry for ``seeds``, every analytics key filled."""

    def curve(final: float) -> dict[str, list[tuple[int, float]]]:
        return {
            "val/acc": [(s, final * (s + 1) / 3) for s in range(3)],
            "train/loss": [(s, 2.3 - 0.5 * s) for s in range(3)],
            "train/loss_ce": [(s, 2.2 - 0.5 * s) for s in range(3)],
            "val/loss": [(s, 2.25 - 0.4 * s) for s in range(3)],
            "epoch": [(s, float(s)) for s in range(3)],  # Lightning logs the epoch with every scalar
        }

    write_run(runs, "teacher_resnet18", test_acc=0.95, val_acc=0.94, scalars=curve(0.95))
    write_run(runs, "teacher_convnextv2", test_acc=0.96, val_acc=0.95, scalars=curve(0.96))
    accs = {"baseline": 0.80, "baseline_b512": 0.79, "exp1": 0.79, "exp2": 0.83, "exp3": 0.86}
    px = {"baseline": 9.0, "baseline_b512": 9.0, "exp1": 6.0, "exp2": 10.0, "exp3": 13.0}
    trace = {"baseline": 80.0, "baseline_b512": 85.0, "exp1": 120.0, "exp2": 90.0, "exp3": 60.0}
    teacher = {"exp1": 0.95, "exp2": 0.96, "exp3": 0.70}
    names = {"exp1": "resnet18_cifar", "exp2": "convnextv2_tiny_cifar", "exp3": HEADLESS["name"]}
    jitter = {0: 0.0, 1: 0.004, 2: -0.002}
    for seed in seeds:
        j = jitter.get(seed, 0.001 * seed)
        for name in registry.STUDENTS:
            extra: dict[str, Any] = dict(attention(px[name] + 10 * j))
            if name == "baseline":
                extra["cka"] = {
                    k: cka_entry(0.02 + j, names[k], *((0.6, 0.01 + j) if k == "exp3" else ())) for k in names
                }
            elif name in names:
                extra["cka"] = {name: cka_entry(0.1 + j, names[name], *((0.9, 0.05 + j) if name == "exp3" else ()))}
                extra["teacher_knn_acc" if name == "exp3" else "teacher_acc"] = teacher[name]
            write_run(
                runs,
                name,
                seed=seed,
                val_acc=accs[name] + j,
                test_acc=accs[name] + j + 0.001,
                scalars=curve(accs[name] + j),
                heatmap=True,
                hessian_trace=trace[name] + 100 * j,
                hessian_trace_stderr=5.0,
                hessian_trace_probes=16,
                hessian_top_eig=trace[name] / 10,
                hessian_top_eig_residual=0.01,
                gen_gap_acc=0.05,
                gen_gap_loss=0.2,
                **extra,
            )
    return runs
