"""Command-line runner shared by the scripts in ``experiments/``.

Each script declares its paper preset, its ``--smoke`` preset and how to build its
LightningModule; this module owns the flags, the Trainer, the run directory
(``<runs_dir>/<experiment>/version_<n>/``), checkpoints, ``summary.json`` and ``--resume``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from kdbias.callbacks.nonfinite import NonFiniteGuard, NonFiniteLossError
from kdbias.callbacks.rng import RNGStateCallback
from kdbias.callbacks.summary import SUMMARY_FILE, SummaryCallback
from kdbias.data import CIFARDataModule
from kdbias.runs import saved_config
from kdbias.models import PretrainedWeightsError

#: Errors caused by the command line or the files it names (not bugs): ``Experiment.main``
#: prints their message and exits with status 2 instead of showing a traceback.
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, PretrainedWeightsError, NonFiniteLossError,
)

_NONE = ("none", "null", "")


def _optional(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in _NONE else kind(text)

    parse.__name__ = f"optional {kind.__name__}"
    return parse


def _limit(text: str) -> int | float:
    """``--limit-*-batches``: an int counts batches (``1``: one batch), a float in (0, 1] is a
    fraction (``1.0``: all of them), as for Lightning's Trainer arguments."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _devices(text: str) -> int | str:
    return text if text == "auto" or "," in text else int(text)


# (flag, type, help); defaults come from the presets so that --help shows the paper's.
COMMON_OPTIONS: list[tuple[str, Any, str]] = [
    ("--dataset", str, "cifar10 | cifar100 | digits"),
    ("--data-dir", str, "where the CIFAR python batches live (downloaded there if missing)"),
    ("--runs-dir", str, "root of run directories: <runs-dir>/<experiment>/version_<n>/"),
    ("--seed", int, "global seed (data order, augmentation, initialisation)"),
    ("--epochs", int, "training epochs"),
    ("--batch-size", int, "images per device per step"),
    ("--global-batch-size", _optional(int),
     "images per optimiser step over all devices and nodes; sets --batch-size to it / (devices * num-nodes)"),
    ("--val-batch-size", _optional(int), "validation batch per device (none: same as --batch-size)"),
    ("--num-workers", int, "DataLoader workers per device"),
    ("--optimizer", str, "sgd | adamw"),
    ("--lr", float, "peak learning rate (after warm-up)"),
    ("--weight-decay", float, "decoupled weight decay (AdamW) or L2 (SGD); none on norms/biases"),
    ("--momentum", float, "SGD momentum (Nesterov)"),
    ("--warmup-epochs", float, "linear warm-up length in epochs"),
    ("--min-lr-ratio", float, "final learning rate as a fraction of --lr (cosine floor)"),
    ("--label-smoothing", float, "label smoothing of the cross-entropy"),
    ("--mix", _optional(str), "batch mixing: none | cutmix | mixup"),
    ("--mix-alpha", _optional(float), "Beta(alpha, alpha) of CutMix/MixUp (none: 1.0 / 0.2)"),
    ("--mix-prob", float, "probability that a training batch is mixed"),
    ("--train-subset", _optional(int), "train on a fixed seeded subset of this many images"),
    ("--accelerator", str, "auto | cpu | gpu"),
    ("--devices", _devices, "auto, a count, or a comma list of device ids"),
    ("--num-nodes", int, "nodes for multi-node DDP"),
    ("--strategy", str, "auto (DDP when several GPUs) or any Lightning strategy name"),
    ("--precision", str, "auto (bf16-mixed on GPU, 32-true on CPU) or a Lightning precision"),
    ("--limit-train-batches", _limit, "batches (int) or fraction (float) of an epoch"),
    ("--limit-val-batches", _limit, "batches (int) or fraction (float) of validation"),
    ("--log-every-n-steps", int, "scalar logging interval in optimiser steps"),
]

TRAINING_DEFAULTS: dict[str, Any] = dict(
    dataset="cifar10", data_dir="data", runs_dir="runs", seed=0, epochs=200, batch_size=1024,
    global_batch_size=None, val_batch_size=None, num_workers=4, optimizer="adamw", lr=5e-4, weight_decay=0.05,
    momentum=0.9, warmup_epochs=5.0, min_lr_ratio=0.01, label_smoothing=0.0, mix=None,
    mix_alpha=None, mix_prob=1.0, train_subset=None, accelerator="auto", devices="auto", num_nodes=1,
    strategy="auto", precision="auto", limit_train_batches=1.0, limit_val_batches=1.0,
    log_every_n_steps=50, compile=False,
)

SMOKE_DEFAULTS: dict[str, Any] = dict(
    dataset="digits", epochs=2, batch_size=64, num_workers=0, warmup_epochs=0.5,
    accelerator="cpu", devices=1, precision="32-true", limit_train_batches=8,
    limit_val_batches=3, log_every_n_steps=2, compile=False,
)


@dataclass
class Experiment:
    """One row of the experiment matrix, as a command-line program.

    Args:
        name: run name; runs go to ``<runs_dir>/<name>/version_<n>/``.
        description: the ``--help`` text.
        build_module: ``(config, datamodule) -> LightningModule``.
        paper: preset overrides of :data:`TRAINING_DEFAULTS` (the research plan's values).
        smoke: overrides applied on top of ``paper`` by ``--smoke`` (offline CPU preset).
        add_arguments: adds the script's own flags (defaults from the presets).
        build_callbacks: ``(config, datamodule) -> [Callback]`` extra callbacks (analytics).
    """

    name: str
    description: str
    build_module: Callable[[argparse.Namespace, CIFARDataModule], L.LightningModule]
    paper: dict[str, Any] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    build_callbacks: Callable[[argparse.Namespace, CIFARDataModule], list[Callback]] | None = None

    def parser(self, smoke: bool = False) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=f"{self.name}.py",
            description=self.description,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        parser.add_argument("--smoke", action="store_true", help="offline CPU preset: digits, random weights, tiny budget")
        parser.add_argument("--resume", action="store_true", help="continue the latest run of this experiment from its last.ckpt")
        parser.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile the models")
        for flag, kind, help_text in COMMON_OPTIONS:
            parser.add_argument(flag, type=kind, help=help_text)
        if self.add_arguments is not None:
            self.add_arguments(parser)
        defaults = {**TRAINING_DEFAULTS, **self.paper}
        if smoke:
            defaults.update({**SMOKE_DEFAULTS, **self.smoke})
        parser.set_defaults(**defaults)
        return parser

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        argv = list(sys.argv[1:] if argv is None else argv)
        config = self.parser(smoke="--smoke" in argv).parse_args(argv)
        config.experiment = self.name
        config.preset = "smoke" if config.smoke else "paper"
        return config

    def run(self, argv: Sequence[str] | None = None) -> Path:
        """Parse ``argv``, train, and return the run directory (errors propagate)."""
        config = self.parse(argv)
        return run_experiment(self, config)

    def main(self, argv: Sequence[str] | None = None) -> Path:
        """Entry point of ``experiments/<name>.py``: :meth:`run` for the command line.

        An input error (:data:`INPUT_ERRORS`: a bad flag value, a missing dataset or
        teacher checkpoint, weights for another architecture, a non-finite loss) ends the
        program with its message on stderr and exit status 2, like argparse's own errors,
        instead of a traceback. Set ``KDBIAS_TRACEBACK=1`` to get the traceback as well.
        """
        try:
            return self.run(argv)
        except INPUT_ERRORS as error:
            if os.environ.get("KDBIAS_TRACEBACK", "") not in ("", "0"):
                raise
            print(f"{self.name}.py: error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None


def resumable_run(runs_dir: str | Path, name: str, config: argparse.Namespace) -> Path | None:
    """Latest run of ``name`` with a ``last.ckpt`` and the same seed, dataset and preset."""
    root = Path(runs_dir) / name
    for path in sorted(root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: _version(p.parents[1]), reverse=True):
        run_dir = path.parents[1]
        saved = saved_config(run_dir)
        if all(saved.get(key) == getattr(config, key) for key in ("seed", "dataset", "preset")):
            return run_dir
    return None


def _version(run_dir: Path) -> int:
    suffix = run_dir.name.split("_")[-1]
    return int(suffix) if suffix.isdigit() else -1


def resolve_precision(config: argparse.Namespace) -> str:
    if config.precision != "auto":
        return config.precision
    on_gpu = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if on_gpu else "32-true"


def resolve_strategy(config: argparse.Namespace) -> str:
    if config.strategy != "auto":
        return config.strategy
    many = config.num_nodes > 1 or (
        torch.cuda.device_count() > 1
        and config.accelerator in ("auto", "gpu", "cuda")
        and (config.devices == "auto" or not isinstance(config.devices, int) or config.devices > 1)
    )
    return "ddp" if many else "auto"


def _devices_per_node(config: argparse.Namespace) -> int:
    """How many processes per node ``--devices`` asks for (Lightning's meaning of the flag)."""
    devices = config.devices
    if isinstance(devices, str):
        if devices == "auto":
            gpu = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
            return torch.cuda.device_count() if gpu else 1
        return len([d for d in devices.split(",") if d.strip()])
    if devices == -1:
        return max(1, torch.cuda.device_count())
    return int(devices)


def resolve_batch_size(config: argparse.Namespace) -> None:
    """Apply ``--global-batch-size``: set the per-device ``config.batch_size`` from it.

    Raises a ``ValueError`` naming the fix when it does not divide evenly over
    ``devices * num_nodes`` processes (each rank must take the same number of images).
    """
    total = getattr(config, "global_batch_size", None)
    if total is None:
        return
    world = _devices_per_node(config) * config.num_nodes
    if total < 1:
        raise ValueError(f"--global-batch-size must be a positive number of images, got {total}.")
    if total % world:
        below, above = world * (total // world), world * (total // world + 1)
        suggestion = f"{below} or {above}" if below else f"{above}"
        raise ValueError(
            f"--global-batch-size {total} does not divide over {world} processes (--devices "
            f"{config.devices} x --num-nodes {config.num_nodes}): every process must take the same number "
            f"of images. Pass a multiple of {world} (e.g. {suggestion}), or give the per-device --batch-size instead."
        )
    config.batch_size = total // world


def build_datamodule(config: argparse.Namespace) -> CIFARDataModule:
    return CIFARDataModule(
        dataset=config.dataset,
        data_dir=config.data_dir,
        batch_size=config.batch_size,
        val_batch_size=config.val_batch_size,
        num_workers=config.num_workers,
        mix=config.mix,
        mix_alpha=config.mix_alpha,
        mix_prob=config.mix_prob,
        seed=config.seed,
        train_subset=config.train_subset,
    )


def run_experiment(experiment: Experiment, config: argparse.Namespace) -> Path:
    """Train ``experiment`` with ``config``; return ``<runs_dir>/<name>/version_<n>``."""
    resolve_batch_size(config)
    L.seed_everything(config.seed, workers=True)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and later

    ckpt_path = None
    version = None
    if config.resume:
        previous = resumable_run(config.runs_dir, experiment.name, config)
        if previous is None:
            print(f"--resume: no checkpoint of a run with seed {config.seed} on {config.dataset} ({config.preset}) "
                  f"under {Path(config.runs_dir) / experiment.name}; starting a new run.")
        else:
            version = int(previous.name.split("_")[-1])
            ckpt_path = str(previous / "checkpoints" / "last.ckpt")
            print(f"Resuming {previous} from {ckpt_path}")

    datamodule = build_datamodule(config)
    module = experiment.build_module(config, datamodule)
    logger = TensorBoardLogger(save_dir=config.runs_dir, name=experiment.name, version=version, default_hp_metric=False)
    logger.log_hyperparams({"config": _plain(vars(config))})

    callbacks: list[Callback] = [
        ModelCheckpoint(filename="best", monitor="val/acc", mode="max", save_top_k=1, save_last=True,
                        auto_insert_metric_name=False, enable_version_counter=False),
        SummaryCallback(experiment.name, config.dataset, config.preset, config.seed),
        LearningRateMonitor(logging_interval="step"),
        NonFiniteGuard(check_every_n_steps=config.log_every_n_steps),
        RNGStateCallback(),
    ]
    if experiment.build_callbacks is not None:
        callbacks += experiment.build_callbacks(config, datamodule)

    trainer = L.Trainer(
        logger=logger,
        callbacks=callbacks,
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=resolve_strategy(config),
        precision=resolve_precision(config),
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches,
        log_every_n_steps=config.log_every_n_steps,
        benchmark=torch.cuda.is_available(),
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=not config.smoke,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    run_dir = Path(trainer.log_dir)
    if trainer.is_global_zero:
        print(f"Run directory: {run_dir}  (summary: {run_dir / SUMMARY_FILE}; tensorboard --logdir {config.runs_dir})")
    return run_dir


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Config values as YAML-friendly scalars."""
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v) for k, v in values.items()}
