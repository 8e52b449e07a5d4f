"""Layer-by-layer CKA between the student and its teacher, drawn as a heatmap."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from typing_extensions import override

from kdbias import runs
from kdbias.analytics.cka_matrix import (
    MinibatchCKA,
    depth_matched_cells,
    diagonal_alignment,
    diagonal_contrast_split,
)
from kdbias.callbacks.base import AnalyticsCallback, eval_mode
from kdbias.models import block_outputs, check_block_indices, num_blocks
from kdbias.runs import atomic_write_json
from kdbias.teacher import FrozenTeacher

__all__ = ["CKAHeatmapCallback", "HEATMAP_DIR", "colour_scale", "plot_cka_heatmap"]

HEATMAP_DIR = Path(runs.HEATMAP_DIR)  # the run's own: :meth:`kdbias.runs.Run.heatmaps`


#: Largest grid whose cells carry their CKA value as text (beyond it the numbers are unreadable).
ANNOTATE_MAX_CELLS = 144


def colour_scale(values, scale: tuple[float, float] | None = None) -> tuple[float, float, int]:
    """``(vmin, vmax, decimals)`` of a heatmap: ``scale`` or the data's finite range, widened
    to 0.01 when the values are (nearly) equal; ``decimals`` (2 or more) separates values
    across the range in about ten steps, so cells on a narrow scale (0.96-1.00) still differ."""
    import numpy as np

    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if scale is not None:
        low, high = float(scale[0]), float(scale[1])
    elif finite.size:
        low, high = float(finite.min()), float(finite.max())
    else:
        low, high = 0.0, 1.0
    if high - low < 0.01:
        middle = (low + high) / 2
        low, high = middle - 0.005, middle + 0.005
    decimals = max(2, int(np.ceil(-np.log10((high - low) / 10))))
    return low, high, decimals


def plot_cka_heatmap(
    matrix,
    student_blocks: Sequence[int],
    teacher_blocks: Sequence[int],
    title: str = "",
    trained_cells: Sequence[Sequence[int]] = (),
    mark_diagonal: bool = True,
    source: str = "",
    scale: tuple[float, float] | None = None,
):
    """Seaborn heatmap of a ``[student, teacher]`` CKA matrix; returns a matplotlib ``Figure``.

    Rows: student blocks (first at the bottom, so the depth diagonal rises to the right);
    columns: teacher blocks. Colour scale: ``scale`` or the matrix's own range
    (:func:`colour_scale`; CKA of similar networks sits in a narrow band such as 0.96-1.00,
    which a fixed 0-1 scale would paint one colour), stated on the colour bar. Cells carry
    their value (8 pt, enough decimals to tell the scale's values apart) up to
    :data:`ANNOTATE_MAX_CELLS` cells, none beyond. Marked: the depth-matched cells
    (``mark_diagonal``; :func:`~kdbias.analytics.cka_matrix.depth_matched_cells`, dashed
    white-on-black outline) and ``trained_cells`` (cyan solid outline; ``(row, col)``
    positions in the matrix, e.g. the cells a CKA loss trains); a note under the axes says
    which is which. ``source``: a last title line saying where the numbers come from when they
    are not a result (e.g. "SMOKE: offline digits data, not CIFAR; teacher with random
    weights"). The figure is drawn on an Agg canvas without pyplot: no GUI backend, no global
    figure registry; it is freed with its last reference.
    """
    import seaborn as sns
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    m = torch.as_tensor(matrix).detach().double().cpu().numpy()
    rows, cols = len(student_blocks), len(teacher_blocks)
    annotate = rows * cols <= ANNOTATE_MAX_CELLS
    vmin, vmax, decimals = colour_scale(m, scale)
    cell = (0.5 + 0.08 * decimals) if annotate else 0.35
    fig = Figure(figsize=(3.4 + cell * cols, 2.6 + cell * rows), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    origin = "from this matrix" if scale is None else "shared"
    sns.heatmap(
        m[::-1],
        ax=ax,
        vmin=vmin,
        vmax=vmax,
        cmap="magma",
        square=False,
        annot=annotate,
        fmt=f".{decimals}f",
        annot_kws={"fontsize": 8},
        xticklabels=list(teacher_blocks),
        yticklabels=list(student_blocks)[::-1],
        cbar_kws={"label": f"linear CKA (colour scale {vmin:.{decimals}f} to {vmax:.{decimals}f}, {origin})"},
    )

    def outline(r: int, c: int, **style: Any) -> None:  # row r counted from the bottom
        ax.add_patch(Rectangle((c, rows - 1 - r), 1, 1, fill=False, **style))

    notes = []
    if mark_diagonal and rows >= 2 and cols >= 2:
        for r, c in depth_matched_cells(rows, cols):
            outline(r, c, edgecolor="black", linewidth=2.0)  # under the dashes: visible on light cells too
            outline(r, c, edgecolor="white", linewidth=1.2, linestyle="--")
        notes.append("dashed: depth-matched cells")
    for r, c in trained_cells:
        outline(int(r), int(c), edgecolor="cyan", linewidth=2.2)
    if len(trained_cells):
        notes.append("solid cyan: cells the loss trains")
    ax.set_xlabel("teacher block" + (f"\n({'; '.join(notes)})" if notes else ""))
    ax.set_ylabel("student block")
    heading = "\n".join(part for part in (title, source) if part)
    if heading:
        ax.set_title(heading, fontsize=10)
    return fig


def _source_mark(trainer: L.Trainer, pl_module: L.LightningModule, teacher: FrozenTeacher) -> str:
    """The heatmap title's warning line: the offline digits (smoke) data and / or a teacher with
    random weights; ``""`` for neither."""
    datamodule = getattr(trainer, "datamodule", None)
    dataset = getattr(datamodule, "dataset", None) or getattr(pl_module, "hparams", {}).get("dataset")
    marks = ["SMOKE: offline digits data, not CIFAR" if dataset == "digits" else ""]
    marks.append("teacher with random weights" if getattr(teacher, "source", None) == "random" else "")
    return "; ".join(m for m in marks if m)


class CKAHeatmapCallback(AnalyticsCallback):
    """Minibatch CKA of every student block against every block of a teacher, with a heatmap.

    The teacher is the module's own (``pl_module.teacher``, a
    :class:`~kdbias.teacher.FrozenTeacher`) or, for a control, any other ``FrozenTeacher``
    passed as ``teacher`` (measurement only: it takes no part in training; it is moved to
    the module's device when measured). Features: student blocks ``student_blocks`` (all
    when ``None``) of ``pl_module.model`` on ``pl_module.student_input(x)``; teacher blocks
    ``teacher_blocks`` (all when ``None``: every residual block of a CNN, every block of a
    ViT) under ``no_grad``, everything in eval mode (flags restored). Images:
    ``num_batches * batch_size`` fixed held-out images (seeded subset); the unbiased-HSIC
    sums are accumulated over equal batches
    (:class:`~kdbias.analytics.cka_matrix.MinibatchCKA`), the remainder dropped.

    Figures (see :mod:`kdbias.analytics.cka_matrix`): ``diag`` (mean CKA on the
    depth-matched diagonal, :func:`~kdbias.analytics.cka_matrix.depth_matched_cells` for
    teachers of other depth), ``off_diag`` and ``contrast`` = diag - off_diag; with
    ``trained_pairs`` (cells a CKA loss trains directly; default: the module's
    ``layer_pairs`` when measuring its own teacher) also ``trained`` (their mean) and
    ``untrained_contrast`` (depth-matched cells that are not trained, minus the off-diagonal
    cells that are not trained).

    Permutation floor: the same matrix with the teacher's images re-paired within each batch by
    a random cycle (no image paired with itself; :class:`~kdbias.analytics.cka_matrix.MinibatchCKA`
    with ``floor_seed``), i.e. the CKA these features read without pairing; every figure above
    has its floor ``floor_<figure>`` computed the same way on the floor matrix.

    Outputs per measurement (global rank 0), ``<key>`` naming the comparison (``key``):
    ``<log_dir>/analytics/cka_heatmaps/<key>/epoch_<e>.png`` (:meth:`kdbias.runs.Run.heatmap`) and
    ``.json`` (matrix ``cka``, floor matrix ``cka_floor``, blocks, figures and ``floor_<figure>``); TensorBoard image
    ``cka/<key>/heatmap`` and scalars ``cka/<key>/<figure>`` and ``cka/<key>/floor_<figure>``
    (and, for the module's own teacher, ``cka/diag_alignment``, ``cka/diag_contrast`` and their
    ``..._floor``). ``summary_items()``: ``{"cka": {key: {...figures, ...floor_<figure>,
    "teacher", "source", "heatmap"}}}`` (plus ``cka_diag_alignment``, ``cka_diag_contrast`` and
    their ``_floor`` for the module's own teacher).
    """

    def __init__(
        self,
        every_n_epochs: int = 50,
        num_batches: int = 8,
        batch_size: int = 256,
        teacher: FrozenTeacher | None = None,
        key: str = "teacher",
        trained_pairs: Sequence[Sequence[int]] | None = None,
        teacher_blocks: Sequence[int] | None = None,
        student_blocks: Sequence[int] | None = None,
        subset_seed: int = 0,
        floor_seed: int = 0,
    ) -> None:
        super().__init__(every_n_epochs, subset_seed)
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        if batch_size < 4:
            raise ValueError(f"batch_size must be >= 4 for the unbiased HSIC, got {batch_size}")
        if not key or "/" in key:
            raise ValueError(f"key must be a non-empty name without '/', got {key!r}")
        self.num_batches, self.batch_size = int(num_batches), int(batch_size)
        self.control = teacher
        self.key = key
        self.trained_pairs = None if trained_pairs is None else [(int(s), int(t)) for s, t in trained_pairs]
        self.teacher_blocks = None if teacher_blocks is None else [int(i) for i in teacher_blocks]
        self.student_blocks = None if student_blocks is None else [int(i) for i in student_blocks]
        self.floor_seed = int(floor_seed)
        self.subsets = {"val": ("val", self.num_batches * self.batch_size)}

    def _key_items(self) -> dict[str, Any]:
        return {"key": self.key, "teacher_blocks": self.teacher_blocks, "student_blocks": self.student_blocks}

    def describe(self) -> str:
        return f"{type(self).__name__}[{self.key}]"

    def comparison(self, teacher: FrozenTeacher) -> str:
        """What the heatmap compares, for its title: this run's student against its own
        teacher, or (a control) against the teacher of experiment ``key``."""
        if self.control is None:
            return f"student vs its own teacher {teacher.name}"
        from kdbias import registry

        other = registry.ALL_EXPERIMENTS[self.key].label if self.key in registry.ALL_EXPERIMENTS else self.key
        return f"student vs the {other} teacher {teacher.name} (control, measurement only)"

    def teacher(self, pl_module: L.LightningModule) -> FrozenTeacher:
        """The teacher compared with: the control, else the module's own."""
        return self.control if self.control is not None else pl_module.teacher

    def pairs(self, pl_module: L.LightningModule) -> list[tuple[int, int]] | None:
        """Trained cells: as given, else the module's ``layer_pairs`` for its own teacher."""
        if self.trained_pairs is not None or self.control is not None:
            return self.trained_pairs
        pairs = getattr(pl_module, "layer_pairs", None)
        return [tuple(p) for p in pairs] if pairs else None

    @override
    def check_module(self, pl_module: L.LightningModule) -> None:
        if self.control is None and getattr(pl_module, "teacher", None) is None:
            raise TypeError(
                f"CKAHeatmapCallback compares the student with a teacher, but {type(pl_module).__name__} has none. "
                "Pass teacher=FrozenTeacher(...) to measure against one, or drop the callback."
            )
        s_blocks, t_blocks = self.blocks(pl_module)
        if len(s_blocks) < 2 or len(t_blocks) < 2:
            raise ValueError(
                f"the diagonal alignment needs at least 2 student and 2 teacher blocks, got {s_blocks} and {t_blocks}"
            )
        pairs = self.pairs(pl_module) or []
        check_block_indices(pl_module.model, [s for s, _ in pairs])
        check_block_indices(self.teacher(pl_module).network, [t for _, t in pairs])

    def blocks(self, pl_module: L.LightningModule) -> tuple[list[int], list[int]]:
        """Checked ``(student_blocks, teacher_blocks)`` for this module."""
        student, teacher = pl_module.model, self.teacher(pl_module).network
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
                    f"CKAHeatmapCallback needs at least one batch of {self.batch_size} held-out images, the "
                    f"split has {n}; lower cka_batch_size."
                )

    @torch.no_grad()
    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
        """``[len(student_blocks), len(teacher_blocks)]`` float64 CKA matrix and its permutation
        floor (CPU)."""
        s_blocks, t_blocks = self.blocks(pl_module)
        teacher = self.teacher(pl_module).to(pl_module.device)
        acc = MinibatchCKA(len(s_blocks), len(t_blocks), floor_seed=self.floor_seed)
        n = len(self.subset("val")[1])
        usable = min(self.num_batches, n // self.batch_size) * self.batch_size
        with eval_mode(pl_module, teacher), trainer.precision_plugin.forward_context():
            for _, (images, _) in zip(
                range(0, usable, self.batch_size), self.chunks("val", self.batch_size, pl_module.device)
            ):
                student = block_outputs(pl_module.model, pl_module.student_input(images), s_blocks)
                acc.update(student, teacher.blocks(images, t_blocks))
        return acc.compute().cpu(), acc.compute_floor().cpu()

    def figures(self, matrix: torch.Tensor, pl_module: L.LightningModule) -> dict[str, float]:
        """The diagonal figures of ``matrix`` (block indices are positions in ``blocks()``)."""
        s_blocks, t_blocks = self.blocks(pl_module)
        out = dict(diagonal_alignment(matrix))
        pairs = [
            (s_blocks.index(s), t_blocks.index(t))
            for s, t in self.pairs(pl_module) or []
            if s in s_blocks and t in t_blocks
        ]
        if pairs:
            out["trained"] = float(torch.stack([matrix[s, t] for s, t in pairs]).double().mean())
            diagonal = set(depth_matched_cells(*matrix.shape))
            # Every depth-matched cell trained: no emergent alignment left to measure.
            untrained = None if diagonal <= set(pairs) else diagonal_contrast_split(matrix, pairs)["untrained_contrast"]
            out["untrained_contrast"] = untrained
        return out

    @override
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        matrix, floor = self.compute(trainer, pl_module)
        s_blocks, t_blocks = self.blocks(pl_module)
        figures = self.figures(matrix, pl_module)
        figures.update({f"floor_{name}": value for name, value in self.figures(floor, pl_module).items()})
        teacher = self.teacher(pl_module)
        epoch = self.epoch_of(trainer)
        trained = [
            (s_blocks.index(s), t_blocks.index(t))
            for s, t in self.pairs(pl_module) or []
            if s in s_blocks and t in t_blocks
        ]
        fig = plot_cka_heatmap(
            matrix,
            s_blocks,
            t_blocks,
            title=f"{self.comparison(teacher)}, epoch {epoch}\n"
            f"contrast (diagonal - off-diagonal) {figures['contrast']:.3f}, permutation floor "
            f"{figures['floor_contrast']:.3f}",
            trained_cells=trained,
            source=_source_mark(trainer, pl_module, teacher),
        )
        if self.run is not None:
            path = self.run.heatmap(self.key, epoch)
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path)
            atomic_write_json(
                path.with_suffix(".json"),
                {
                    "epoch": epoch,
                    "global_step": trainer.global_step,
                    "student_blocks": s_blocks,
                    "teacher_blocks": t_blocks,
                    "trained_pairs": self.pairs(pl_module),
                    "cka": matrix.tolist(),
                    "cka_floor": floor.tolist(),
                    **figures,
                },
            )
        for logger in self.tensorboard_loggers(trainer):
            logger.experiment.add_figure(f"cka/{self.key}/heatmap", fig, global_step=trainer.global_step, close=False)
        fig.clear()
        self.last = {
            **figures,
            "teacher": teacher.name,
            "source": teacher.source,
            "trained_pairs": self.pairs(pl_module),
            "heatmap": runs.heatmap_entry(self.key, epoch) if self.run is not None else None,
        }
        metrics = {f"cka/{self.key}/{name}": value for name, value in figures.items() if value is not None}
        if self.control is None:
            metrics.update({"cka/diag_alignment": figures["diag"], "cka/diag_contrast": figures["contrast"]})
            metrics.update(
                {
                    "cka/diag_alignment_floor": figures["floor_diag"],
                    "cka/diag_contrast_floor": figures["floor_contrast"],
                }
            )
        return metrics

    @override
    def summary_items(self) -> dict[str, Any]:
        items: dict[str, Any] = {"cka": {self.key: dict(self.last)}} if self.last else {}
        if self.control is None and self.last:
            items.update(cka_diag_alignment=self.last["diag"], cka_diag_contrast=self.last["contrast"])
            items.update(
                # .get: a measurement restored from a checkpoint written before floors were kept has none
                cka_diag_alignment_floor=self.last.get("floor_diag"),
                cka_diag_contrast_floor=self.last.get("floor_contrast"),
            )
        return items
