"""The runs of the matrix and the real experiment Trainer each one trains with.

:func:`matrix` reads :mod:`kdbias.registry` (matched controls left out: they repeat a run's
networks at another batch) and splits EXP-3 into its two teacher resolutions, giving
``teacher_resnet18, teacher_convnextv2, baseline, exp1, exp2, exp3_224, exp3_112``.

:func:`build` parses the experiment's preset plus overrides with
:class:`kdbias.cli.KDBiasCLI` and returns its module, DataModule and Trainer (run directory,
logger, checkpoints, summary, LR monitor, non-finite guard, RNG state, progress) without
fitting: the same path as ``experiments/<name>.py``. Presets are read through the same
parser (:func:`kdbias.cli.preset_config`). Benchmarks run offline on random weights: teachers named ``auto`` get a
random-weight checkpoint of the teacher's architecture (:func:`teacher_checkpoint`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from kdbias import registry
from kdbias.data import DATASETS, CIFARDataModule
from kdbias.data.cifar import cifar_files

from .measure import quiet

EXP3_IMAGE_SIZES = (224, 112)  # the teacher's side: 16x16 tokens pooled to 8x8, or 8x8 directly
LOG_EVERY = 10_000  # measured steps are non-logging steps (logging costs a host read by design)

#: Architectures small enough for a CPU dry run (same code paths, seconds per run).
TINY_KWARGS: dict[str, dict[str, Any]] = {
    "deit_tiny_p4": {"depth": 2, "embed_dim": 64, "num_heads": 2},
    "dinov2_vits14": {"depth": 2, "embed_dim": 64, "num_heads": 2},
    "resnet18_cifar": {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]},
    "convnextv2_tiny_cifar": {"depths": [1, 1, 1, 1], "dims": [96, 64, 64, 64]},  # dims[0]: the stem's width
}
TINY_LAYER_PAIRS = [[0, 0], [1, 1]]


# Steps, rounds and batches of each measurement: (GPU, CPU dry run). "overhead_*": the tiny
# model of the Lightning-vs-plain comparison (steps of a few ms); "plan_*": the plan's model.
# fmt: off
SIZES: dict[str, tuple[int, int]] = {
    "warmup": (3, 1), "steps": (10, 3), "sync_steps": (3, 1), "read_steps": (2, 1), "compile_warmup": (4, 2),
    "overhead_rounds": (5, 3), "overhead_warmup": (5, 2), "overhead_steps": (30, 10), "overhead_batch": (128, 2),
    "plan_rounds": (3, 2), "plan_warmup": (3, 2), "plan_steps": (10, 2),
    "data_batch": (1024, 1024), "data_batches": (6, 3), "data_reps": (3, 2), "data_workers": (8, 2),
    "dinov2_reps": (5, 2), "dinov2_batch": (512, 4),
}
# fmt: on


@dataclass(frozen=True)
class RunSpec:
    """One row of the benchmark: a registry experiment, and EXP-3's teacher resolution."""

    name: str
    experiment: str
    teacher_image_size: int | None = None


def matrix() -> list[RunSpec]:
    """The runs of the plan, in registry order (see the module docstring)."""
    out: list[RunSpec] = []
    for experiment in registry.EXPERIMENTS.values():
        if experiment.control_of is not None:
            continue
        if experiment.module == "CKADistillModule":
            out += [RunSpec(f"{experiment.name}_{size}", experiment.name, size) for size in EXP3_IMAGE_SIZES]
        else:
            out.append(RunSpec(experiment.name, experiment.name))
    return out


def select_runs(names: str | None) -> list[RunSpec]:
    """``"baseline,exp3"`` -> those rows (``exp3`` = both sizes); ``None``/``"all"``: every row."""
    runs = matrix()
    if not names or names == "all":
        return runs
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    picked = [r for r in runs if r.name in wanted or r.experiment in wanted]
    unknown = [n for n in wanted if not any(n in (r.name, r.experiment) for r in runs)]
    if unknown:
        raise ValueError(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(r.name for r in runs)}")
    return picked


@dataclass
class Plan:
    """Sizes and places of one benchmark process (``Plan.make`` fills them per mode)."""

    dry_run: bool
    cuda: bool
    runs_dir: Path
    dataset: str = "digits"
    data_dir: str = "data"
    tiny: bool = False
    batch_size: int | None = None  # None: the preset's per-GPU batch
    num_workers: int | None = None  # None: the preset's
    sizes: dict[str, int] = field(default_factory=dict)
    compile_backend: str | None = None

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", 0) if self.cuda else torch.device("cpu")

    @property
    def preset(self) -> str:
        return "smoke" if self.dry_run else "paper"

    @classmethod
    def make(
        cls,
        dry_run: bool,
        runs_dir: Path,
        data: str = "auto",
        data_dir: str = "data",
        compile_backend: str | None = None,
    ) -> Plan:
        cuda = torch.cuda.is_available() and not dry_run
        if data == "auto":
            data = "cifar10" if all(p.is_file() for p in cifar_files("cifar10", data_dir)) else "digits"
        return cls(
            dry_run=dry_run,
            cuda=cuda,
            runs_dir=runs_dir,
            dataset=data,
            data_dir=data_dir,
            tiny=dry_run,
            batch_size=4 if dry_run else None,
            num_workers=0 if dry_run else None,
            sizes={key: pair[1 if dry_run else 0] for key, pair in SIZES.items()},
            compile_backend=compile_backend
            if compile_backend not in (None, "inductor")
            else ("aot_eager" if dry_run else None),
        )


# -- presets ------------------------------------------------------------------------------------------
@functools.cache
def _parsed(experiment: str, preset: str) -> dict[str, Any]:
    from kdbias import cli

    return cli.preset_config(registry.get(experiment), preset).as_dict()


def preset_config(experiment: str, preset: str = "paper") -> dict[str, Any]:
    """The experiment's preset as the command line parses it (:func:`kdbias.cli.preset_config`)."""
    return copy.deepcopy(_parsed(experiment, preset))


def preset_model(experiment: str, preset: str = "paper") -> dict[str, Any]:
    return dict(preset_config(experiment, preset).get("model") or {})


def architecture(experiment: str, preset: str = "paper") -> str:
    """The network an experiment trains (its preset's, or its module's default)."""
    return str(preset_model(experiment, preset)["arch"])


# -- overrides -------------------------------------------------------------------------------------------
def run_overrides(
    spec: RunSpec, plan: Plan, max_steps: int, compile: bool = False, teachers: dict[str, Path] | None = None
) -> dict[str, Any]:
    """Dotted configuration keys -> values for one benchmark fit of ``spec``."""
    experiment = registry.get(spec.experiment)
    out: dict[str, Any] = {
        "analytics.enabled": False,
        "trainer.log_every_n_steps": LOG_EVERY,
        "trainer.enable_progress_bar": False,
        "trainer.max_steps": max_steps,
        "trainer.limit_train_batches": None,
        # True: inductor; a backend name ("aot_eager": a CPU dry run) reaches every compiled region
        "model.compile": (plan.compile_backend or True) if compile else False,
        "data.dataset": plan.dataset,
        "data.data_dir": plan.data_dir,
    }
    if plan.cuda:
        out["trainer.devices"] = 1
    if plan.batch_size is not None:
        out["data.batch_size"] = plan.batch_size
    if plan.num_workers is not None:
        out["data.num_workers"] = plan.num_workers
    arch = architecture(spec.experiment, plan.preset)
    if plan.tiny:
        out["model.arch_kwargs"] = TINY_KWARGS.get(arch, {})
    if experiment.module == "TeacherModule":
        out["model.pretrained"] = None  # offline: random weights (throughput does not depend on them)
    if experiment.teacher is not None:
        if not teachers or experiment.teacher not in teachers:
            raise ValueError(f"{spec.name} needs a checkpoint of {experiment.teacher}")
        out["model.teacher"] = str(teachers[experiment.teacher])
    if experiment.module == "CKADistillModule":
        out["model.teacher_pretrained"] = None
        if spec.teacher_image_size is not None:
            out["model.teacher_image_size"] = spec.teacher_image_size
        if plan.tiny:
            out["model.teacher_kwargs"] = TINY_KWARGS["dinov2_vits14"]
            out["model.layer_pairs"] = TINY_LAYER_PAIRS
    return out


def cli_args(overrides: dict[str, Any]) -> list[str]:
    """``{"trainer.max_steps": 5, "model.teacher": None}`` -> ``["--trainer.max_steps", "5", ...]``."""
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


# -- building -----------------------------------------------------------------------------------------------
@dataclass
class Built:
    module: L.LightningModule
    datamodule: CIFARDataModule
    trainer: L.Trainer
    seed: int
    built_by: str


def build(spec: RunSpec, plan: Plan, overrides: dict[str, Any]) -> Built:
    """The experiment's module, DataModule and real Trainer (see the module docstring)."""
    plan.runs_dir.mkdir(parents=True, exist_ok=True)
    args = (["--smoke"] if plan.preset == "smoke" else []) + ["--runs_dir", str(plan.runs_dir)] + cli_args(overrides)
    from kdbias.cli import KDBiasCLI

    with quiet(), contextlib.redirect_stdout(io.StringIO()):
        cli = KDBiasCLI(registry.get(spec.experiment), args)
    return Built(cli.model, cli.datamodule, cli.trainer, int(cli.config.seed_everything), "KDBiasCLI")


def teacher_checkpoint(experiment: str, plan: Plan, folder: Path) -> Path:
    """A TeacherModule checkpoint of ``experiment``'s network with random weights (offline)."""
    from kdbias.modules import TeacherModule

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{experiment}_random.ckpt"
    if path.is_file():
        return path
    arch = architecture(experiment, plan.preset)
    kwargs = TINY_KWARGS.get(arch, {}) if plan.tiny else preset_model(experiment, plan.preset).get("arch_kwargs")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = TeacherModule(
            arch,
            num_classes=DATASETS[plan.dataset].num_classes,
            dataset=plan.dataset,
            pretrained=None,
            arch_kwargs=kwargs,
        )
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path


def enlarge_train_split(datamodule: CIFARDataModule, images: int) -> None:
    """Tile the training split to at least ``images`` images, so that the measured steps lie
    inside one epoch (the digits hold 1,293 training images; a student batch is 1,024)."""
    datamodule.setup("fit")
    have = len(datamodule.train_labels)
    if have < images:
        reps = math.ceil(images / have)
        datamodule.train_images = datamodule.train_images.repeat(reps, 1, 1, 1)
        datamodule.train_labels = datamodule.train_labels.repeat(reps)


def fit(built: Built, plan: Plan) -> None:
    """``trainer.fit`` as :func:`kdbias.runner.train` starts it (seed, TF32), quietly."""
    L.seed_everything(built.seed, workers=True, verbose=False)
    if plan.cuda:
        torch.set_float32_matmul_precision("high")
    with quiet(), contextlib.redirect_stdout(io.StringIO()):
        built.trainer.fit(built.module, datamodule=built.datamodule)


def release(plan: Plan) -> None:
    import gc

    gc.collect()
    if plan.cuda:
        torch.cuda.empty_cache()
