"""One run: its identity and every path under its folder ``<runs_dir>/<experiment>/version_<n>/``.

A :class:`Run` is what the runner, the controls, the launchers and the rows beyond the plan pass
around instead of loose ``(runs_dir, experiment, dataset, preset, seed, run_dir)`` arguments,
and the one place that joins a path under a run folder (file names: :mod:`kdbias.runs.layout`,
:mod:`kdbias.runs.files`, :mod:`kdbias.schema`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kdbias.runs.files import CONFIG_FILE, HPARAMS_FILE, SUMMARY_FILE, atomic_write_json, read_summary
from kdbias.runs.layout import BEST_CKPT, CHECKPOINT_DIR, HEATMAP_DIR, LAST_CKPT
from kdbias.runs.paths import file_in_run
from kdbias.schema.fidelity import FIDELITY_FILE
from kdbias.schema.predictions import PREDICTIONS_FILE
from kdbias.schema.snapshots import SNAPSHOT_DIR

__all__ = ["DEFAULT_RUNS_DIR", "Run", "checkpoint_entry", "heatmap_entry", "merge_items"]

#: The runs folder of every command when none is given (``--runs_dir``).
DEFAULT_RUNS_DIR = "runs"


def checkpoint_entry(name: str) -> str:
    """How a run's files name one of its checkpoints: ``checkpoints/<name>``, relative to the
    run folder (``summary["selected_checkpoint"]``, the predictions file's ``checkpoint``)."""
    return f"{CHECKPOINT_DIR}/{Path(name).name}"


def heatmap_entry(key: str, epoch: int) -> str:
    """How a run's files name the CKA heatmap of comparison ``key`` at ``epoch``:
    ``analytics/cka_heatmaps/<key>/epoch_<epoch>.png``, relative to the run folder
    (``summary["cka"][key]["heatmap"]``); its matrix is the ``.json`` beside it."""
    return f"{HEATMAP_DIR}/{key}/epoch_{int(epoch)}.png"


def merge_items(summary: dict[str, Any], items: dict[str, Any]) -> None:
    """``summary.update(items)``, merging (not replacing) values that are dicts on both sides
    (several CKA callbacks each report one entry of ``summary["cka"]``)."""
    for key, value in items.items():
        if isinstance(value, dict) and isinstance(summary.get(key), dict):
            summary[key] = {**summary[key], **value}
        else:
            summary[key] = value


@dataclass(frozen=True)
class Run:
    """A run's identity (``runs_dir``, ``experiment``: the study row, ``dataset``, ``preset``,
    ``seed``) and, once claimed, its folder ``dir``. Paths are properties; each needs ``dir``."""

    runs_dir: Path
    experiment: str
    dataset: str | None = None
    preset: str | None = None
    seed: int | None = None
    dir: Path | None = None

    @classmethod
    def from_dir(cls, run_dir: str | Path) -> Run:
        """The run in folder ``run_dir`` (``<runs_dir>/<experiment>/version_<n>``): identity from
        the folder's place and its ``summary.json`` (``None`` for what it does not say)."""
        run_dir = Path(run_dir)
        summary: dict[str, Any] = read_summary(run_dir) or {}
        seed = summary.get("seed")
        return cls(
            runs_dir=run_dir.parent.parent,
            experiment=str(summary.get("experiment") or run_dir.parent.name),
            dataset=summary.get("dataset") if isinstance(summary.get("dataset"), str) else None,
            preset=summary.get("preset") if isinstance(summary.get("preset"), str) else None,
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            dir=run_dir,
        )

    @classmethod
    def located(cls, run_dir: str | Path) -> Run:
        """The run in folder ``run_dir`` known by its place only (``runs_dir``, ``experiment``;
        nothing read): what a callback knows of the run from ``trainer.log_dir``."""
        run_dir = Path(run_dir)
        return cls(runs_dir=run_dir.parent.parent, experiment=run_dir.parent.name, dir=run_dir)

    def at(self, run_dir: str | Path) -> Run:
        """This run, in folder ``run_dir``."""
        return replace(self, dir=Path(run_dir))

    def describe(self) -> str:
        return f"{self.experiment} seed {self.seed} on {self.dataset} ({self.preset} preset)"

    @property
    def folder(self) -> Path:
        if self.dir is None:
            raise ValueError(f"{self.describe()} has no run folder yet")
        return self.dir

    def path(self, relative: str | Path) -> Path:
        """A path under the run folder (``relative``: as the run's files name it)."""
        return self.folder / relative

    @property
    def checkpoints(self) -> Path:
        return self.folder / CHECKPOINT_DIR

    @property
    def last_ckpt(self) -> Path:
        """``checkpoints/last.ckpt``: the latest epoch with its training state (resume)."""
        return self.checkpoints / LAST_CKPT

    @property
    def best_ckpt(self) -> Path:
        """``checkpoints/best.ckpt``: the weights of the best held-out epoch."""
        return self.checkpoints / BEST_CKPT

    @property
    def snapshots(self) -> Path:
        """``checkpoints/snapshots/``: teacher weight snapshots and their index."""
        return self.checkpoints / SNAPSHOT_DIR

    @property
    def summary(self) -> Path:
        return self.folder / SUMMARY_FILE

    @property
    def config(self) -> Path:
        return self.folder / CONFIG_FILE

    @property
    def hparams(self) -> Path:
        """``hparams.yaml``: the module's and datamodule's hyperparameters."""
        return self.folder / HPARAMS_FILE

    @property
    def predictions(self) -> Path:
        return self.folder / PREDICTIONS_FILE

    @property
    def fidelity(self) -> Path:
        return self.folder / FIDELITY_FILE

    def heatmaps(self, key: str) -> Path:
        """``analytics/cka_heatmaps/<key>/``: the heatmaps (PNG + JSON) of CKA comparison ``key``."""
        return self.folder / HEATMAP_DIR / key

    def heatmap(self, key: str, epoch: int) -> Path:
        """The heatmap PNG of comparison ``key`` at ``epoch`` (:func:`heatmap_entry`)."""
        return self.path(heatmap_entry(key, epoch))

    def selected_checkpoint(self, summary: dict[str, Any] | None = None) -> Path:
        """The checkpoint the run's summary names as selected (``summary``: already read), else
        ``last.ckpt``: :class:`~kdbias.runs.paths.RunPathError` (naming ``summary.json``) when it
        leads outside the run (absolute, ``..``, a link out) or is not a regular file."""
        summary = read_summary(self.folder) if summary is None else summary
        selected = (summary or {}).get("selected_checkpoint")
        if selected is None:
            return self.last_ckpt
        file_in_run(self.folder, selected, self.summary, missing_ok=True)
        return self.path(str(selected))

    def update_summary(self, items: dict[str, Any]) -> dict[str, Any]:
        """Merge ``items`` into the run's ``summary.json`` (:func:`merge_items`) and rewrite it
        atomically: how anything outside training (the controls measured later) adds a figure.
        Returns the summary written."""
        summary = read_summary(self.folder) or {}
        merge_items(summary, items)
        atomic_write_json(self.summary, summary)
        return summary
