"""Hessian trace and top eigenvalue of the student's training loss (loss-landscape sharpness)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from typing_extensions import override

from kdbias.analytics.hessian import TraceEstimate, hessian_trace_estimate
from kdbias.analytics.lanczos import CertifiedEigenvalue, hessian_top_eigenvalue_certified
from kdbias.callbacks.base import AnalyticsCallback, eval_mode
from kdbias.models import unwrap_model

__all__ = ["HessianCallback", "student_ce_loss_fn"]


def _eager(model: nn.Module) -> nn.Module:
    """The module under a ``torch.compile`` wrapper: compiled graphs have no double backward."""
    return unwrap_model(model)


def student_ce_loss_fn(pl_module: L.LightningModule, images: Tensor, labels: Tensor, batch_size: int):
    """Zero-argument loss: mean CE of the student over all ``images`` (uint8 or normalised float).

    ``images`` must already be dataset-normalised floats; they are sent to the module's
    device ``batch_size`` at a time and the per-chunk CE sums are added, so the loss is the
    mean over the whole subset. The student runs eagerly (``model.forward``, bypassing
    ``torch.compile``), in float32 with autocast off.
    """
    model = _eager(pl_module.model)
    device = pl_module.device

    def loss_fn() -> Tensor:
        total = None
        with torch.autocast(device.type, enabled=False):
            for start in range(0, len(labels), batch_size):
                x = images[start : start + batch_size].to(device).float()
                y = labels[start : start + batch_size].to(device)
                logits = model.forward(pl_module.student_input(x))
                part = F.cross_entropy(logits.float(), y, reduction="sum")
                total = part if total is None else total + part
        return total / len(labels)

    return loss_fn


class HessianCallback(AnalyticsCallback):
    """Hutchinson trace and Lanczos top eigenvalue of the student's CE Hessian.

    Loss: mean cross-entropy of the student (``pl_module.model``) over ``num_images``
    fixed, unaugmented training images (seeded subset), summed over chunks of
    ``batch_size`` inside the loss, in float32 with autocast disabled and the whole module
    in eval mode (no dropout or drop-path; BatchNorm uses running statistics); train/eval
    flags are restored afterwards. Parameters: every parameter of ``pl_module.model`` that
    requires grad. Attention runs through PyTorch's math SDPA kernel, the one with a double
    backward. Gradients are re-enabled locally (Lightning's validation runs under inference
    mode); parameter ``.grad`` is never touched.

    Measures every ``every_n_epochs`` epochs (see :mod:`kdbias.callbacks.base`) and always
    once more at the end of training (``on_train_end``, with the model still on its
    device), unless the last measurement was at the same global step.

    Trace: exactly ``max_iter`` Rademacher probes (no early stop, ``tol=0``), so its standard
    error and the 95 % interval ``trace ± t(0.975, max_iter - 1) · stderr`` are those of a
    fixed sample. Top eigenvalue: :func:`~kdbias.analytics.lanczos.hessian_top_eigenvalue_certified`:
    Lanczos from ``eig_starts`` independent random starts (default: the function's, 2), each with
    at most ``eig_max_iter`` steps (default: ``max_iter``) and stopped when both the Ritz value's
    relative change and the relative residual are below ``tol``; the value is the largest Ritz
    value, and ``hessian_top_eig_converged`` is true only when every start converged and the
    starts agree (relative spread within the function's ``agree_tol``, 1 %): a certificate about
    the *top* eigenvalue, not merely some eigenvalue.

    Logs ``hessian/trace``, ``hessian/trace_stderr`` (Hutchinson standard error over the
    probes), ``hessian/top_eig``, ``hessian/top_eig_residual`` (relative residual
    ``||Hv - θv|| / |θ|`` of the Ritz pair), ``hessian/top_eig_spread`` (relative spread over the
    starts) and ``hessian/top_eig_converged`` (1 certified, 0 not); ``summary_items()``:
    ``hessian_trace``, ``hessian_trace_stderr``, ``hessian_trace_probes``, ``hessian_trace_t``
    (the t quantile of the interval), ``hessian_top_eig``, ``hessian_top_eig_residual``,
    ``hessian_top_eig_spread``, ``hessian_top_eig_starts``, ``hessian_top_eig_iterations``
    (Hessian-vector products over all starts), ``hessian_top_eig_converged`` (latest values).

    Memory: the graph of the loss over all ``num_images`` is held for the double
    backward; lower ``num_images`` if it does not fit.
    """

    def __init__(
        self,
        every_n_epochs: int = 100,
        num_images: int = 512,
        batch_size: int = 256,
        max_iter: int = 50,
        tol: float = 1e-3,
        seed: int = 0,
        subset_seed: int = 0,
        eig_max_iter: int | None = None,
        eig_starts: int | None = None,
    ) -> None:
        super().__init__(every_n_epochs, subset_seed)
        eig_max_iter = max_iter if eig_max_iter is None else eig_max_iter
        if num_images < 1 or batch_size < 1 or max_iter < 2 or eig_max_iter < 2:
            raise ValueError(
                "num_images and batch_size must be >= 1, max_iter (probes) and eig_max_iter >= 2, got "
                f"{num_images}, {batch_size}, {max_iter}, {eig_max_iter}"
            )
        if tol < 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        if eig_starts is not None and eig_starts < 2:
            raise ValueError(
                f"eig_starts must be >= 2 (independent starts certify the top eigenvalue), got {eig_starts}"
            )
        self.num_images, self.batch_size = int(num_images), int(batch_size)
        self.max_iter, self.tol, self.seed = int(max_iter), float(tol), int(seed)
        self.eig_max_iter = int(eig_max_iter)
        self.eig_starts = None if eig_starts is None else int(eig_starts)
        self.subsets = {"train": ("train", self.num_images)}

    def _key_items(self) -> dict[str, Any]:
        return {"num_images": self.num_images, "seed": self.seed}

    @override
    def check_module(self, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        if not isinstance(model, nn.Module) or not any(p.requires_grad for p in model.parameters()):
            raise TypeError(
                "HessianCallback differentiates the student at pl_module.model, which is missing or has "
                "no parameter that requires grad; use it with a kdbias ClassifierModule subclass."
            )

    def loss_fn(self, pl_module: L.LightningModule):
        """The measured loss as a zero-argument callable (see :func:`student_ce_loss_fn`)."""
        images, labels = self.subset("train")
        return student_ce_loss_fn(pl_module, self._normalize(images), labels, self.batch_size)

    def params(self, pl_module: L.LightningModule) -> list[Tensor]:
        return [p for p in pl_module.model.parameters() if p.requires_grad]

    def compute(self, pl_module: L.LightningModule) -> tuple[TraceEstimate, CertifiedEigenvalue]:
        """Trace (``max_iter`` probes) and certified top-eigenvalue (Lanczos) estimates at the current weights."""
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            eval_mode(pl_module),
            sdpa_kernel(SDPBackend.MATH),
        ):
            loss_fn, params = self.loss_fn(pl_module), self.params(pl_module)
            trace = hessian_trace_estimate(loss_fn, params, max_iter=self.max_iter, tol=0.0, seed=self.seed)
            starts = {} if self.eig_starts is None else {"starts": self.eig_starts}
            top = hessian_top_eigenvalue_certified(
                loss_fn, params, max_iter=self.eig_max_iter, tol=self.tol, seed=self.seed, **starts
            )
        return trace, top

    @override
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        trace, top = self.compute(pl_module)
        self.last = {
            "hessian_trace": trace.trace,
            "hessian_trace_stderr": trace.stderr,
            "hessian_trace_probes": trace.num_probes,
            "hessian_trace_t": float(scipy_stats.t.ppf(0.975, trace.num_probes - 1)),
            "hessian_top_eig": top.eigenvalue,
            "hessian_top_eig_residual": top.residual,
            "hessian_top_eig_spread": top.spread,
            "hessian_top_eig_starts": len(top.starts),
            "hessian_top_eig_iterations": top.num_iterations,
            "hessian_top_eig_converged": top.converged,
        }
        return {
            "hessian/trace": trace.trace,
            "hessian/trace_stderr": trace.stderr,
            "hessian/top_eig": top.eigenvalue,
            "hessian/top_eig_residual": top.residual,
            "hessian/top_eig_spread": top.spread,
            "hessian/top_eig_converged": float(top.converged),
        }

    @override
    def measurements_left(self, trainer: L.Trainer) -> int:
        # plus the measurement at the end of training when the last epoch is not due
        last_due = bool(trainer.max_epochs) and trainer.max_epochs % self.every_n_epochs == 0
        return super().measurements_left(trainer) + (0 if last_due else 1)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The final weights, measured once even if the last epoch was not due.
        if self.measured_step != trainer.global_step:
            self.run_measurement(trainer, pl_module)

    @override
    def summary_items(self) -> dict[str, Any]:
        keys = (
            "hessian_trace",
            "hessian_trace_stderr",
            "hessian_trace_probes",
            "hessian_trace_t",
            "hessian_top_eig",
            "hessian_top_eig_residual",
            "hessian_top_eig_spread",
            "hessian_top_eig_starts",
            "hessian_top_eig_iterations",
            "hessian_top_eig_converged",
        )
        return {key: self.last.get(key) for key in keys}
