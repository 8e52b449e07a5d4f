"""Logit distillation losses: soft (Hinton et al. 2015) and hard (DeiT, Touvron et al. 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdbias.losses._precision import autocast_disabled

__all__ = ["hard_distillation_loss", "soft_kl_loss"]


def _check_logits(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.shape != teacher_logits.shape or student_logits.dim() < 2:
        raise ValueError(
            "student and teacher logits must both have shape [..., C] with the same C, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}; "
            "give the teacher a head with the student's classes"
        )


def soft_kl_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Temperature-scaled KL divergence from the teacher's to the student's softened outputs.

    ``loss = tau^2 * KL(softmax(t / tau) || softmax(s / tau))``, summed over the
    ``C`` classes and averaged over the leading dimensions ("batchmean").
    The ``tau^2`` factor keeps the gradient w.r.t. the student logits,
    ``tau * (softmax(s / tau) - softmax(t / tau)) / B``, on the scale of a
    cross-entropy gradient as ``tau`` changes.

    This differs from DeiT's soft distillation, which computes
    ``F.kl_div(log_softmax(s/tau), log_softmax(t/tau), reduction='sum', log_target=True)
    * tau^2 / s.numel()``, i.e. divides by ``B * C``: DeiT's value (and gradient) is
    ``1 / C`` of this one. Weights tuned for DeiT's loss must be multiplied by ``C``.

    Args:
        student_logits: ``[B, C]`` (or ``[..., C]``) raw scores, any float dtype.
        teacher_logits: same shape. Not detached here: pass teacher outputs computed
            under ``no_grad``.
        temperature: ``tau > 0``.

    Returns:
        Scalar float32 tensor (bf16/fp16 inputs are cast up; float64 stays float64), in nats.
        Computed in that dtype also under ``torch.autocast`` (disabled inside).
    """
    _check_logits(student_logits, teacher_logits)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    with autocast_disabled(student_logits, teacher_logits):
        s = _at_least_float32(student_logits).flatten(0, -2)
        t = _at_least_float32(teacher_logits).flatten(0, -2)
        log_p_s = F.log_softmax(s / temperature, dim=-1)
        log_p_t = F.log_softmax(t / temperature, dim=-1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)
        return kl.mean() * temperature**2


def hard_distillation_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """DeiT hard distillation: cross-entropy against the teacher's argmax class.

    Args:
        student_logits: ``[B, C]`` (or ``[..., C]``) raw scores.
        teacher_logits: same shape; only its argmax is used (no gradient flows to it).

    Returns:
        Scalar float32 tensor (float64 for float64 logits, also under ``torch.autocast``):
        cross-entropy in nats, averaged over the leading dimensions.
    """
    _check_logits(student_logits, teacher_logits)
    with autocast_disabled(student_logits):
        s = _at_least_float32(student_logits).flatten(0, -2)
        target = teacher_logits.detach().flatten(0, -2).argmax(dim=-1)
        return F.cross_entropy(s, target)


def _at_least_float32(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()
