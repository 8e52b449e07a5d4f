"""Structural distillation from a frozen self-supervised ViT (DINOv2): EXP-3."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from kdbias.data import IMAGENET_MEAN, IMAGENET_STD
from kdbias.losses import cka_loss, pool_tokens_to_grid, token_loss
from kdbias.models import block_outputs, build_model, check_block_indices, forward_features_and_blocks
from kdbias.modules.distill_base import DistillationModule
from kdbias.modules.input_adapter import InputAdapter

REPRESENTATIONS = ("image", "token")


class CKADistillModule(DistillationModule):
    """Student trained with ``CE + lambda_cka * L_cka + lambda_tok * L_tok``.

    For every ``(student_block, teacher_block)`` in ``layer_pairs`` the student's patch
    tokens ``[B, N, D_s]`` are compared with the teacher's ``[B, N, D_t]`` on a common
    grid: the coarser of the two, the finer one average-pooled to it (DINOv2/14 at 224 px:
    16x16 -> the student's 8x8; at 112 px both are 8x8 and nothing is pooled):

    - ``L_cka`` = mean over pairs of ``1 - linear_cka(student, teacher)``. CKA compares
      similarity structure, so the widths may differ without a projector. With
      ``cka_representation="image"`` (default) each image is one sample (its tokens
      flattened, ``[B, N_s * D]``): the loss aligns how the two networks arrange *images*
      relative to each other, the semantic structure a classifier needs, without asking
      the student to copy the teacher's per-location statistics (an inductive bias of its
      own). ``"token"`` makes every grid token a sample (``[B * N_s, D]``), a stronger,
      spatially explicit constraint.
    - ``L_tok`` = mean over pairs of the cosine distance between ``projector(student)``
      (one learned linear map ``D_s -> D_t`` per pair, trained with the student, not part
      of the exported student ``module.model``) and the teacher's tokens.

    Args:
        student: architecture name of the ViT student.
        teacher: architecture name of the frozen teacher (``dinov2_vits14``).
        teacher_pretrained: ``"hub"``, a local weights path, or ``None`` (random init,
            offline smoke runs only; logged as such).
        teacher_image_size: the teacher's input side; images are resized on the device
            (224 default; 112 puts DINOv2/14 on the student's 8x8 grid at 4x fewer FLOPs).
        layer_pairs: ``((student_block, teacher_block), ...)``, 0-based.
        lambda_cka, lambda_tok: loss weights.
        cka_representation: ``"image"`` or ``"token"`` (see above).
        unbiased_cka: use the debiased HSIC estimator (needs a batch of at least 4).
        teacher_kwargs: extra :func:`~kdbias.models.build_model` arguments of the teacher.
    Logs ``train/loss_ce``, ``train/loss_cka``, ``train/loss_tok`` and
    ``train/cka_s<i>_t<j>`` per pair.
    """

    def __init__(
        self,
        student: str = "deit_tiny_p4",
        teacher: str = "dinov2_vits14",
        teacher_pretrained: str | None = "hub",
        teacher_image_size: int = 224,
        layer_pairs: Sequence[Sequence[int]] = ((3, 3), (6, 6), (9, 9), (11, 11)),
        lambda_cka: float = 0.5,
        lambda_tok: float = 0.5,
        cka_representation: str = "image",
        unbiased_cka: bool = False,
        teacher_kwargs: dict[str, Any] | None = None,
        num_classes: int = 10,
        dataset: str = "cifar10",
        **kwargs: Any,
    ) -> None:
        if cka_representation not in REPRESENTATIONS:
            raise ValueError(f"cka_representation must be one of {REPRESENTATIONS}, got {cka_representation!r}")
        layer_pairs = tuple((int(s), int(t)) for s, t in layer_pairs)
        if not layer_pairs:
            raise ValueError("layer_pairs is empty: name at least one (student_block, teacher_block) pair.")
        teacher_module = _build_teacher(teacher, teacher_pretrained, teacher_image_size, teacher_kwargs or {})
        super().__init__(student, teacher_module, num_classes=num_classes, dataset=dataset, **kwargs)
        self.hparams["layer_pairs"] = [list(p) for p in layer_pairs]
        self.layer_pairs = layer_pairs
        self.student_blocks = [s for s, _ in layer_pairs]
        self.teacher_blocks = [t for _, t in layer_pairs]
        check_block_indices(self.model, self.student_blocks)
        check_block_indices(self.teacher, self.teacher_blocks)
        self.grid = min(self.model.patch_embed.grid_size[0], self.teacher.patch_embed.grid_size[0])
        self.teacher_adapter = InputAdapter(self.data_mean, self.data_std, IMAGENET_MEAN, IMAGENET_STD, teacher_image_size)
        self.projectors = nn.ModuleList(
            nn.Linear(self.model.embed_dim, self.teacher.embed_dim) for _ in layer_pairs
        )

    @property
    def teacher_network(self) -> nn.Module:
        return self.teacher

    def teacher_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher_adapter(images)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.model, self.projectors]

    def setup(self, stage: str) -> None:
        """Fail before training when the per-device batch is too small for the CKA estimator."""
        batch = getattr(getattr(self.trainer, "datamodule", None), "batch_size", None)
        if stage != "fit" or batch is None or self.hparams.cka_representation != "image":
            return  # token CKA has batch * grid^2 samples
        needed, estimator = (4, "unbiased (debiased HSIC)") if self.hparams.unbiased_cka else (2, "biased")
        if batch < needed:
            raise ValueError(
                f"CKA over images with the {estimator} estimator needs at least {needed} images per device per "
                f"step, but the batch is {batch}. Raise --batch-size (per device; or --global-batch-size), or use "
                "unbiased_cka=False / cka_representation='token'."
            )

    def teacher_tokens(self, images: torch.Tensor, grid: int) -> list[torch.Tensor]:
        """Teacher patch tokens at the paired blocks, pooled to ``grid x grid``: ``[B, grid^2, D_t]``."""
        tokens = block_outputs(self.teacher, self.teacher_input(images), self.teacher_blocks)
        return [pool_tokens_to_grid(t, grid) for t in tokens]

    def training_losses(self, images: torch.Tensor, targets: torch.Tensor):
        logits, student_tokens = forward_features_and_blocks(self.model, self.input_adapter(images), self.student_blocks)
        student_tokens = [pool_tokens_to_grid(s, self.grid) for s in student_tokens]
        teacher_tokens = self.run_teacher(self.teacher_tokens, images, self.grid)
        unbiased = self.hparams.unbiased_cka
        cka_terms, tok_terms = [], []
        for (s_idx, t_idx), s, t, projector in zip(self.layer_pairs, student_tokens, teacher_tokens, self.projectors):
            s_rep, t_rep = (s, t) if self.hparams.cka_representation == "image" else (s.flatten(0, 1), t.flatten(0, 1))
            cka_terms.append(cka_loss(s_rep, t_rep, unbiased=unbiased))
            tok_terms.append(token_loss(projector(s), t))
            if self._trainer is not None and self.logging_step():
                self.log(f"train/cka_s{s_idx}_t{t_idx}", 1.0 - cka_terms[-1].detach(), on_step=True, on_epoch=False)
        ce = self.cross_entropy(logits, targets)
        l_cka = torch.stack(cka_terms).mean()
        l_tok = torch.stack(tok_terms).mean()
        loss = ce + self.hparams.lambda_cka * l_cka + self.hparams.lambda_tok * l_tok
        return {"loss": loss, "ce": ce, "cka": l_cka, "tok": l_tok}, logits


def _build_teacher(name: str, pretrained: str | None, image_size: int, kwargs: dict[str, Any]) -> nn.Module:
    if pretrained is None:
        # A random teacher must be the same network on every rank and after a resume.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            teacher = build_model(name, num_classes=0, pretrained=None, img_size=image_size, **kwargs)
        print(f"CKADistillModule: teacher {name} has RANDOM weights (offline smoke run); not a result.")
        return teacher
    return build_model(name, num_classes=0, pretrained=pretrained, img_size=image_size, **kwargs)
