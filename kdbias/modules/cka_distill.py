"""Structural distillation from a frozen self-supervised ViT (DINOv2): EXP-3."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import nn

from kdbias.errors import InputError
from kdbias.losses import (
    UNBIASED_CKA_LOSS,
    cka_loss,
    permutation_floor,
    pool_tokens_to_grid,
    token_loss,
    unpaired_order,
)
from kdbias.models import (
    check_arch_kwargs,
    check_block_indices,
    compiled,
    forward_features_and_blocks,
    meta_model,
    num_blocks,
    patch_size_of,
)
from kdbias.models.tokens import resolve_layer_pairs, to_tokens, token_shapes
from kdbias.modules.distill_base import DistillationModule, teacher_deferred
from kdbias.modules.optim import Optimization
from kdbias.teacher import CheckpointTeacher, FrozenTeacher, PretrainedTeacher

__all__ = ["CKADistillModule"]

log = logging.getLogger(__name__)


class CKADistillModule(DistillationModule):
    """Student trained with ``CE + lambda_cka * L_cka + lambda_tok * L_tok``.

    For every ``(student_block, teacher_block)`` in ``layer_pairs`` the student's patch
    tokens ``[B, N, D_s]`` are compared with the teacher's ``[B, N, D_t]`` on a common
    grid: the coarser of the two, the finer one average-pooled to it (DINOv2/14 at 224 px:
    16x16 -> the student's 8x8; at 112 px both are 8x8 and nothing is pooled):

    - ``L_cka`` = mean over pairs of ``1 - linear_cka(student, teacher, unbiased_cka)``. CKA
      compares similarity structure, so the widths may differ without a projector. The
      estimator is the debiased HSIC by default (``unbiased_cka=True``, Song et al. 2012): at
      the paper's batch and widths it reads about 0 for independent features and about 1 for
      aligned ones, where the biased estimator reads about 0.95 for both (see
      :mod:`kdbias.losses.cka`); ``unbiased_cka=False`` selects the biased one. With
      ``cka_representation="image"`` (default) each image is one sample (its tokens
      flattened, ``[B, N * D]``): the loss aligns how the two networks arrange *images*
      relative to each other. ``"token"`` makes every grid token a sample
      (``[B * N, D]``), a stronger, spatially explicit constraint.
    - ``L_tok`` = mean over pairs of the cosine distance between ``projector(student)``
      (one learned linear map ``D_s -> D_t`` per pair, trained with the student, not part
      of the exported student ``module.model``) and the teacher's tokens.

    Both are computed in float32 (also under bf16 autocast). The CE weight is 1 (EXP-1/2
    weigh it by ``1 - alpha``).

    Args:
        arch: the student network: kdbias model name or any timm ViT name (its block taps need a ViT).
        teacher: architecture of the frozen teacher (``dinov2_vits14`` or a timm ViT name;
            built with the ``teacher_*`` arguments), a :class:`~kdbias.teacher.PretrainedTeacher`
            spec (its fields then replace them), the path of a :class:`~kdbias.modules.TeacherModule`
            checkpoint (``*.ckpt``, e.g. the ResNet-18 teacher, or a
            :class:`~kdbias.teacher.CheckpointTeacher`; the ``teacher_*`` arguments are then
            unused), a ready :class:`~kdbias.teacher.FrozenTeacher`, or ``None`` (evaluation only,
            with explicit ``layer_pairs``: what ``load_from_checkpoint`` builds). A CNN teacher's stage /
            block maps ``[B, C, H, W]`` become tokens ``[B, H*W, C]`` pooled to the pair's common
            grid (:func:`~kdbias.models.tokens.to_tokens`).
        teacher_pretrained: ``"hub"``, a local weights path, or ``None`` (random init, seeded:
            offline smoke runs only; logged as such).
        teacher_image_size: the teacher's input side; images are resized on the device
            (224 default; 112 puts DINOv2/14 on the student's 8x8 grid at 4x fewer FLOPs).
        teacher_kwargs: extra :func:`~kdbias.models.build_model` arguments of the teacher.
        layer_pairs: ``[(student_block, teacher_block), ...]``, 0-based.
        lambda_cka, lambda_tok: loss weights (>= 0).
        cka_representation: ``"image"`` or ``"token"`` (see above).
        unbiased_cka: the debiased HSIC estimator (default; needs a batch of at least 4);
            ``False``: the biased one.
        num_classes, dataset, pretrained, arch_kwargs, optim, compile: as for
            :class:`~kdbias.modules.TeacherModule`.

    Logs ``train/loss_ce``, ``train/loss_cka``, ``train/loss_tok``; on logging steps only, per
    pair ``train/cka_s<i>_t<j>`` (the trained CKA) and ``train/cka_floor_s<i>_t<j>`` (its
    permutation floor: the same features with the teacher's images re-paired by a random cycle,
    :func:`~kdbias.losses.permutation_floor`, seeded by the global step and drawn on the device,
    no host sync), and their means over pairs ``train/cka`` (= 1 - ``train/loss_cka``) and
    ``train/cka_floor``.
    """

    def __init__(
        self,
        arch: str = "deit_tiny_p4",
        teacher: str | PretrainedTeacher | CheckpointTeacher | None = "dinov2_vits14",
        teacher_pretrained: str | None = "hub",
        teacher_image_size: int = 224,
        teacher_kwargs: dict[str, Any] | None = None,
        layer_pairs: Sequence[tuple[int, int]] | str = ((3, 3), (6, 6), (9, 9), (11, 11)),
        lambda_cka: float = 0.5,
        lambda_tok: float = 0.5,
        cka_representation: Literal["image", "token"] = "image",
        unbiased_cka: bool = UNBIASED_CKA_LOSS,
        num_classes: int = 10,
        dataset: str = "cifar10",
        pretrained: str | None = None,
        arch_kwargs: dict[str, Any] | None = None,
        optim: Optimization = Optimization(),
        compile: bool | str = False,
    ) -> None:
        CKADistillModule.check_arguments(
            cka_representation=cka_representation,
            lambda_cka=lambda_cka,
            lambda_tok=lambda_tok,
            teacher_image_size=teacher_image_size,
            layer_pairs=layer_pairs,
        )
        spec = _spec(teacher, teacher_pretrained, teacher_image_size, teacher_kwargs)
        frozen = None if spec is None or teacher_deferred() else _build(spec, dataset, num_classes)
        super().__init__(arch, None, num_classes, dataset, pretrained, arch_kwargs, optim, compile=False)
        if frozen is not None:
            pairs = resolve_layer_pairs(layer_pairs, num_blocks(self.model), num_blocks(frozen.network))
        elif isinstance(layer_pairs, str):
            raise ValueError("layer_pairs 'relative' needs the teacher's depth: name a teacher, or explicit pairs.")
        else:
            pairs = [(int(s), int(t)) for s, t in layer_pairs]
        self.save_hyperparameters(ignore=["teacher"] if not isinstance(teacher, (str, type(None))) else None)
        if isinstance(spec, PretrainedTeacher):  # the spec's fields are the teacher_* hyperparameters
            self.hparams.update(
                teacher=spec.arch,
                teacher_pretrained=spec.weights,
                teacher_image_size=spec.image_size,
                teacher_kwargs=spec.arch_kwargs,
            )
        elif isinstance(spec, CheckpointTeacher):
            self.hparams["teacher"] = spec.path
        self.hparams["layer_pairs"] = [list(p) for p in pairs]
        self.plain_hparams()
        if frozen is not None and frozen.source == "random":
            if rank_zero_only.rank == 0:
                log.info(
                    f"CKADistillModule: teacher {frozen.name} has RANDOM weights (offline smoke run); not a result."
                )
        self.layer_pairs = pairs
        self.student_blocks = check_block_indices(self.model, [s for s, _ in pairs])
        # Sized by the teacher (set_teacher) or, reloaded without one, by the checkpoint (on_load_checkpoint).
        self.student["projectors"] = nn.ModuleList()
        self.teacher_blocks: list[int] | None = None  # set with the teacher, as the pairs' common grids
        self.grids: list[int] | None = None
        self._taps_fn = self._student_taps
        if compile not in (False, None):  # the training forward with its block taps, and the teacher
            self._student_fn = compiled(self._student_logits, compile)
            self._taps_fn = compiled(self._student_taps, compile)
        if frozen is not None:
            self.set_teacher(frozen.compiled(compile))

    def set_teacher(self, teacher: FrozenTeacher | None) -> None:
        """Attach (or detach) the teacher; attaching also fixes its paired block indices, each
        pair's common grid and the projectors ``D_s -> D_t`` (built seeded when absent;
        ``ValueError`` when loaded ones do not fit the teacher's token widths)."""
        if teacher is not None:
            blocks = check_block_indices(teacher.network, [t for _, t in self.layer_pairs])
            shapes = token_shapes(teacher.blocks, self.model.patch_embed.img_size[0], blocks)
            widths = [w for _, w in shapes]
            if not len(self.projectors):
                self._build_projectors(widths)
            elif [p.out_features for p in self.projectors] != widths:
                have = [p.out_features for p in self.projectors]
                raise ValueError(f"teacher {teacher.name}'s token widths {widths} do not fit the projectors' {have}")
            self.teacher_blocks = blocks
            self.grids = [min(self.model.patch_embed.grid_size[0], side) for side, _ in shapes]  # per pair
        super().set_teacher(teacher)

    def _build_projectors(self, widths: Sequence[int]) -> None:
        with torch.random.fork_rng(devices=[]):  # projectors, like the student, depend on the seed only
            torch.manual_seed(torch.initial_seed() + 1)
            projectors = nn.ModuleList(nn.Linear(self.model.embed_dim, w) for w in widths)
        self.student["projectors"] = projectors.to(self.device)

    @classmethod
    def build_teacher(cls, hparams: Mapping[str, Any]) -> FrozenTeacher:
        """The teacher of the ``teacher`` and ``teacher_*`` hyperparameters."""
        args = ("teacher", "teacher_pretrained", "teacher_image_size", "teacher_kwargs")
        spec = _spec(*(hparams.get(k) for k in args))
        if spec is None:
            raise ValueError("this student's hyperparameters name no teacher; attach one with module.set_teacher(...).")
        return _build(spec, hparams["dataset"], hparams["num_classes"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Without a teacher, the projectors take their shapes from the saved ``student.projectors.<i>.weight``."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict") or {}
        keys = [f"student.projectors.{i}.weight" for i in range(len(self.layer_pairs))]
        if not len(self.projectors) and all(k in state for k in keys):
            self._build_projectors([int(state[k].shape[0]) for k in keys])

    def method_record(self) -> dict[str, Any]:
        hp = self.hparams
        keys = ("lambda_cka", "lambda_tok", "layer_pairs", "cka_representation", "unbiased_cka", "teacher_image_size")
        return {"loss": "cka", "ce_weight": 1.0, **{k: hp[k] for k in keys if k in hp}}

    @property
    def projectors(self) -> nn.ModuleList:
        """The token projectors ``D_s -> D_t``, one per layer pair (``student.projectors``)."""
        return self.student["projectors"]

    @classmethod
    def check_arguments(cls, **arguments: Any) -> None:
        """Also the layer indices and the teacher's input size, on meta-device networks (no
        weights built or fetched) when ``arch`` and ``teacher`` are given."""
        super().check_arguments(**arguments)
        representation = arguments.get("cka_representation", "image")
        lambda_cka, lambda_tok = arguments.get("lambda_cka", 0.0), arguments.get("lambda_tok", 0.0)
        size = arguments.get("teacher_image_size", 1)
        if representation not in ("image", "token"):
            raise ValueError(f"cka_representation must be 'image' or 'token', got {representation!r}")
        if lambda_cka < 0 or lambda_tok < 0:
            raise ValueError(f"lambda_cka and lambda_tok must be >= 0, got {lambda_cka} and {lambda_tok}")
        if size is not None and size < 1:
            raise ValueError(f"teacher_image_size must be >= 1, got {size}")
        given = arguments.get("layer_pairs", [(0, 0)])
        if isinstance(given, str):
            if given != "relative":
                raise ValueError(f"layer_pairs must be (student, teacher) pairs or 'relative', got {given!r}")
            return  # resolved against the built networks' depths
        pairs = [tuple(p) for p in given]
        if not pairs:
            raise ValueError("layer_pairs is empty: name at least one (student_block, teacher_block) pair.")
        teacher = arguments.get("teacher")
        if isinstance(arguments.get("arch"), str) and isinstance(teacher, str) and not teacher.endswith(".ckpt"):
            _check_shapes(arguments, pairs)

    def setup(self, stage: str) -> None:
        """Fail before training when the per-device batch is too small for the CKA estimator."""
        super().setup(stage)
        batch = getattr(getattr(self.trainer, "datamodule", None), "batch_size", None)
        if stage == "fit" and batch is not None:
            self.check_batch_size(batch, **self.hparams)

    @classmethod
    def check_batch_size(cls, batch_size: int, **arguments: Any) -> None:
        """``InputError`` when ``batch_size`` images per device per step are too few for the CKA
        estimator (token CKA has ``batch * grid^2`` samples and is never too small)."""
        if arguments.get("cka_representation", "image") != "image":
            return
        unbiased = arguments.get("unbiased_cka", UNBIASED_CKA_LOSS)
        needed, estimator = (4, "unbiased (debiased HSIC)") if unbiased else (2, "biased")
        if batch_size < needed:
            raise InputError(
                f"CKA over images with the {estimator} estimator needs at least {needed} images per device per "
                f"step, but the batch is {batch_size}. Raise --data.batch_size, or use --model.unbiased_cka false / "
                "--model.cka_representation token."
            )

    def _student_taps(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Student logits ``[B, C]`` and its paired blocks' patch tokens pooled to the common grid."""
        logits, tokens = forward_features_and_blocks(self.model, self.student_input(images), self.student_blocks)
        return logits, [pool_tokens_to_grid(t, grid) for t, grid in zip(tokens, self.grids)]

    def teacher_tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Teacher tokens at the paired blocks, pooled to each pair's common grid: ``[B, grid^2, D_t]``."""
        blocks = self.teacher.blocks(images, self.teacher_blocks)
        return [to_tokens(t, grid) for t, grid in zip(blocks, self.grids)]

    def training_losses(self, images: torch.Tensor, targets: torch.Tensor):
        logits, student_tokens = self._taps_fn(images)
        teacher_tokens = self.teacher_tokens(images)
        unbiased = self.hparams.unbiased_cka
        by_image = self.hparams.cka_representation == "image"
        cka_terms, tok_terms = [], []
        for s, t, projector in zip(student_tokens, teacher_tokens, self.projectors):
            s_rep, t_rep = (s, t) if by_image else (s.flatten(0, 1), t.flatten(0, 1))
            cka_terms.append(cka_loss(s_rep, t_rep, unbiased=unbiased))
            tok_terms.append(token_loss(projector(s), t))
        if self.attached_trainer() is not None and self.logging_step():
            self._log_cka(cka_terms, student_tokens, teacher_tokens)
        ce = self.cross_entropy(logits, targets)
        l_cka = torch.stack(cka_terms).mean()
        l_tok = torch.stack(tok_terms).mean()
        loss = ce + self.hparams.lambda_cka * l_cka + self.hparams.lambda_tok * l_tok
        return {"loss": loss, "ce": ce, "cka": l_cka, "tok": l_tok}, logits

    def _log_cka(self, terms: list[torch.Tensor], student: list[torch.Tensor], teacher: list[torch.Tensor]) -> None:
        """Each pair's trained CKA next to its permutation floor (tensors, no host sync)."""
        device = student[0].device
        perm = unpaired_order(student[0].shape[0], torch.Generator(device=device).manual_seed(self.global_step), device)
        by_image = self.hparams.cka_representation == "image"
        values, floors = [], []
        for (s_idx, t_idx), term, s, t in zip(self.layer_pairs, terms, student, teacher):
            if by_image:
                s_rep, t_rep, order = s, t, perm
            else:  # token samples: re-pair the images, keep each token's grid position
                s_rep, t_rep = s.flatten(0, 1), t.flatten(0, 1)
                order = (perm[:, None] * s.shape[1] + torch.arange(s.shape[1], device=device)).flatten()
            values.append(1.0 - term.detach())
            floors.append(permutation_floor(s_rep, t_rep, order, self.hparams.unbiased_cka))
            self.log(f"train/cka_s{s_idx}_t{t_idx}", values[-1], on_step=True, on_epoch=False)
            self.log(f"train/cka_floor_s{s_idx}_t{t_idx}", floors[-1], on_step=True, on_epoch=False)
        self.log("train/cka", torch.stack(values).mean(), on_step=True, on_epoch=False)
        self.log("train/cka_floor", torch.stack(floors).mean(), on_step=True, on_epoch=False)


def _spec(
    teacher: Any, pretrained: str | None, image_size: int | None, kwargs: dict[str, Any] | None
) -> PretrainedTeacher | CheckpointTeacher | FrozenTeacher | None:
    """The teacher argument as a spec: a ``*.ckpt`` path, an architecture name (with the
    ``teacher_*`` arguments), a spec or a ready teacher as given, or ``None``."""
    if isinstance(teacher, str) and teacher.endswith(".ckpt"):  # a TeacherModule checkpoint (a CNN, ...)
        return CheckpointTeacher(teacher)
    if isinstance(teacher, str):
        return PretrainedTeacher(teacher, pretrained, image_size, kwargs)
    return teacher


def _build(spec: Any, dataset: str, num_classes: int) -> FrozenTeacher:
    if isinstance(spec, CheckpointTeacher):
        return spec.build(dataset, num_classes)
    return spec.build(dataset) if isinstance(spec, PretrainedTeacher) else spec


def _check_shapes(arguments: dict[str, Any], pairs: list[tuple[int, int]]) -> None:
    """Layer indices in range and a teacher input side its patch grid tiles, on meta networks."""
    student = meta_model(arguments["arch"], **dict(arguments.get("arch_kwargs") or {}))
    kwargs = dict(arguments.get("teacher_kwargs") or {})
    check_arch_kwargs(arguments["teacher"], kwargs)  # shape arguments only, like the student's arch_kwargs
    size = arguments.get("teacher_image_size")
    if size is not None:
        kwargs["img_size"] = size
    teacher = meta_model(arguments["teacher"], num_classes=0, **kwargs)
    check_block_indices(student, [s for s, _ in pairs])
    check_block_indices(teacher, [t for _, t in pairs])
    patch = patch_size_of(teacher)
    if size is not None and size % patch:
        below, above = size - size % patch, size - size % patch + patch
        raise ValueError(
            f"teacher_image_size {size} is not a multiple of {arguments['teacher']}'s patch size {patch}: its grid "
            f"would drop {size % patch} px of every image. Use {below or patch} or {above}."
        )
