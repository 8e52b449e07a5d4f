"""``FrozenTeacher``: a frozen network plus the input adapter it needs, the one teacher interface.

Distillation modules and analytics callbacks talk to a teacher only through this class:
:meth:`FrozenTeacher.logits`, :meth:`FrozenTeacher.embedding`, :meth:`FrozenTeacher.blocks`
and :attr:`FrozenTeacher.network` (the timm module, for block counts). Every method takes
dataset-normalised images ``[B, 3, H, W]`` (what :class:`kdbias.CIFARDataModule` yields) and
applies the teacher's own statistics and resolution first.

A ``FrozenTeacher`` is a plain component outside its LightningModule's tree, so ``state_dict``,
the optimiser, DDP and ``train()`` never see it (student checkpoints hold the student only). It
is frozen for good: ``requires_grad=False``, eval mode, outputs under ``torch.no_grad``.

How a run names its teacher (``--model.teacher``) is a *spec*: :class:`CheckpointTeacher`
(a TeacherModule checkpoint, or ``"auto"``) or :class:`PretrainedTeacher` (an architecture
and its weights); :func:`teacher_spec` turns the shorthands (``auto``, a path, a config
mapping) into one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdbias.data import dataset_stats
from kdbias.models import (
    PretrainedWeightsError,
    block_outputs,
    build_model,
    check_arch_kwargs,
    compiled,
    head_classes,
    model_input_stats,
    unwrap_model,
)
from kdbias.models.heads import check_head
from kdbias.models.input_adapter import InputAdapter
from kdbias.runs import CheckpointError, load_checkpoint

__all__ = [
    "CheckpointTeacher",
    "FrozenTeacher",
    "PretrainedTeacher",
    "RandomTeacher",
    "RANDOM_TEACHER_SEED",
    "TeacherSpec",
    "teacher_spec",
]

#: Seed of a randomly initialised teacher (offline smoke runs): the same network in every run.
RANDOM_TEACHER_SEED = 0


def _family(network: nn.Module) -> str:
    return type(unwrap_model(network)).__name__


class FrozenTeacher(nn.Module):
    """A frozen teacher network and its input adapter.

    Args:
        network: the timm network (a classifier with a head, or headless like DINOv2).
        adapter: maps dataset-normalised images to the network's input (statistics, size).
        name: architecture name (``kdbias.models.build_model`` name or timm name).
        source: where the weights came from: a checkpoint path, ``"hub"``, a weights file, ``"random"``.
        compile: ``torch.compile`` the forward paths: ``True`` (inductor) or a backend (:meth:`compiled`).
    """

    def __init__(
        self, network: nn.Module, adapter: InputAdapter, name: str, source: str, compile: bool | str = False
    ) -> None:
        super().__init__()
        self.network = network
        self.adapter = adapter
        self.name = name
        self.source = source
        self.backend = compile
        self.requires_grad_(False)
        self.eval()
        self._forward_fn = compiled(self._forward, compile)
        self._blocks_fn = compiled(self._blocks, compile)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, path: str | Path, dataset: str, num_classes: int, family: str | None = None
    ) -> FrozenTeacher:
        """The network of a :class:`~kdbias.modules.TeacherModule` checkpoint.

        Read with ``weights_only=True``. Raises :class:`~kdbias.runs.CheckpointError` (a
        ``ValueError``, one line naming the file and the fix) for an unreadable file, a
        checkpoint that is not a TeacherModule's, another dataset or class count, or a
        network whose class is not ``family`` (e.g. ``"ResNet"``) when one is asked for.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"teacher checkpoint not found: {path}. Train a teacher first (python experiments/teacher_resnet18.py "
                "or teacher_convnextv2.py; --smoke offline) or name the checkpoints/best.ckpt of an existing teacher "
                "run with --model.teacher PATH."
            )
        checkpoint = load_checkpoint(path)
        hparams = checkpoint.get("hyper_parameters")
        state = checkpoint.get("state_dict")
        if not isinstance(hparams, dict) or not isinstance(state, dict) or not isinstance(hparams.get("arch"), str):
            raise CheckpointError(
                f"{path} is not a TeacherModule checkpoint (no arch in its hyper_parameters). Pass the "
                "checkpoints/best.ckpt or last.ckpt of an experiments/teacher_*.py run."
            )
        if "teacher" in hparams:
            raise CheckpointError(f"{path} is a distilled student's checkpoint, not a TeacherModule's.")
        if hparams.get("dataset") != dataset or hparams.get("num_classes") != num_classes:
            raise CheckpointError(
                f"teacher checkpoint {path} was trained on {hparams.get('dataset')!r} with "
                f"{hparams.get('num_classes')} classes; this run needs {dataset!r} with {num_classes}. "
                "Use a teacher trained on the same dataset."
            )
        name = hparams["arch"]
        try:
            check_arch_kwargs(name, hparams.get("arch_kwargs"))
        except ValueError as error:
            raise CheckpointError(f"teacher checkpoint {path}: {error}") from None
        with torch.random.fork_rng(devices=[]):  # building must not consume the caller's random stream
            network = build_model(name, num_classes=num_classes, pretrained=None, **(hparams.get("arch_kwargs") or {}))
        if family is not None and _family(network) != family:
            raise CheckpointError(
                f"teacher checkpoint {path} holds a {_family(network)} ({name}); this experiment distils from a "
                f"{family}. Pass a {family} teacher, or name the teacher you mean explicitly with --model.teacher."
            )
        prefix = "student.model."
        weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            network.load_state_dict(weights)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise CheckpointError(f"teacher checkpoint {path} does not fit {name}: {first}") from None
        size = (hparams.get("arch_kwargs") or {}).get("img_size")  # a teacher trained at another side (DINOv2 probe)
        return cls(network, _adapter(name, dataset, size), name, str(path))

    @classmethod
    def from_module(cls, module: nn.Module) -> FrozenTeacher:
        """The network of a trained :class:`~kdbias.modules.TeacherModule` (shared, and frozen
        in place), with that module's input adapter."""
        return cls(module.model, module.input_adapter, module.arch, f"{type(module).__name__} instance")

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        pretrained: str | None,
        dataset: str,
        image_size: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        num_classes: int = 0,
        argument: str = "teacher_pretrained",
    ) -> FrozenTeacher:
        """A network from :func:`~kdbias.models.build_model` with ``pretrained`` weights
        (``"hub"``, a local file, or ``None``: random, seeded with :data:`RANDOM_TEACHER_SEED`
        so that every run, rank and resume sees the same network; smoke runs only).

        ``image_size``: the side the teacher sees (images are resized on the device);
        ``argument``: how the caller names ``pretrained`` (quoted in the hub error).
        """
        kwargs = dict(model_kwargs or {})
        if image_size is not None:
            kwargs["img_size"] = image_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_TEACHER_SEED)
            try:
                network = build_model(name, num_classes=num_classes, pretrained=pretrained, **kwargs)
            except PretrainedWeightsError as error:  # name the argument the caller knows
                message = str(error).replace("pretrained=", f"{argument}=")
                raise PretrainedWeightsError(f"{message} (command line: --model.{argument})") from None
        source = "random" if pretrained is None else str(pretrained)
        return cls(network, _adapter(name, dataset, image_size), name, source)

    def compiled(self, backend: bool | str) -> FrozenTeacher:
        """This teacher (the same network, frozen) with its forward paths under ``torch.compile``."""
        if backend in (False, None) or backend == self.backend:
            return self
        return FrozenTeacher(self.network, self.adapter, self.name, self.source, compile=backend)

    @property
    def family(self) -> str:
        """Class name of the network (``"ResNet"``, ``"ConvNeXt"``, ``"VisionTransformer"``)."""
        return _family(self.network)

    @property
    def num_classes(self) -> int:
        """Classes of the head; 0 for a headless network."""
        inner = unwrap_model(self.network)
        return int(getattr(inner, "num_classes", 0) or 0)

    @property
    def has_head(self) -> bool:
        return self.num_classes > 0

    # -- outputs -----------------------------------------------------------------------
    def adapt(self, images: Tensor) -> Tensor:
        """Dataset-normalised ``[B, 3, H, W]`` -> the network's input ``[B, 3, S, S]``; the teacher
        first moves to the images' device (and floating dtype) when it is elsewhere. Raw uint8
        images are refused (``TypeError``): normalise them first
        (:meth:`~kdbias.modules.ClassifierModule.dataset_normalised`)."""
        if not images.is_floating_point():
            raise TypeError(
                f"FrozenTeacher {self.name} takes dataset-normalised float images, got {images.dtype}; normalise "
                "them first (module.dataset_normalised(images) or CIFARDataModule.normalize_images)."
            )
        weight = next(self.network.parameters(), None)
        if weight is not None and (weight.device != images.device or weight.dtype != images.dtype):
            dtype = images.dtype if images.is_floating_point() else weight.dtype
            self.to(device=images.device, dtype=dtype)
        return self.adapter(images)

    def _forward(self, images: Tensor) -> Tensor:
        return self.network(self.adapt(images))

    def _blocks(self, images: Tensor, indices: Sequence[int]) -> list[Tensor]:
        return block_outputs(self.network, self.adapt(images), list(indices))

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """The network's output: logits ``[B, num_classes]``, or the embedding ``[B, D]``
        of a headless network."""
        return self._forward_fn(images)

    def logits(self, images: Tensor) -> Tensor:
        """Class scores ``[B, num_classes]``; ``ValueError`` for a headless teacher."""
        if not self.has_head:
            raise ValueError(f"teacher {self.name} has no classification head; use embedding() or blocks()")
        return self(images)

    @torch.no_grad()
    def embedding(self, images: Tensor) -> Tensor:
        """Pooled pre-logits features ``[B, D]`` (DINOv2: the CLS embedding)."""
        network = self.network
        if hasattr(network, "forward_features") and hasattr(network, "forward_head"):
            return network.forward_head(network.forward_features(self.adapt(images)), pre_logits=True)
        return self(images)

    @torch.no_grad()
    def blocks(self, images: Tensor, indices: Sequence[int]) -> list[Tensor]:
        """Outputs of blocks ``indices`` (0-based): ViT patch tokens ``[B, N, D]`` or CNN maps
        ``[B, C, H, W]`` (see :mod:`kdbias.models.taps`)."""
        return self._blocks_fn(images, indices)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, source={self.source!r}, frozen"


def _adapter(name: str, dataset: str, image_size: int | None = None) -> InputAdapter:
    try:
        stats = model_input_stats(name)
    except ValueError:  # a plain timm name: its pretrained config says which statistics it expects
        stats = None
    data_mean, data_std = dataset_stats(dataset)
    return InputAdapter(data_mean, data_std, *(stats or (None, None)), image_size)


# --------------------------------------------------------------------------- specs


class TeacherSpec:
    """How a run names its teacher: typed configuration (``class_path``/``init_args`` on the
    command line and in YAML) that :meth:`build` turns into a :class:`FrozenTeacher`."""

    def build(self, dataset: str, num_classes: int, compile: bool | str = False) -> FrozenTeacher:
        raise NotImplementedError

    def as_config(self) -> dict[str, Any]:
        """``{"class_path": ..., "init_args": {...}}``: plain values (hyperparameters, YAML)."""
        return {"class_path": f"{type(self).__module__}.{type(self).__name__}", "init_args": dict(vars(self))}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class CheckpointTeacher(TeacherSpec):
    """The network of a :class:`~kdbias.modules.TeacherModule` checkpoint.

    Args:
        path: the checkpoint (read with ``weights_only=True``); ``"auto"``: the selected checkpoint
            of the newest complete run of the experiment's teacher; ``"run:NAME"``: of run ``NAME``
            (both resolved by the command line, :func:`kdbias.runs.teacher_checkpoint`).
        family: the network class it must have (``"ResNet"``, ``"ConvNeXt"``), or ``None``.
    """

    def __init__(self, path: str = "auto", family: str | None = None) -> None:
        self.path = str(path)
        self.family = family

    def build(self, dataset: str, num_classes: int, compile: bool | str = False) -> FrozenTeacher:
        if self.path == "auto" or self.path.startswith("run:"):
            raise ValueError(
                f"teacher {self.path!r} is resolved by the experiment scripts (the selected checkpoint of the teacher "
                "run); pass the path of a TeacherModule checkpoint."
            )
        return FrozenTeacher.from_checkpoint(self.path, dataset, num_classes, family=self.family).compiled(compile)


class PretrainedTeacher(TeacherSpec):
    """A network from :func:`~kdbias.models.build_model` with pretrained weights.
    Its head is kept when the weights have one over exactly the dataset's classes
    (:func:`~kdbias.models.head_classes`), else it is headless (:meth:`check_logits`).

    Args:
        arch: kdbias model name (``dinov2_vits14``) or timm name.
        weights: ``"hub"``, a local weights file, or ``None`` (random, seeded: smoke runs only).
        image_size: the side the teacher sees (images resized on the device); ``None``: as given.
        arch_kwargs: extra :func:`~kdbias.models.build_model` arguments.
    """

    def __init__(
        self,
        arch: str = "dinov2_vits14",
        weights: str | None = "hub",
        image_size: int | None = None,
        arch_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if image_size is not None and image_size < 1:
            raise ValueError(f"teacher image_size must be >= 1, got {image_size}")
        check_arch_kwargs(arch, dict(arch_kwargs or {}))  # shape arguments only: weights come from weights=
        self.arch, self.weights, self.image_size = arch, weights, image_size
        self.arch_kwargs = dict(arch_kwargs) if arch_kwargs else None

    def head(self, num_classes: int) -> int:
        """``num_classes`` when the weights' head is over that many classes, else 0 (headless)."""
        return num_classes if num_classes > 0 and head_classes(self.arch, self.weights) == num_classes else 0

    def check_logits(self, num_classes: int) -> None:
        """:func:`~kdbias.models.heads.check_head`: refused unless the head fits (soft KL needs it)."""
        check_head(self.arch, self.weights, num_classes)

    def build(self, dataset: str, num_classes: int = 0, compile: bool | str = False) -> FrozenTeacher:
        teacher = FrozenTeacher.from_pretrained(
            self.arch, self.weights, dataset, self.image_size, self.arch_kwargs, num_classes=self.head(num_classes)
        )
        return teacher.compiled(compile)


class RandomTeacher(TeacherSpec):
    """An untrained classifier with a head of the dataset's classes, seeded with
    :data:`RANDOM_TEACHER_SEED` (the same network in every run): the random-teacher control,
    a teacher signal without knowledge.

    Args:
        arch: kdbias model name (``resnet18_cifar``) or timm name.
        arch_kwargs: extra :func:`~kdbias.models.build_model` arguments.
    """

    def __init__(self, arch: str = "resnet18_cifar", arch_kwargs: dict[str, Any] | None = None) -> None:
        check_arch_kwargs(arch, dict(arch_kwargs or {}))  # never checkpoint_path, pretrained, num_classes: untrained
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs) if arch_kwargs else None

    def build(self, dataset: str, num_classes: int = 0, compile: bool | str = False) -> FrozenTeacher:
        teacher = FrozenTeacher.from_pretrained(
            self.arch, None, dataset, None, self.arch_kwargs, num_classes=num_classes
        )
        return teacher.compiled(compile)


RANDOM_PREFIX = "random:"  #: ``--model.teacher random:<arch>``: a :class:`RandomTeacher` of ``arch``

#: The spec classes a configuration may name (``class_path``); nothing else is imported.
SPEC_CLASSES: dict[str, type[TeacherSpec]] = {
    f"{cls.__module__}.{cls.__name__}": cls for cls in (CheckpointTeacher, PretrainedTeacher, RandomTeacher)
}


def teacher_spec(value: Any) -> TeacherSpec | FrozenTeacher | None:
    """A spec from its shorthands: ``None``; a :class:`TeacherSpec` or :class:`FrozenTeacher`
    as is; ``"auto"`` or a path -> :class:`CheckpointTeacher`; a ``{"class_path", "init_args"}``
    mapping naming one of :data:`SPEC_CLASSES` (short names accepted); a trained
    :class:`~kdbias.modules.TeacherModule` -> its frozen network."""
    if value is None or isinstance(value, (TeacherSpec, FrozenTeacher)):
        return value
    if isinstance(value, str) and value.startswith(RANDOM_PREFIX):  # "random:resnet18_cifar" (README)
        return RandomTeacher(value[len(RANDOM_PREFIX) :] or "resnet18_cifar")
    if isinstance(value, (str, Path)):
        return CheckpointTeacher(str(value))
    if isinstance(value, dict) and "class_path" in value:
        name = str(value["class_path"])
        cls = SPEC_CLASSES.get(name) or next((c for c in SPEC_CLASSES.values() if c.__name__ == name), None)
        if cls is None:
            raise ValueError(f"unknown teacher class_path {name!r}; valid: {', '.join(SPEC_CLASSES)}")
        return cls(**dict(value.get("init_args") or {}))
    if hasattr(value, "model") and hasattr(value, "input_adapter") and hasattr(value, "arch"):
        return FrozenTeacher.from_module(value)
    raise TypeError(
        "teacher must be a checkpoint path, 'auto', a CheckpointTeacher/PretrainedTeacher spec, a FrozenTeacher or a "
        f"TeacherModule, got {type(value).__name__}"
    )
