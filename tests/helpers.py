"""Shared test helpers: tiny models, in-process experiment runs, a TensorBoard reader.

Importable from every test module (``tests/`` is put on ``sys.path`` by ``tests/conftest.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdbias.modules import CKADistillModule, KLDistillModule, Optimization, TeacherModule

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
CONFIGS = EXPERIMENTS / "configs"

TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2, "drop_path_rate": 0.2}
TINY_RESNET = {"layers": [1, 1, 1, 1], "channels": [16, 16, 16, 16]}
TINY_DINO = {"depth": 2}
OPTIM = Optimization(lr=2e-3, warmup_epochs=0.0)
DIGITS = {"dataset": "digits", "num_classes": 10}

# Command-line overrides that make any experiment a seconds-long run on digits.
FAST = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.limit_test_batches",
    "1",
    "--data.batch_size",
    "16",
    "--analytics.enabled",
    "false",
]
TINY_ARGS = {
    "teacher_resnet18": ["--model.arch_kwargs", json.dumps(TINY_RESNET)],
    "teacher_convnextv2": ["--model.arch_kwargs", json.dumps({"depths": [1, 1, 1, 1], "dims": [16, 16, 16, 16]})],
    "baseline": ["--model.arch_kwargs", json.dumps(TINY_VIT)],
    "baseline_b512": ["--model.arch_kwargs", json.dumps(TINY_VIT)],
    "exp1": ["--model.arch_kwargs", json.dumps(TINY_VIT)],
    "exp2": ["--model.arch_kwargs", json.dumps(TINY_VIT)],
    "exp3": [
        "--model.arch_kwargs",
        json.dumps(TINY_VIT),
        "--model.teacher_kwargs",
        json.dumps(TINY_DINO),
        "--model.layer_pairs",
        "[[0, 0], [1, 1]]",
        "--model.teacher_image_size",
        "56",
    ],
}


def tiny_teacher(arch: str = "resnet18_cifar", **kwargs: Any) -> TeacherModule:
    arch_kwargs = TINY_RESNET if arch == "resnet18_cifar" else TINY_VIT
    return TeacherModule(arch, arch_kwargs=dict(arch_kwargs), optim=OPTIM, **{**DIGITS, **kwargs})


def kl_module(teacher: Any = None, **kwargs: Any) -> KLDistillModule:
    teacher = tiny_teacher() if teacher is None else teacher
    return KLDistillModule("deit_tiny_p4", teacher, arch_kwargs=dict(TINY_VIT), optim=OPTIM, **{**DIGITS, **kwargs})


def cka_module(**kwargs: Any) -> CKADistillModule:
    args = dict(
        teacher="dinov2_vits14",
        teacher_pretrained=None,
        teacher_image_size=56,
        teacher_kwargs=TINY_DINO,
        layer_pairs=[(0, 0), (1, 1)],
        arch_kwargs=dict(TINY_VIT),
        optim=OPTIM,
        **DIGITS,
    )
    args.update(kwargs)
    return CKADistillModule("deit_tiny_p4", **args)


def run_experiment(name: str, runs_dir: Path, *extra: str, tiny: bool = True, fast: bool = True) -> Path | None:
    """``experiments/<name>.py --smoke`` in this process, tiny and fast; returns the run directory."""
    from kdbias.cli import main

    args = ["--smoke", "--runs_dir", str(runs_dir)]
    args += FAST if fast else []
    args += TINY_ARGS[name] if tiny else []
    return main(name, CONFIGS, [*args, *extra])


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def scalar_tags(run_dir: Path) -> set[str]:
    """Every TensorBoard scalar tag in ``run_dir``'s event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in Path(run_dir).glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def teacher_checkpoint(folder: Path, datamodule: Any, arch: str = "resnet18_cifar", **kwargs: Any) -> Path:
    """A TeacherModule checkpoint (one training step on digits) written to ``folder/last.ckpt``."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    teacher = tiny_teacher(arch, **kwargs)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=folder, filename="last")],
    )
    trainer.fit(teacher, datamodule=datamodule)
    return Path(folder) / "last.ckpt"
