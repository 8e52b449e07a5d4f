"""``FrozenTeacher``: a frozen network plus the input adapter it needs, the one teacher interface.

Distillation modules and analytics callbacks talk to a teacher only through this class:
:meth:`FrozenTeacher.logits`, :meth:`FrozenTeacher.embedding`, :meth:`FrozenTeacher.blocks`
and :attr:`FrozenTeacher.network` (the timm module, for block counts). Every method takes
dataset-normalised images ``[B, 3, H, W]`` (what :class:`kdbias.CIFARDataModule` yields) and
applies the teacher's own statistics and resolution first.

A ``FrozenTeacher`` is a registered submodule of its LightningModule, so ``.to()``, device
placement and the model summary see it, but it is frozen for good:

- every parameter has ``requires_grad=False``: no optimiser, no DDP gradient bucket;
- :meth:`train` is a no-op: Lightning's ``model.train()`` after each validation keeps it
  in eval mode (no dropout, BatchNorm running statistics);
- it is never saved in, nor expected from, the parent's ``state_dict``: student
  checkpoints hold the student only, and the teacher is rebuilt from its source;
- its outputs are computed under ``torch.no_grad`` (plain tensors, usable in the
  student's loss).
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
    compiled,
    model_input_stats,
)
from kdbias.models.input_adapter import InputAdapter
from kdbias.runs import CheckpointError, load_checkpoint

__all__ = ["FrozenTeacher", "RANDOM_TEACHER_SEED"]

#: Seed of a randomly initialised teacher (offline smoke runs): the same network in every run.
RANDOM_TEACHER_SEED = 0


def _family(network: nn.Module) -> str:
    return type(getattr(network, "_orig_mod", network)).__name__


class FrozenTeacher(nn.Module):
    """A frozen teacher network and its input adapter.

    Args:
        network: the timm network (a classifier with a head, or headless like DINOv2).
        adapter: maps dataset-normalised images to the network's input (statistics, size).
        name: architecture name (``kdbias.models.build_model`` name or timm name).
        source: where the weights came from: a checkpoint path, ``"hub"``, a weights file,
            or ``"random"``.
    """

    def __init__(self, network: nn.Module, adapter: InputAdapter, name: str, source: str) -> None:
        super().__init__()
        self.network = network
        self.adapter = adapter
        self.name = name
        self.source = source
        self.requires_grad_(False)
        super().train(False)
        self._blocks_fn = self._blocks
        self._forward_fn = self._forward
        self.register_state_dict_post_hook(_drop_own_keys)
        self.register_load_state_dict_pre_hook(_fill_own_keys)

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
        with torch.random.fork_rng(devices=[]):  # building must not consume the caller's random stream
            network = build_model(name, num_classes=num_classes, pretrained=None, **(hparams.get("arch_kwargs") or {}))
        if family is not None and _family(network) != family:
            raise CheckpointError(
                f"teacher checkpoint {path} holds a {_family(network)} ({name}); this experiment distils from a "
                f"{family}. Pass a {family} teacher, or name the teacher you mean explicitly with --model.teacher."
            )
        weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
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

    # -- what a frozen module does --------------------------------------------------------
    def train(self, mode: bool = True) -> FrozenTeacher:
        """Always eval: a frozen teacher has no training mode."""
        return super().train(False)

    @property
    def family(self) -> str:
        """Class name of the network (``"ResNet"``, ``"ConvNeXt"``, ``"VisionTransformer"``)."""
        return _family(self.network)

    @property
    def num_classes(self) -> int:
        """Classes of the head; 0 for a headless network."""
        inner = getattr(self.network, "_orig_mod", self.network)
        return int(getattr(inner, "num_classes", 0) or 0)

    @property
    def has_head(self) -> bool:
        return self.num_classes > 0

    def compile(self, backend: bool | str = True) -> None:  # type: ignore[override]
        """``torch.compile`` the forward paths (logits/embedding and block taps); ``backend``:
        ``True`` for the default (inductor) or a backend name."""
        self._forward_fn = compiled(self._forward, backend)
        self._blocks_fn = compiled(self._blocks, backend)

    # -- outputs -----------------------------------------------------------------------
    def adapt(self, images: Tensor) -> Tensor:
        """Dataset-normalised ``[B, 3, H, W]`` -> the network's input ``[B, 3, S, S]``."""
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


def _drop_own_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """State-dict post hook: the teacher is never part of a saved state."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]


def _fill_own_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Load pre hook: a saved state never holds the teacher, so keep its current tensors."""
    for name, sub in module.named_modules():
        own = dict(sub._parameters)
        own.update({k: v for k, v in sub._buffers.items() if k not in sub._non_persistent_buffers_set})
        for key, tensor in own.items():
            if tensor is not None:
                state_dict.setdefault(f"{prefix}{name}.{key}" if name else f"{prefix}{key}", tensor)
