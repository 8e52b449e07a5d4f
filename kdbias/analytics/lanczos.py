"""Top Hessian eigenvalue by the Lanczos iteration, with a convergence criterion that is
about the top eigenvalue (Ritz value settled *and* residual small).

Power iteration converges at the rate ``|λ_2 / λ_1|`` per step and its residual only says
that *an* eigenvalue lies near the estimate; Lanczos builds the Krylov space of the same
Hessian-vector products and its largest Ritz value approaches ``λ_max`` far faster (the
Kaniel–Paige bounds). Each step is one double-backward product ``H q``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kdbias.analytics.hessian import LossFn, _autograd_enabled, _check_params, _dot, _gradients, _hvp

__all__ = ["LanczosEstimate", "hessian_top_eigenvalue_lanczos"]


@dataclass(frozen=True)
class LanczosEstimate:
    """Largest Hessian eigenvalue from Lanczos with full reorthogonalisation.

    Attributes:
        eigenvalue: the largest Ritz value ``θ`` of the tridiagonal matrix ``T_k``
            (units of the loss per parameter squared).
        residual: ``||H y - θ y|| / |θ| = β_k |s_k| / |θ|`` for the Ritz vector ``y = Q s``
            (dimensionless; some eigenvalue of ``H`` lies within ``residual · |θ|`` of ``θ``;
            ``0.0`` when the Krylov space became invariant).
        num_iterations: Lanczos steps (= Hessian-vector products).
        converged: the stopping rule was met (not merely ``max_iter`` reached).
    """

    eigenvalue: float
    residual: float
    num_iterations: int
    converged: bool


def _flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1).to(torch.float64 if t.dtype == torch.float64 else torch.float32) for t in tensors])


def _split(flat: Tensor, params: list[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for p in params:
        out.append(flat[start : start + p.numel()].reshape(p.shape).to(p.dtype))
        start += p.numel()
    return out


def hessian_top_eigenvalue_lanczos(
    loss_fn: LossFn, params: Iterable[Tensor], max_iter: int = 50, tol: float = 1e-3, seed: int = 0
) -> LanczosEstimate:
    """Largest eigenvalue of the Hessian of ``loss_fn()`` w.r.t. ``params`` by Lanczos.

    Start: a Gaussian vector (``torch.Generator`` on the params' device seeded with
    ``seed``, one ``randn`` per param in order), normalised jointly. Step ``k`` computes
    ``w = H q_k``, ``α_k = q_kᵀ w``, removes the components along every earlier ``q``
    (full reorthogonalisation, twice), ``β_k = ||w||``, and the largest eigenpair
    ``(θ, s)`` of the ``k × k`` tridiagonal ``T_k``. Stops after step ``k >= 2`` when
    ``|θ_k - θ_{k-1}| <= tol · |θ_k|`` **and** ``β_k |s_k| <= tol · |θ_k|`` (Ritz value
    settled and residual small), when ``β_k`` vanishes (an invariant subspace: exact), or
    after ``max_iter`` steps (``converged=False``). The Krylov basis is kept: memory is
    ``num_iterations`` vectors of the parameter count (float32, or float64 for float64 params).
    """
    params = _check_params(params, max_iter)
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    with _autograd_enabled():
        start = [torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) for p in params]
        q = _flat(start)
        q = q / q.norm()
        basis: list[Tensor] = []
        alphas: list[float] = []
        betas: list[float] = []
        grads = _gradients(loss_fn, params)
        theta_prev, theta, residual, converged = float("nan"), float("nan"), float("inf"), False
        for k in range(1, max_iter + 1):
            basis.append(q)
            w = _flat([h.detach() for h in _hvp(grads, params, _split(q, params))])
            alphas.append(float(_dot([w], [q])))
            for _ in range(2):  # full reorthogonalisation
                stack = torch.stack(basis)
                w = w - stack.T @ (stack @ w)
            beta = float(w.norm())
            t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
            values, vectors = np.linalg.eigh(t)
            theta_prev, theta = theta, float(values[-1])
            scale = max(abs(theta), 1e-30)
            residual = beta * abs(float(vectors[-1, -1])) / scale
            if beta <= 1e-12 * scale:  # invariant subspace: the Ritz values are eigenvalues
                residual, converged = 0.0, True
                break
            if k >= 2 and abs(theta - theta_prev) <= tol * scale and residual <= tol:
                converged = True
                break
            betas.append(beta)
            q = w / beta
    if theta == 0.0 and residual == 0.0:
        residual = 0.0
    return LanczosEstimate(eigenvalue=theta, residual=residual, num_iterations=k, converged=converged)
