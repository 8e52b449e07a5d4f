"""Shared test helpers: tiny models, in-process experiment runs, a TensorBoard reader.

Importable from every test module (``tests/`` is put on ``sys.path`` by ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from kdbias.modules import CKADistillModule, KLDistillModule, Optimization, TeacherModule
from kdbias.study import SHIPPED_CONFIGS

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
CONFIGS = SHIPPED_CONFIGS  # the presets ship with the package

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
# Every analytics callback on, every epoch (the smoke preset measures after its second), on a handful of images.
TINY_ANALYTICS = [
    "--analytics.enabled",
    "true",
    "--analytics.attention.every_n_epochs",
    "1",
    "--analytics.cka.every_n_epochs",
    "1",
    "--analytics.generalisation.every_n_epochs",
    "1",
    "--analytics.attention.num_images",
    "8",
    "--analytics.hessian.num_images",
    "8",
    "--analytics.hessian.max_iter",
    "2",
    "--analytics.cka.num_batches",
    "1",
    "--analytics.cka.batch_size",
    "8",
    "--analytics.generalisation.num_images",
    "16",
    "--analytics.knn.num_train",
    "32",
    "--analytics.knn.num_test",
    "16",
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
    return main(name, [*args, *extra])


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def _accumulators(run_dir: Path):
    """One loaded TensorBoard reader per events file of ``run_dir``, oldest file first."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for path in sorted(Path(run_dir).glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
        accumulator.Reload()
        yield accumulator


def read_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """Every ``(step, value)`` event of ``tag`` in every events file of ``run_dir``, in file order
    (a step logged twice, e.g. by a resumed run, appears twice)."""
    return scalars(run_dir).get(tag, [])


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar in ``run_dir``'s events files, in file order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for accumulator in _accumulators(run_dir):
        for tag in accumulator.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return out


def images(run_dir: Path) -> dict[str, list]:
    """``{tag: [image events]}`` of ``run_dir``'s events files."""
    out: dict[str, list] = {}
    for accumulator in _accumulators(run_dir):
        for tag in accumulator.Tags()["images"]:
            out.setdefault(tag, []).extend(accumulator.Images(tag))
    return out


def scalar_tags(run_dir: Path) -> set[str]:
    """Every TensorBoard scalar tag in ``run_dir``'s events files."""
    return set(scalars(run_dir))


def quiet_trainer(root: Any, **kwargs: Any):
    """A CPU ``Trainer`` without logger, progress bar, model summary or checkpoints (unless given),
    rooted at ``root`` (a test's ``tmp_path``: nothing lands in the checkout)."""
    import lightning as L

    settings = dict(
        default_root_dir=root,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    settings.update(kwargs)
    if settings.get("callbacks"):
        settings.pop("enable_checkpointing")  # a ModelCheckpoint among them needs checkpointing on
    return L.Trainer(**settings)


def teacher_checkpoint(folder: Path, datamodule: Any, arch: str = "resnet18_cifar", **kwargs: Any) -> Path:
    """A TeacherModule checkpoint (one training step on digits) written to ``folder/last.ckpt``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    teacher = tiny_teacher(arch, **kwargs)
    trainer = quiet_trainer(
        folder,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[ModelCheckpoint(dirpath=folder, filename="last")],
    )
    trainer.fit(teacher, datamodule=datamodule)
    return Path(folder) / "last.ckpt"


# --------------------------------------------------------------------------- injected callbacks
# Callbacks a test adds to a command-line run with LightningCLI's syntax, e.g.
# ``--trainer.callbacks+=helpers.CrashAt --trainer.callbacks.epoch=1 --trainer.callbacks.batch=1``
# (``trainer.callbacks`` is run-local: ``--resume`` without them is not a configuration change).

from lightning.pytorch.callbacks import Callback  # noqa: E402


class SimulatedCrash(RuntimeError):
    """What :class:`CrashAt` raises: a bug in the middle of training (not an input error)."""


class CrashAt(Callback):
    """Raise :class:`SimulatedCrash` at the start of training batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int = 1, batch: int = 0) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise SimulatedCrash(f"simulated crash at epoch {self.epoch}, batch {self.batch}")


class StallAt(Callback):
    """At training batch ``batch`` of epoch ``epoch``: write ``flag`` (a file) and sleep for
    ``seconds``, so that a test can SIGKILL the process at a known point."""

    def __init__(self, flag: str, epoch: int = 1, batch: int = 1, seconds: float = 600.0) -> None:
        self.flag, self.epoch, self.batch, self.seconds = flag, epoch, batch, seconds

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            import time

            Path(self.flag).write_text(f"{trainer.current_epoch} {batch_idx} {trainer.global_step}\n")
            time.sleep(self.seconds)


class RecordBatches(Callback):
    """Write the labels of every training batch this fit sees to ``path`` (JSON: a list of
    ``[epoch, batch_idx, labels]``), rewritten after each batch."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: list[Any] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        labels = batch[1]
        labels = labels.argmax(-1) if labels.ndim == 2 else labels
        self.seen.append([trainer.current_epoch, batch_idx, [int(v) for v in labels]])
        Path(self.path).write_text(json.dumps(self.seen))


class ConstantHeadAt(Callback):
    """After the last training batch of epoch ``epoch`` (before that epoch's validation),
    make the student predict class ``label`` for every image (head weights 0, bias
    one-hot): that epoch's ``val/acc`` drops to the class's share of the held-out split."""

    def __init__(self, epoch: int, label: int = 0) -> None:
        self.epoch, self.label = epoch, label

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        import torch

        if trainer.current_epoch != self.epoch or batch_idx != trainer.num_training_batches - 1:
            return
        head = pl_module.model.get_classifier()
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(-10.0)
            head.bias[self.label] = 10.0


class RaisesOnTrainStart(Callback):
    """A callback with a bug: ``TypeError`` in ``on_train_start`` (the error policy's tests)."""

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        raise TypeError("broken callback")


class StallOnceAt(Callback):
    """Like :class:`StallAt`, but only while ``flag`` does not exist yet (a resumed run passes
    through); the flag holds the process id, for a test to signal it."""

    def __init__(self, flag: str, epoch: int = 1, batch: int = 0, seconds: float = 600.0) -> None:
        self.flag, self.epoch, self.batch, self.seconds = flag, epoch, batch, seconds

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch and not Path(self.flag).exists():
            import os
            import time

            Path(self.flag).write_text(f"{os.getpid()}\n")
            time.sleep(self.seconds)


def write_images(root: Path, images: Any, labels: Any, limit: int | None = None) -> None:
    """uint8 ``[N, 3, H, W]`` images as ``root/c<label>/<k>.png`` (at most ``limit`` per class)."""
    from PIL import Image

    counts: dict[int, int] = {}
    for k, (image, label) in enumerate(zip(images, labels.tolist())):
        if limit is not None and counts.get(label, 0) >= limit:
            continue
        counts[label] = counts.get(label, 0) + 1
        folder = root / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{k:04d}.png")


def digits_folder(root: Path, limit: int | None = None) -> Path:
    """The digits' train and test splits as ``root/train`` and ``root/test`` PNG class folders
    (a folder dataset for ``--data.dataset folder``)."""
    from kdbias.data import load_digits_split

    tr_x, tr_y, te_x, te_y = load_digits_split(seed=0)
    write_images(root / "train", tr_x, tr_y, limit)
    write_images(root / "test", te_x, te_y, limit)
    return root


#: Paths that running Python and pytest create themselves (not a test's output).
_TOOL_FILES = ("__pycache__", ".pytest_cache", ".ruff_cache", ".egg-info", ".ipynb_checkpoints")


def checkout_files(root: Path) -> set[str] | None:
    """The untracked and ignored files of ``root`` (``git status --porcelain --ignored`` lines
    ``?? path`` and ``!! path``; Python's and pytest's caches left out); ``None`` outside a git
    checkout. Changes to tracked files are not counted (someone may be editing while tests run)."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    lines = done.stdout.splitlines()
    return {line for line in lines if line[:2] in ("??", "!!") and not any(part in line for part in _TOOL_FILES)}
