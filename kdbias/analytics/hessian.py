"""Loss-curvature statistics from Hessian-vector products (after PyHessian, Yao et al. 2020).

``hessian_trace`` (Hutchinson) and ``hessian_top_eigenvalue`` (power iteration)
never form the Hessian: each step is one double-backward product ``H v``.
The loss graph and its gradient graph are built once per call and reused for
every probe, so ``loss_fn`` runs exactly once per call.

``hessian_trace_estimate`` and ``hessian_top_eigenvalue_estimate`` run the same
loops and also return the uncertainty: the standard error of the Hutchinson
mean and the relative residual ``||H v - lambda v|| / |lambda|`` of the power
iteration. The float-returning functions are their ``.trace`` / ``.eigenvalue``.

Inference mode: all four functions (and ``hessian_vector_product``) may be called
inside ``torch.inference_mode()`` or ``torch.no_grad()`` -- Lightning runs
validation hooks under inference mode -- because they re-enable autograd
locally. What they cannot undo is a tensor *created* under inference mode:
such "inference tensors" cannot take part in a backward graph. Parameters of a
normally built ``nn.Module`` are fine; input batches produced under inference
mode (e.g. in ``validation_step``) must be copied first with
``clone_for_autograd``.

None of them touches ``.grad`` of the parameters (``torch.autograd.grad``
is used, never ``backward``) or module train/eval modes (callers set them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "EigenEstimate",
    "TraceEstimate",
    "clone_for_autograd",
    "hessian_top_eigenvalue",
    "hessian_top_eigenvalue_estimate",
    "hessian_trace",
    "hessian_trace_estimate",
    "hessian_vector_product",
]

LossFn = Callable[[], Tensor]


@contextmanager
def _autograd_enabled() -> Iterator[None]:
    with torch.inference_mode(False), torch.enable_grad():
        yield


def clone_for_autograd(*tensors: Tensor) -> Tensor | tuple[Tensor, ...]:
    """Copies of ``tensors`` that autograd accepts, even if made under inference mode.

    Returns one tensor for one argument, else a tuple, in the argument order.
    """
    with torch.inference_mode(False):
        out = tuple(t.clone() for t in tensors)
    return out[0] if len(out) == 1 else out


def _check_params(params: Iterable[Tensor], max_iter: int = 1) -> list[Tensor]:
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    params = list(params)
    if not params:
        raise ValueError("params is empty; pass the list of tensors to differentiate")
    for i, p in enumerate(params):
        if not p.requires_grad:
            raise ValueError(f"params[{i}] does not require grad; pass only trainable tensors")
        if p.is_inference():
            raise ValueError(
                f"params[{i}] was created under torch.inference_mode and cannot be "
                "differentiated; build the model outside inference mode"
            )
    return params


def _gradients(loss_fn: LossFn, params: list[Tensor]) -> tuple[Tensor | None, ...]:
    """First-order gradients with their graph kept for double backward (autograd on)."""
    try:
        loss = loss_fn()
    except RuntimeError as err:
        if "Inference tensors" not in str(err):
            raise
        raise RuntimeError(
            "loss_fn uses a tensor created under torch.inference_mode; copy its inputs "
            "with kdbias.analytics.hessian.clone_for_autograd(...) before building loss_fn"
        ) from err
    if loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
    if not loss.requires_grad:
        raise ValueError(
            "loss_fn returned a tensor without a graph; it must compute the loss "
            "from params (and from inputs not created under inference mode)"
        )
    return torch.autograd.grad(loss.reshape(()), params, create_graph=True, allow_unused=True)


def _hvp(grads: Sequence[Tensor | None], params: list[Tensor], vs: Sequence[Tensor]) -> list[Tensor]:
    """``H v`` from precomputed ``grads``; the graph is retained for the next probe."""
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if not live:  # loss at most linear in params: H = 0
        return [torch.zeros_like(p) for p in params]
    hv = torch.autograd.grad(
        [grads[i] for i in live],
        params,
        grad_outputs=[vs[i] for i in live],
        retain_graph=True,
        allow_unused=True,
    )
    return [torch.zeros_like(p) if h is None else h for p, h in zip(params, hv)]


def _dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    """Sum over all tensors of ``<x, y>`` in at least float32 (0-dim tensor)."""
    return sum(
        (x * y).sum(dtype=torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32))
        for x, y in zip(xs, ys)
    )


def _converged(prev: float, cur: float, tol: float) -> bool:
    return abs(cur - prev) / (abs(prev) + 1e-6) < tol


def hessian_vector_product(loss_fn: LossFn, params: Iterable[Tensor], vs: Sequence[Tensor]) -> list[Tensor]:
    """One Hessian-vector product ``H v`` of ``loss_fn()`` w.r.t. ``params``.

    Args:
        loss_fn: zero-argument callable returning the scalar loss.
        params: tensors requiring grad (e.g. ``list(model.parameters())``).
        vs: one tensor per param, same shapes.

    Returns:
        list of tensors shaped like ``params``. Params the loss does not depend on
        (or depends on only linearly) get zeros.
    """
    params = _check_params(params)
    if len(vs) != len(params):
        raise ValueError(f"got {len(vs)} vectors for {len(params)} params; pass one per param")
    with _autograd_enabled():
        grads = _gradients(loss_fn, params)
        return [h.detach() for h in _hvp(grads, params, vs)]


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate of ``tr(H)`` with its Monte Carlo standard error.

    Attributes:
        trace: mean of the per-probe values ``z^T H z`` (units of the loss per
            parameter squared, summed over all parameters).
        stderr: sample standard deviation (``ddof=1``) of the per-probe values
            divided by ``sqrt(num_probes)``, same units as ``trace``; ``nan`` for one probe.
        num_probes: number of Rademacher probes (= Hessian-vector products) used.
    """

    trace: float
    stderr: float
    num_probes: int


@dataclass(frozen=True)
class EigenEstimate:
    """Power-iteration estimate of the dominant Hessian eigenvalue with a certificate.

    Attributes:
        eigenvalue: Rayleigh quotient ``lambda = v^T H v`` of the final unit vector ``v``.
        residual: relative residual ``||H v - lambda v|| / |lambda|`` (dimensionless;
            ``0.0`` when ``H v = lambda v`` exactly, ``inf`` when ``lambda = 0`` but
            ``H v != 0``). Because ``H`` is symmetric, some eigenvalue of ``H`` lies
            within ``residual * |lambda|`` of ``eigenvalue``.
        num_iterations: number of power-iteration steps (= Hessian-vector products).
    """

    eigenvalue: float
    residual: float
    num_iterations: int


def hessian_trace_estimate(
    loss_fn: LossFn, params: Iterable[Tensor], max_iter: int = 100, tol: float = 1e-3, seed: int = 0
) -> TraceEstimate:
    """Hutchinson estimate of ``tr(H)`` over Rademacher probes ``z``, with its standard error.

    Each probe gives ``z^T H z`` (an unbiased estimate of ``tr(H)``, all
    parameters flattened and concatenated in ``params`` order). Probes come from
    a ``torch.Generator`` on the params' device seeded with ``seed``, one
    ``randint`` draw per param in ``params`` order. Stopping rule (PyHessian):
    after probe ``t >= 2``, stop when the running mean changed by a relative
    ``|m_t - m_{t-1}| / (|m_{t-1}| + 1e-6) < tol``; otherwise stop after
    ``max_iter`` probes. ``tol=0`` always runs ``max_iter``.

    The standard error assumes independent probes (true) and a fixed number of
    them: with ``tol > 0`` the count depends on the values and can be as small
    as 2, where ``stderr`` is itself very noisy. For error bars pass ``tol=0``
    and a fixed ``max_iter`` (tens of probes or more).

    Returns:
        :class:`TraceEstimate` with ``trace`` (mean of the per-probe values),
        ``stderr`` (``std(values, ddof=1) / sqrt(num_probes)``, ``nan`` for one
        probe) and ``num_probes``.
    """
    params = _check_params(params, max_iter)
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    values: list[float] = []
    total, mean = 0.0, float("nan")
    with _autograd_enabled():
        grads = _gradients(loss_fn, params)
        for t in range(1, max_iter + 1):
            zs = [torch.randint(0, 2, p.shape, generator=gen, device=p.device).to(p.dtype) * 2 - 1 for p in params]
            value = _dot(_hvp(grads, params, zs), zs).item()
            values.append(value)
            total += value
            prev, mean = mean, total / t
            if t >= 2 and _converged(prev, mean, tol):
                break
    n = len(values)
    stderr = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")
    return TraceEstimate(trace=mean, stderr=stderr, num_probes=n)


def hessian_trace(
    loss_fn: LossFn, params: Iterable[Tensor], max_iter: int = 100, tol: float = 1e-3, seed: int = 0
) -> float:
    """Hutchinson estimate of ``tr(H)``: the mean of ``z^T H z`` over Rademacher probes ``z``.

    ``hessian_trace_estimate(...).trace``; see :func:`hessian_trace_estimate` for
    the probes, the stopping rule and the standard error.

    Returns:
        the running mean at stopping, a python float (units of the loss per
        parameter squared, summed over all parameters).
    """
    return hessian_trace_estimate(loss_fn, params, max_iter, tol, seed).trace


def hessian_top_eigenvalue_estimate(
    loss_fn: LossFn, params: Iterable[Tensor], max_iter: int = 100, tol: float = 1e-3, seed: int = 0
) -> EigenEstimate:
    """Dominant Hessian eigenvalue by power iteration, with a residual certificate.

    Starts from a Gaussian vector (``torch.Generator`` on the params' device
    seeded with ``seed``, one ``randn`` draw per param in ``params`` order),
    normalised over all params jointly. Step ``t`` computes ``H v_t``, the
    Rayleigh quotient ``lambda_t = v_t^T H v_t`` and, unless it stops,
    ``v_{t+1} = H v_t / ||H v_t||``. Stopping rule as in
    :func:`hessian_trace_estimate`, applied to successive ``lambda_t`` (PyHessian).

    Power iteration converges to the eigenvalue of largest *magnitude*; near a
    minimum H is close to PSD and that is the largest eigenvalue. Convergence
    speed depends on the gap to the second eigenvalue; lower ``tol`` for
    near-degenerate spectra.

    The residual ``r = H v - lambda v`` of the final unit vector ``v = v_t``
    reuses the last product ``H v_t`` (no extra Hessian-vector product). For a
    symmetric ``H``, some eigenvalue ``mu`` satisfies ``|mu - lambda| <= ||r||``,
    i.e. ``|mu - lambda| <= residual * |lambda|``. This certifies that
    ``lambda`` is close to *an* eigenvalue, not that it is the largest one (a
    start nearly orthogonal to the top eigenvector can converge elsewhere).
    The residual cannot go below about the machine epsilon of the params' dtype
    (at least float32) times ``||H v|| / |lambda|``.

    Returns:
        :class:`EigenEstimate` with ``eigenvalue`` (the last Rayleigh quotient),
        ``residual`` (``||H v - lambda v|| / |lambda|``) and ``num_iterations``.
    """
    params = _check_params(params, max_iter)
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    eig = float("nan")
    with _autograd_enabled():
        vs = [torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) for p in params]
        norm = _dot(vs, vs).sqrt()
        vs = [v / norm.to(v.dtype) for v in vs]
        grads = _gradients(loss_fn, params)
        for t in range(1, max_iter + 1):
            hvs = [h.detach() for h in _hvp(grads, params, vs)]
            rayleigh = _dot(hvs, vs)
            prev, eig = eig, rayleigh.item()
            if t == max_iter or (t >= 2 and _converged(prev, eig, tol)):
                break
            norm = _dot(hvs, hvs).sqrt().clamp_min(1e-30)
            vs = [h / norm.to(h.dtype) for h in hvs]
        dt = rayleigh.dtype
        res = [h.to(dt) - rayleigh * v.to(dt) for h, v in zip(hvs, vs)]
        abs_residual = _dot(res, res).sqrt().item()
    if abs_residual == 0.0:
        residual = 0.0
    elif eig == 0.0:
        residual = math.inf
    else:
        residual = abs_residual / abs(eig)
    return EigenEstimate(eigenvalue=eig, residual=residual, num_iterations=t)


def hessian_top_eigenvalue(
    loss_fn: LossFn, params: Iterable[Tensor], max_iter: int = 100, tol: float = 1e-3, seed: int = 0
) -> float:
    """Dominant Hessian eigenvalue by power iteration.

    ``hessian_top_eigenvalue_estimate(...).eigenvalue``; see
    :func:`hessian_top_eigenvalue_estimate` for the start vector, the stopping
    rule and the residual certificate.

    Returns:
        the last Rayleigh quotient, a python float.
    """
    return hessian_top_eigenvalue_estimate(loss_fn, params, max_iter, tol, seed).eigenvalue
