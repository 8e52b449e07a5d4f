"""One experiment run from a parsed configuration: its directory, resume, fit, test, summary.

:class:`Run` is created by :class:`kdbias.cli.KDBiasCLI` once the configuration is parsed
(:meth:`Run.prepare`: teacher resolution, resume planning and its configuration check),
builds the Trainer into a claimed run directory (:meth:`Run.instantiate_trainer`) and
trains (:meth:`Run.train`):

1. ``seed_everything(seed)`` again right before ``fit``, so the training stream (drop-path
   masks, ...) does not depend on what construction drew;
2. ``trainer.fit`` (resuming from the verified checkpoint with ``weights_only=True``);
3. ``trainer.test`` on the official test split with the last weights, then with the
   selected checkpoint (``best.ckpt`` by the held-out ``val/acc``; ``last.ckpt`` when
   there is no held-out split);
4. ``summary.json`` completed (``status: complete``, ``test_acc`` of the selected
   checkpoint, the teacher's test accuracy, the method's parameters), TensorBoard's
   HPARAMS entry with the final metrics.

A run that fails before its first checkpoint removes its directory.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO

from kdbias import registry, runs, why
from kdbias.callbacks import SummaryCallback
from kdbias.experiment import RESUME_SAFE_CHANGES, config_changes, run_callbacks, signature_config
from kdbias.teacher import FrozenTeacher

__all__ = ["ENV_RUN_DIR", "Finished", "Run"]

#: Set by global rank 0 to its run directory; DDP processes that Lightning starts inherit it.
ENV_RUN_DIR = "KDBIAS_RUN_DIR"
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "JSM_NAMESPACE_RANK")


class Finished(Exception):
    """``--resume`` found the run already complete: nothing to train."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def _rank_zero() -> bool:
    """Whether this process is (or will be) global rank 0, from the launchers' variables."""
    return all(os.environ.get(name, "0") in ("", "0") for name in _RANK_VARIABLES)


class Run:
    """See the module docstring."""

    def __init__(self, experiment: registry.Experiment, config: Any, configs_dir: Path) -> None:
        self.experiment = experiment
        self.config = config
        self.configs_dir = configs_dir
        self.runs_dir = Path(config.runs_dir)
        self.seed = int(config.seed_everything)
        self.dataset = config.data.dataset
        self.preset = config.preset
        self.run_dir: Path | None = None
        self.ckpt_path: Path | None = None
        self.teacher_family: str | None = None
        self.config_text = ""  # the resolved configuration as YAML, dumped once (what config.yaml holds)
        self.config_data: dict[str, Any] = {}

    # -- before instantiation -----------------------------------------------------------
    @classmethod
    def prepare(cls, cli: Any) -> Run:
        run = cls(cli.experiment, cli.config, cli.configs_dir)
        run._resolve_teacher()
        run.config_text = cli.parser.dump(cli.config, skip_none=False)
        run.config_data = yaml.safe_load(run.config_text) or {}
        if cli.config.resume:
            run._plan_resume(cli)
        return run

    def _resolve_teacher(self) -> None:
        model = self.config.model
        if self.experiment.teacher is None or model.get("teacher") not in (None, "auto"):
            return
        model.teacher = str(why.resolve_teacher(self.runs_dir, self.experiment, self.dataset, self.preset))
        self.teacher_family = self.experiment.teacher_family

    def _describe(self) -> str:
        return f"{self.experiment.name} seed {self.seed} on {self.dataset} ({self.preset} preset)"

    def _plan_resume(self, cli: Any) -> None:
        previous = runs.resumable_run(self.runs_dir, self.experiment.name, self.seed, self.dataset, self.preset)
        if previous is None:
            done = runs.latest_complete_run(self.runs_dir, self.experiment.name, self.seed, self.dataset, self.preset)
            if done is not None:
                raise Finished(done)
            print(f"--resume: no unfinished run of {self._describe()} under {self.runs_dir}; starting a new run.")
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            checkpoint = runs.newest_loadable_checkpoint(previous)
        for warning in caught:
            print(f"--resume: warning: {warning.message}")
        if checkpoint is None:
            print(f"--resume: no loadable checkpoint in {previous}; it is kept, and a new run starts.")
            return
        self._check_changes(previous)
        if checkpoint.name != runs.LAST_CKPT:
            print(
                f"--resume: warning: {previous / runs.CHECKPOINT_DIR / runs.LAST_CKPT} is missing or broken; "
                f"resuming from the newest loadable checkpoint {checkpoint}."
            )
        self.run_dir, self.ckpt_path = previous, checkpoint
        print(f"Resuming {previous} from {checkpoint}")

    def _check_changes(self, previous: Path) -> None:
        given = self.config.allow_changed or ""
        keys = given if isinstance(given, list) else str(given).split(",")
        allowed = {key.strip() for key in keys if key.strip()}
        unsafe = sorted(allowed - set(RESUME_SAFE_CHANGES))
        if unsafe:
            raise ValueError(f"--allow_changed accepts only {', '.join(RESUME_SAFE_CHANGES)}, got {', '.join(unsafe)}")
        saved = runs.read_config(previous)
        changes = config_changes(saved, self.config_data)
        refused = {k: v for k, v in changes.items() if k not in allowed}
        if refused:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
            raise ValueError(
                f"--resume: the configuration differs from the one {previous} was started with: {listed}. Resume with "
                f"the same settings, start a new run without --resume, or (for more epochs only) add "
                f"--allow_changed trainer.max_epochs."
            )
        if "trainer.max_epochs" in changes:
            done = runs.load_checkpoint(previous / runs.CHECKPOINT_DIR / runs.LAST_CKPT).get("epoch", 0) + 1
            if self.config.trainer.max_epochs < done:
                raise ValueError(
                    f"--resume: trainer.max_epochs {self.config.trainer.max_epochs} is below the "
                    f"{done} epochs {previous} has trained."
                )

    # -- the Trainer ----------------------------------------------------------------------
    def instantiate_trainer(self, cli: Any) -> L.Trainer:
        module, datamodule = cli.model, cli.datamodule
        if self.teacher_family is not None and module.teacher.family != self.teacher_family:
            raise runs.CheckpointError(
                f"the teacher found for {self.experiment.name} ({module.teacher.source}) is a {module.teacher.family} "
                f"({module.teacher.name}); {self.experiment.name} distils from a {self.teacher_family}. Name the "
                "teacher explicitly with --model.teacher PATH if you mean it."
            )
        config = dict(cli._get(cli.config_init, "trainer", default={}))
        leader = _rank_zero()
        if self.run_dir is None:
            fallback = Path(os.environ.get(ENV_RUN_DIR, self.runs_dir / self.experiment.name / "version_pending"))
            self.run_dir = runs.claim_run_dir(self.runs_dir, self.experiment.name) if leader else fallback
        if leader:
            os.environ[ENV_RUN_DIR] = str(self.run_dir)
        try:
            trainer = self._trainer(cli, config, module, datamodule)
            if leader:
                runs.atomic_write_text(self.run_dir / runs.CONFIG_FILE, self.config_text)
        except BaseException:
            if leader and self.ckpt_path is None:
                runs.discard_if_unstarted(self.run_dir)
            raise
        return trainer

    def _trainer(self, cli: Any, config: dict[str, Any], module: L.LightningModule, datamodule: Any) -> L.Trainer:
        import sys

        progress = config.get("enable_progress_bar")
        progress = sys.stderr.isatty() if progress is None else bool(progress)
        callbacks = run_callbacks(
            module=module,
            run_dir=self.run_dir,
            experiment=self.experiment.name,
            dataset=self.dataset,
            preset=self.preset,
            seed=self.seed,
            analytics=self.config.analytics,
            has_validation=datamodule.has_validation,
            progress_lines=not progress,
            log_every_n_steps=config.get("log_every_n_steps") or 50,
            control=lambda key: control_teacher(key, self, cli.configs_dir),
            summary_extra={},
        ) + why.why_callbacks(self.experiment, self.run_dir, self.runs_dir, self.dataset, self.preset, module)
        user = config.get("callbacks") or []
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(runs.AtomicCheckpointIO())
        logger = TensorBoardLogger(
            save_dir=str(self.runs_dir), name=self.experiment.name, version=self.run_dir.name, default_hp_metric=False
        )
        if not datamodule.has_validation:
            config["limit_val_batches"] = 0
        config.update(
            logger=logger,
            callbacks=[*(user if isinstance(user, list) else [user]), *callbacks],
            plugins=plugins,
            enable_progress_bar=progress,
            default_root_dir=str(self.run_dir),
        )
        trainer = cli.trainer_class(**config)
        summary = next(c for c in trainer.callbacks if isinstance(c, SummaryCallback))
        summary.extra.update(self._record(cli, module, datamodule, trainer))
        return trainer

    def _record(self, cli: Any, module: L.LightningModule, datamodule: Any, trainer: L.Trainer) -> dict[str, Any]:
        """What the report reads besides the figures: label, role, method and its parameters."""
        hp = dict(module.hparams)
        loss = {
            "TeacherModule": "ce",
            "ProbeTeacherModule": "ce",
            "KLDistillModule": "soft_kl",
            "CKADistillModule": "cka",
        }.get(self.experiment.module)
        method = {
            "loss": loss,
            "ce_weight": 1.0 - hp["alpha"] if loss == "soft_kl" else 1.0,
            "arch": hp.get("arch"),
            "batch_size": datamodule.batch_size,
            "global_batch_size": datamodule.batch_size * trainer.world_size * trainer.accumulate_grad_batches,
            "epochs": trainer.max_epochs,
            "holdout": datamodule.num_val if datamodule.has_validation else 0,
            "precision": str(trainer.precision),
            **{
                k: hp[k]
                for k in (
                    "temperature",
                    "alpha",
                    "distill_token",
                    "lambda_cka",
                    "lambda_tok",
                    "layer_pairs",
                    "cka_representation",
                    "teacher_image_size",
                )
                if k in hp
            },
        }
        teacher = module.teacher
        record: dict[str, Any] = {
            "label": self.experiment.label,
            "role": self.experiment.role,
            "control_of": self.experiment.control_of,
            "method": method,
            "config_signature": config_signature(self.config_data),
            "teacher": None
            if teacher is None
            else {"name": teacher.name, "family": teacher.family, "source": teacher.source},
        }
        return record

    # -- training -------------------------------------------------------------------------
    def train(self, cli: Any) -> Path:
        trainer, module, datamodule = cli.trainer, cli.model, cli.datamodule
        L.seed_everything(self.seed, workers=True, verbose=False)
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and later
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=self.ckpt_path, weights_only=True)
        except BaseException:
            if _rank_zero() and self.ckpt_path is None:
                runs.discard_if_unstarted(self.run_dir)
            raise
        if trainer.interrupted:
            raise KeyboardInterrupt
        if trainer.current_epoch < 1:
            raise ValueError(f"{self._describe()} completed no epoch; check trainer.max_epochs and the data.")
        summary = next(c for c in trainer.callbacks if isinstance(c, SummaryCallback))
        last = self._test(trainer, module, datamodule, None)
        best = next(
            (
                c.best_model_path
                for c in trainer.checkpoint_callbacks
                if isinstance(c, ModelCheckpoint) and c.monitor == "val/acc" and c.best_model_path
            ),
            None,
        )
        selected = self._test(trainer, module, datamodule, best) if best else last
        items: dict[str, Any] = {
            "status": "complete",
            "test_acc": selected.get("test/acc"),
            "test_loss": selected.get("test/loss"),
            "test_acc_last": last.get("test/acc"),
            "selected_checkpoint": f"{runs.CHECKPOINT_DIR}/{Path(best).name if best else runs.LAST_CKPT}",
            "selection": "best held-out val/acc" if best else "last epoch (no held-out split)",
        }
        if "test/teacher_acc" in selected:
            items["teacher_acc"] = selected["test/teacher_acc"]
            items["teacher"] = {"test_acc": selected["test/teacher_acc"]}
        written = summary.update(**items)
        if trainer.is_global_zero:
            _log_hparams(trainer, module, datamodule, written)
            print(
                f"Run directory: {self.run_dir}  (summary: {self.run_dir / runs.SUMMARY_FILE}; "
                f"tensorboard --logdir {self.runs_dir})",
                flush=True,
            )
        return self.run_dir

    @staticmethod
    def _test(trainer: L.Trainer, module: L.LightningModule, datamodule: Any, ckpt: str | None) -> dict[str, float]:
        results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
        return {k: float(v) for k, v in (results[0] if results else {}).items()}


def config_signature(config: dict[str, Any]) -> str:
    """SHA-256 (hex, 16 characters) of the configuration without seeds and run-local keys."""
    text = json.dumps(signature_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def control_teacher(key: str, run: Run, configs_dir: Path) -> tuple[FrozenTeacher, list[tuple[int, int]] | None]:
    """The teacher that experiment ``key`` distils from (a CKA control), and the cells its
    loss trains: the selected checkpoint of its teacher run, or its preset's frozen teacher."""
    other = registry.get(key)
    if other.teacher is not None:
        path = runs.teacher_checkpoint(run.runs_dir, other.teacher, run.dataset, run.preset)
        from kdbias.data import DATASETS

        teacher = FrozenTeacher.from_checkpoint(
            path, run.dataset, DATASETS[run.dataset].num_classes, family=other.teacher_family
        )
        return teacher, None
    if other.module != "CKADistillModule":
        raise ValueError(f"analytics.cka_against: {key} has no teacher to measure against")
    model = _preset_model_config(other, configs_dir, run.preset)
    teacher = FrozenTeacher.from_pretrained(
        model["teacher"],
        model["teacher_pretrained"],
        run.dataset,
        model["teacher_image_size"],
        model.get("teacher_kwargs"),
    )
    return teacher, [tuple(p) for p in model["layer_pairs"]]


def _preset_model_config(experiment: registry.Experiment, configs_dir: Path, preset: str) -> dict[str, Any]:
    """``model:`` of ``experiment``'s preset: its module's defaults, then its YAML files in order."""
    signature = inspect.signature(experiment.module_class.__init__).parameters.values()
    merged: dict[str, Any] = {p.name: p.default for p in signature if p.default is not inspect.Parameter.empty}
    for path in experiment.config_files(configs_dir, preset):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        merged.update(data.get("model") or {})
    return merged


def _log_hparams(trainer: L.Trainer, module: L.LightningModule, datamodule: Any, summary: dict[str, Any]) -> None:
    """TensorBoard's HPARAMS entry: the module's and data's parameters with the final metrics."""
    params = {**dict(datamodule.hparams_initial), **dict(module.hparams_initial)}  # as Lightning logs them at fit start
    metrics = {
        f"hp/{k}": float(summary[k])
        for k in ("test_acc", "val_acc", "best_val_acc", "teacher_acc")
        if isinstance(summary.get(k), (int, float))
    }
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics)
            logger.finalize("success")  # flush now: the writer's own flush is up to 2 minutes away
