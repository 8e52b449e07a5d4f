"""Shared wiring of every kdbias LightningModule: student network, optimiser, schedule, metrics."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from kdbias.data import dataset_stats, normalize
from kdbias.models import build_model, check_arch_kwargs, check_compile, compiled, is_vit, model_input_stats
from kdbias.models.input_adapter import InputAdapter
from kdbias.modules.optim import Optimization, build_optimizer

__all__ = ["MODULE_KEY", "ClassifierModule", "hard_labels", "state_sha256"]

#: Checkpoint key naming the module's class (:meth:`ClassifierModule.on_save_checkpoint`).
MODULE_KEY = "kdbias_module"


def hard_labels(targets: torch.Tensor) -> torch.Tensor:
    """Class indices ``[B]`` from int labels ``[B]`` or mixed (CutMix/MixUp) targets ``[B, C]``."""
    return targets.argmax(dim=-1) if targets.ndim == 2 else targets


def state_sha256(module: nn.Module) -> str:
    """SHA-256 of ``module.state_dict()``: keys in sorted order, each key, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ClassifierModule(L.LightningModule):
    """A classifier built by :func:`kdbias.models.build_model`, trained by subclasses.

    Subclasses implement :meth:`training_losses`; this class owns the student network
    (``self.model``), its input re-normalisation (:meth:`student_input`), the optimiser
    (:class:`~kdbias.modules.optim.Optimization`), the per-step schedule and the accuracy
    metrics. Batches are ``(images, targets)``: images ``[B, 3, H, W]``, either normalised with
    the dataset's statistics (float, what :class:`kdbias.CIFARDataModule` hands a Trainer) or raw
    uint8 in 0..255 (what its dataloaders yield; normalised here, :meth:`dataset_normalised`);
    targets int ``[B]`` or mixed soft targets ``[B, C]``. :meth:`predict_step` returns logits.

    **Paired initialisation.** The student is built inside ``torch.random.fork_rng`` seeded
    with ``torch.initial_seed()`` (the seed of the last ``seed_everything``/``manual_seed``):
    its initial weights depend on that seed only, never on what was built before it (a
    teacher, projectors, callbacks). ``student_init_sha256`` records them.

    **What callbacks use:** ``model`` (the student network, ``student.model``),
    :meth:`student_input`, ``teacher`` (a :class:`~kdbias.teacher.FrozenTeacher`, or
    ``None``), ``last_losses`` (the latest step's detached loss components).

    **What is saved:** ``student`` (an ``nn.ModuleDict``: the network, plus subclasses'
    trainable heads) is the one trainable submodule, so the optimiser, DDP and checkpoints
    see exactly it; the teacher is never part of the module tree.

    Logged: ``train/loss``, ``train/loss_<part>`` per loss component (on logging steps),
    ``train/acc`` (against the dominant class of mixed targets), ``val/loss``, ``val/acc``
    (held-out split), ``test/loss``, ``test/acc`` (official test split).
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        dataset: str,
        pretrained: str | None,
        arch_kwargs: Mapping[str, Any] | None,
        optim: Optimization | Mapping[str, Any] | None,
        compile: bool | str,
    ) -> None:
        super().__init__()
        ClassifierModule.check_arguments(
            num_classes=num_classes, arch=arch, arch_kwargs=arch_kwargs, optim=optim, compile=compile
        )
        self.optim = Optimization.of(optim)
        self.arch = arch
        self.num_classes = num_classes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed())
            network = self.build_network(arch, num_classes, pretrained, dict(arch_kwargs or {}))
        #: The trainable part: what the optimiser, DDP and checkpoints see (``student.model``,
        #: and in subclasses extra heads such as ``student.projectors``).
        self.student = nn.ModuleDict({"model": network})
        self.student_init_sha256 = state_sha256(self.model)
        data_mean, data_std = dataset_stats(dataset)
        self.data_mean, self.data_std = data_mean, data_std
        stats = model_input_stats(arch, pretrained) or (None, None)
        self.input_adapter = InputAdapter(data_mean, data_std, *stats)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.last_losses: dict[str, torch.Tensor] = {}
        self._train_acc_logged = False
        # NHWC convolutions are faster on tensor cores; transformers gain nothing from it.
        self.channels_last = not is_vit(self.model)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._student_fn = compiled(self._student_logits, compile)

    @classmethod
    def check_arguments(cls, **arguments: Any) -> None:
        """``ValueError`` for a value this module would refuse, from its constructor's arguments
        alone (nothing is built or downloaded): what the command line checks before any work."""
        num_classes = arguments.get("num_classes", 1)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if "arch" in arguments:
            model_input_stats(arguments["arch"])  # ValueError naming the valid models
            check_arch_kwargs(arguments["arch"], dict(arguments.get("arch_kwargs") or {}))
        check_compile(arguments.get("compile"))
        Optimization.of(arguments.get("optim"))

    @classmethod
    def check_batch_size(cls, batch_size: int, **arguments: Any) -> None:
        """``InputError`` when the per-device batch cannot train this method (any batch can here)."""

    def method_record(self) -> dict[str, Any]:
        """The training method as the run's summary records it: ``loss`` (``"ce"``,
        ``"soft_kl"``, ``"cka"``), ``ce_weight`` and the method's own hyperparameters."""
        return {"loss": "ce", "ce_weight": 1.0}

    @property
    def model(self) -> nn.Module:
        """The student network (``student.model``): what is exported and analysed."""
        return self.student["model"]

    @property
    def teacher(self) -> Any:
        """The frozen teacher (:class:`~kdbias.teacher.FrozenTeacher`); ``None`` without one."""
        return None

    def build_network(self, name: str, num_classes: int, pretrained: str | None, kwargs: dict[str, Any]) -> nn.Module:
        """The student network (called once, under the seeded RNG fork); subclasses may wrap it."""
        return build_model(name, num_classes=num_classes, pretrained=pretrained, **kwargs)

    def plain_hparams(self) -> None:
        """Make the saved hyperparameters plain YAML/JSON values (checkpoints load with
        ``weights_only=True``; ``hparams.yaml`` loads with ``yaml.safe_load``)."""
        plain = dict(self.hparams)
        plain["optim"] = self.optim.as_dict()
        for key in ("arch_kwargs", "teacher_kwargs"):
            if plain.get(key) is not None:
                plain[key] = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(plain[key]).items()}
        self.save_hyperparameters(plain)  # also what Lightning logs (hparams_initial)

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool = True,
        **kwargs: Any,
    ):
        """Lightning's ``load_from_checkpoint`` with ``weights_only=True`` (no code runs from the
        file) and ``pretrained=None``: the weights come from the checkpoint, not the hub."""
        kwargs.setdefault("pretrained", None)
        return super().load_from_checkpoint(
            checkpoint_path,
            map_location=map_location,
            hparams_file=hparams_file,
            strict=strict,
            weights_only=weights_only,
            **kwargs,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Name the module's class in the checkpoint (``checkpoint[MODULE_KEY]``, e.g.
        ``"KLDistillModule"``): what ``python -m kdbias.evaluate`` rebuilds."""
        checkpoint[MODULE_KEY] = type(self).__name__

    # -- forward ------------------------------------------------------------------------
    def dataset_normalised(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` images normalised with the dataset's statistics (``data_mean``,
        ``data_std``, from the ``dataset`` hyperparameter).

        The dtype says what the images are: uint8 is raw pixels in 0..255 (a
        :class:`kdbias.CIFARDataModule` dataloader's batch), normalised here to float32 with
        :func:`kdbias.data.augment.normalize`; floating-point images are already
        dataset-normalised and are returned unchanged (the same tensor).
        """
        return images if images.is_floating_point() else normalize(images, self.data_mean, self.data_std)

    def student_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` (uint8 0..255 or dataset-normalised float: :meth:`dataset_normalised`)
        -> the student network's input (its own statistics and size; channels-last for CNNs)."""
        x = self.input_adapter(self.dataset_normalised(images))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _student_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.student_input(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` of ``images`` ``[B, 3, H, W]`` (compiled with ``compile``).

        dtype rule (:meth:`dataset_normalised`): uint8 images are raw pixels in 0..255 and are
        normalised here with the dataset's statistics; floating-point images are taken as
        already dataset-normalised, ``(x / 255 - data_mean) / data_std``. Either then goes
        through the model's :class:`~kdbias.models.input_adapter.InputAdapter`.
        """
        return self._student_fn(self.dataset_normalised(images))

    # -- training -------------------------------------------------------------------
    def training_losses(
        self, images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Return ``({"loss": total, part: value, ...}, student logits)``; override."""
        raise NotImplementedError

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean CE over the batch against int or soft targets, with label smoothing, float32."""
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.optim.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        images = self.dataset_normalised(images)  # the teacher, too, sees normalised images
        losses, logits = self.training_losses(images, targets)
        self.last_losses = {name: value.detach() for name, value in losses.items()}  # read by NonFiniteGuard
        self.train_acc.update(logits.detach(), hard_labels(targets))
        if not self._train_acc_logged:  # once per epoch: Lightning computes the metric at the epoch's end
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
            self._train_acc_logged = True
        if self.logging_step():
            for name, value in losses.items():
                tag = "train/loss" if name == "loss" else f"train/loss_{name}"
                self.log(tag, value.detach(), on_step=True, on_epoch=False)
        return losses["loss"]

    def attached_trainer(self) -> L.Trainer | None:
        """The Trainer running this module, or ``None`` when it is called directly (a test, a
        notebook): ``self.trainer`` raises ``RuntimeError`` when no Trainer is attached."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def logging_step(self) -> bool:
        """Whether this step's scalars reach the logger (``log_every_n_steps``): each
        ``self.log`` costs host time, so steps that would not be written skip it."""
        trainer = self.attached_trainer()
        every = trainer.log_every_n_steps if trainer is not None else 1
        return (self.global_step + 1) % max(1, every) == 0  # Lightning's own rule

    def on_train_epoch_start(self) -> None:
        # ``train/acc`` is logged at the epoch's first training step, so Lightning reduces (and
        # resets) it with the epoch's other metrics, before any callback's ``on_train_epoch_end``;
        # logged from the module's ``on_train_epoch_end``, metrics.csv got the previous epoch's.
        self._train_acc_logged = False

    # -- evaluation -----------------------------------------------------------------
    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], split: str, metric: MulticlassAccuracy) -> None:
        images, labels = batch
        logits = self(images)  # uint8 or dataset-normalised (forward)
        metric.update(logits, labels)
        loss = F.cross_entropy(logits.float(), labels)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=labels.shape[0])
        self.log(f"{split}/acc", metric, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Held-out split: ``val/loss``, ``val/acc`` (these select ``best.ckpt``)."""
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Official test split: ``test/loss``, ``test/acc`` (reported, never used to select)."""
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """float32 logits ``[B, num_classes]`` of ``batch``: ``(images, labels)`` (labels unused) or
        ``images``, uint8 0..255 or dataset-normalised float (the dtype rule of :meth:`forward`)."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).float()

    # -- optimisation ---------------------------------------------------------------
    def trainable_modules(self) -> list[nn.Module]:
        """Modules whose parameters the optimiser updates: the children of ``student``."""
        return list(self.student.values())

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer, schedule = build_optimizer(
            self.optim,
            self.trainable_modules(),
            self.trainer.estimated_stepping_batches,
            self.trainer.max_epochs or 1,
            fused=self.device.type == "cuda",
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_start(self) -> None:
        """Fit the schedule to this fit's length: a resumed run allowed more epochs
        (``--allow_changed trainer.max_epochs``) stretches the cosine to the new end."""
        total = max(1, int(self.trainer.estimated_stepping_batches))
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            fns = getattr(scheduler, "lr_lambdas", [])
            if not all(hasattr(fn, "retarget") for fn in fns):
                continue
            for fn, group, base in zip(fns, scheduler.optimizer.param_groups, scheduler.base_lrs):
                fn.retarget(total, self.optim.warmup_epochs, self.trainer.max_epochs or 1)
                group["lr"] = base * fn(scheduler.last_epoch)  # the next step already follows the new end
