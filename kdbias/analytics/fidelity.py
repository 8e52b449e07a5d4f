"""Fidelity of a student to its teacher (Stanton et al. 2021): top-1 agreement and predictive KL.

Both are pure functions of the two networks' logits on the same images; fidelity is not
generalisation: a student can agree with its teacher and be wrong with it.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fidelity", "per_image_fidelity", "predictive_kl", "top1_agreement"]


def _check(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student and teacher logits must both be [N, C] with equal shapes, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape[0] == 0:
        raise ValueError("fidelity needs at least one image, got N=0")


def per_image_fidelity(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Per image of ``[N, C]`` logits: whether the arg-max classes agree (bool ``[N]``; ties
    broken by ``torch.argmax``: the first maximal class), and ``KL(p_teacher || p_student)`` in
    nats at temperature ``tau`` (softmax of logits / tau, summed over the ``C`` classes; float64
    ``[N]``, >= 0)."""
    _check(student_logits, teacher_logits)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    agree = student_logits.argmax(-1) == teacher_logits.argmax(-1)
    log_p = torch.log_softmax(teacher_logits.double() / temperature, dim=-1)
    log_q = torch.log_softmax(student_logits.double() / temperature, dim=-1)
    return agree, (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0)


def top1_agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Mean over the ``N`` images of :func:`per_image_fidelity`'s agreement: a fraction in [0, 1]."""
    return float(per_image_fidelity(student_logits, teacher_logits)[0].double().mean())


def predictive_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> float:
    """Mean over the ``N`` images of :func:`per_image_fidelity`'s ``KL(p_teacher || p_student)``
    at temperature ``tau``: nats, >= 0."""
    return float(per_image_fidelity(student_logits, teacher_logits, temperature)[1].mean())


def fidelity(student_logits: Tensor, teacher_logits: Tensor) -> dict[str, float]:
    """``{"agreement": top1_agreement, "kl": predictive_kl at tau = 1}`` of ``[N, C]`` logits."""
    agree, kl = per_image_fidelity(student_logits, teacher_logits)
    return {"agreement": float(agree.double().mean()), "kl": float(kl.mean())}
