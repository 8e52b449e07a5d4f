"""Layer-by-layer CKA between the student and its teacher, drawn as a heatmap."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from typing_extensions import override

from kdbias.analytics.cka_matrix import MinibatchCKA, diagonal_alignment
from kdbias.callbacks.base import AnalyticsCallback, eval_mode, teacher_modules
from kdbias.models import block_outputs, check_block_indices, num_blocks

__all__ = ["CKAHeatmapCallback", "HEATMAP_DIR", "plot_cka_heatmap"]

HEATMAP_DIR = Path("analytics") / "cka_heatmaps"


def plot_cka_heatmap(matrix, student_blocks: Sequence[int], teacher_blocks: Sequence[int], title: str = ""):
    """Seaborn heatmap of a ``[student, teacher]`` CKA matrix; returns a matplotlib ``Figure``.

    Rows: student blocks (first at the bottom, so the depth diagonal rises to the right);
    columns: teacher blocks. Colour scale fixed to [0, 1] so epochs and runs compare.
    The figure is drawn on an Agg canvas without pyplot: no GUI backend, no global figure
    registry (nothing to leak, nothing switched in a notebook); it is freed with its last
    reference.
    """
    import seaborn as sns
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = torch.as_tensor(matrix).detach().double().cpu().numpy()
    rows, cols = len(student_blocks), len(teacher_blocks)
    fig = Figure(figsize=(2.5 + 0.45 * cols, 1.6 + 0.4 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sns.heatmap(
        m[::-1], ax=ax, vmin=0.0, vmax=1.0, cmap="magma", square=False,
        annot=rows * cols <= 400, fmt=".2f", annot_kws={"fontsize": 6},
        xticklabels=list(teacher_blocks), yticklabels=list(student_blocks)[::-1],
        cbar_kws={"label": "linear CKA"},
    )
    ax.set_xlabel("teacher block")
    ax.set_ylabel("student block")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


class CKAHeatmapCallback(AnalyticsCallback):
    """Minibatch CKA of every student block against every teacher block, with a heatmap.

    Needs a :class:`~kdbias.modules.distill_base.DistillationModule`. Features: student
    blocks ``student_blocks`` (all when ``None``) of ``pl_module.model`` on
    ``pl_module.student_input(x)``; teacher blocks ``teacher_blocks`` (all when ``None``:
    every residual block of a CNN teacher, every block of DINOv2) of
    ``pl_module.teacher_network`` on ``pl_module.teacher_input(x)``, under inference mode,
    everything in eval mode (flags restored). Images: ``num_batches * batch_size`` fixed
    validation images (seeded subset); the unbiased-HSIC sums are accumulated over
    ``num_batches`` equal batches (:class:`~kdbias.analytics.cka_matrix.MinibatchCKA`), the
    remainder dropped (fewer batches when the split is smaller).

    Outputs per measurement (global rank 0): ``<log_dir>/analytics/cka_heatmaps/epoch_<e>.png``
    (and ``epoch_<e>.json`` with the matrix and block indices); the figure under the
    TensorBoard tag ``cka/heatmap``; scalars ``cka/diag_alignment`` (mean CKA along the
    relative-depth diagonal, see :func:`~kdbias.analytics.cka_matrix.diagonal_alignment`)
    and ``cka/diag_contrast`` (that minus the mean off-diagonal CKA).
    ``summary_items()``: ``cka_diag_alignment``, ``cka_diag_contrast``, ``cka_heatmap``
    (the latest PNG, relative to the run directory).
    """

    def __init__(
        self,
        every_n_epochs: int = 50,
        num_batches: int = 8,
        batch_size: int = 256,
        teacher_blocks: Sequence[int] | None = None,
        student_blocks: Sequence[int] | None = None,
        subset_seed: int = 0,
    ) -> None:
        super().__init__(every_n_epochs, subset_seed)
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        if batch_size < 4:
            raise ValueError(f"batch_size must be >= 4 for the unbiased HSIC, got {batch_size}")
        self.num_batches, self.batch_size = int(num_batches), int(batch_size)
        self.teacher_blocks = None if teacher_blocks is None else [int(i) for i in teacher_blocks]
        self.student_blocks = None if student_blocks is None else [int(i) for i in student_blocks]
        self.subsets = {"val": ("val", self.num_batches * self.batch_size)}

    def _key_items(self) -> dict[str, Any]:
        return {"teacher_blocks": self.teacher_blocks, "student_blocks": self.student_blocks}

    @override
    def check_module(self, pl_module: L.LightningModule) -> None:
        from kdbias.modules.distill_base import DistillationModule

        if not isinstance(pl_module, DistillationModule):
            raise TypeError(
                f"CKAHeatmapCallback compares a student with its teacher and needs a DistillationModule "
                f"(KLDistillModule, CKADistillModule), got {type(pl_module).__name__}. Drop it for runs "
                "without a teacher."
            )
        s_blocks, t_blocks = self.blocks(pl_module)
        if len(s_blocks) < 2 or len(t_blocks) < 2:
            raise ValueError(
                f"the diagonal alignment needs at least 2 student and 2 teacher blocks, got {s_blocks} and {t_blocks}"
            )

    def blocks(self, pl_module: L.LightningModule) -> tuple[list[int], list[int]]:
        """Checked ``(student_blocks, teacher_blocks)`` for this module."""
        student, teacher = pl_module.model, pl_module.teacher_network
        s = list(range(num_blocks(student))) if self.student_blocks is None else self.student_blocks
        t = list(range(num_blocks(teacher))) if self.teacher_blocks is None else self.teacher_blocks
        return check_block_indices(student, s), check_block_indices(teacher, t)

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero:
            n = len(self.subset("val")[1])
            if n < self.batch_size:
                raise ValueError(
                    f"CKAHeatmapCallback needs at least one batch of {self.batch_size} validation images, the "
                    f"validation split has {n}; lower batch_size."
                )

    @torch.no_grad()
    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        """``[len(student_blocks), len(teacher_blocks)]`` float64 CKA matrix (CPU)."""
        s_blocks, t_blocks = self.blocks(pl_module)
        acc = MinibatchCKA(len(s_blocks), len(t_blocks))
        n = len(self.subset("val")[1])
        usable = min(self.num_batches, n // self.batch_size) * self.batch_size
        with eval_mode(pl_module, *teacher_modules(pl_module)), trainer.precision_plugin.forward_context():
            for start, (images, _) in zip(
                range(0, usable, self.batch_size), self.chunks("val", self.batch_size, pl_module.device)
            ):
                student = block_outputs(pl_module.model, pl_module.student_input(images), s_blocks)
                with torch.inference_mode():
                    teacher = block_outputs(pl_module.teacher_network, pl_module.teacher_input(images), t_blocks)
                acc.update(student, teacher)
        return acc.compute().cpu()

    @override
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        matrix = self.compute(trainer, pl_module)
        s_blocks, t_blocks = self.blocks(pl_module)
        align = diagonal_alignment(matrix)
        epoch = trainer.current_epoch
        rel = HEATMAP_DIR / f"epoch_{epoch}.png"
        teacher_name = type(pl_module.teacher_network).__name__
        fig = plot_cka_heatmap(
            matrix, s_blocks, t_blocks,
            title=f"student vs {teacher_name}, epoch {epoch}: diag {align['diag']:.3f}, contrast {align['contrast']:.3f}",
        )
        if self.log_dir is not None:
            path = Path(self.log_dir) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path)
            path.with_suffix(".json").write_text(json.dumps({
                "epoch": epoch, "global_step": trainer.global_step, "student_blocks": s_blocks,
                "teacher_blocks": t_blocks, "cka": matrix.tolist(), **align,
            }) + "\n")
        for logger in self.tensorboard_loggers(trainer):
            logger.experiment.add_figure("cka/heatmap", fig, global_step=trainer.global_step, close=False)
        fig.clear()
        self.last = {
            "cka_diag_alignment": align["diag"],
            "cka_diag_contrast": align["contrast"],
            "cka_heatmap": rel.as_posix() if self.log_dir is not None else None,
        }
        return {"cka/diag_alignment": align["diag"], "cka/diag_contrast": align["contrast"]}

    @override
    def summary_items(self) -> dict[str, Any]:
        return {k: self.last.get(k) for k in ("cka_diag_alignment", "cka_diag_contrast", "cka_heatmap")}
