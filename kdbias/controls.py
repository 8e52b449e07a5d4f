"""Controls measured on a finished run: the CKA controls and fidelity references it had to skip.

A run measures its controls while it trains: the baseline's CKA against the teacher of every
distillation row (``analytics.cka_against``) and its fidelity to every teacher. A control
whose teacher did not exist yet is skipped with one line, so the baseline runs alone on a
fresh checkout. :func:`fill_controls` makes those measurements later, on the run's own
checkpoints, once the teachers exist; ``run_all`` calls it after training, and by hand::

    python -m kdbias.controls runs/baseline/version_0 [--runs_dir runs] [--accelerator cpu]

What is measured, on which weights, so a later value equals the one training would have made:

- a CKA control (:class:`~kdbias.callbacks.CKAHeatmapCallback`, the run's own
  ``analytics.cka`` settings) on ``last.ckpt``: the weights a control measured during
  training sees at its last measurement (it runs before the epoch's checkpoint is saved);
  heatmap and JSON under ``analytics/cka_heatmaps/<key>/epoch_<e>.png`` as in training;
- a fidelity reference (:class:`~kdbias.callbacks.fidelity.FidelityCallback`) on the
  selected checkpoint (``summary["selected_checkpoint"]``), over the official test split,
  as the run's own test pass measures it.

Each value is added to ``summary.json`` (``cka.<key>``, ``fidelity.<key>``) with
``"measured": "later"``; values already there are never measured again. Nothing is written to
TensorBoard (the run's event file is closed). The run's folder is locked while measured.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from kdbias import registry, runs
from kdbias.cli import preset_config
from kdbias.console import emit, one_line, quiet_lightning
from kdbias.data import DATASETS, CIFARDataModule
from kdbias.errors import FIT_INPUT_ERRORS, InputError
from kdbias.experiment import Analytics
from kdbias.teacher import FrozenTeacher
from kdbias.why import control_teacher

__all__ = ["control_teacher", "fill_controls", "main", "missing_controls"]  # control_teacher: kdbias.why


def missing_controls(run_dir: str | Path) -> tuple[list[str], list[str]]:
    """``(CKA control keys, fidelity reference keys)`` a complete run configured or is owed but
    does not hold; both empty for an incomplete or unreadable run. Reads two small files."""
    from kdbias import why

    summary, config = runs.read_summary(run_dir), runs.read_config(run_dir)
    if not runs.is_complete(summary) or not config or summary.get("experiment") not in registry.ALL_EXPERIMENTS:
        return [], []
    experiment = registry.get(summary["experiment"])
    against = runs.config_value(config, "analytics.cka_against") or []
    enabled = runs.config_value(config, "analytics.enabled", True)
    cka = [k for k in against if k != experiment.name and k not in (summary.get("cka") or {})] if enabled else []
    teachers_dir = Path(runs.config_value(config, "runs_dir", runs.DEFAULT_RUNS_DIR))
    run = runs.Run(teachers_dir, experiment.name, summary["dataset"], summary["preset"], dir=Path(run_dir))
    refs, _ = why.fidelity_references(experiment, run, 1)
    fidelity = [k for k in refs if k not in (summary.get("fidelity") or {})]
    return cka, fidelity


def check_run(run_dir: str | Path) -> None:
    """:class:`InputError` (one line) unless ``run_dir`` is a complete run whose summary names a
    known experiment and dataset, whose ``cka``/``fidelity`` are objects, and whose
    ``config.yaml`` is readable plain YAML with data arguments the DataModule takes; a run folder
    (or its ``checkpoints/``) that is a symbolic link is :class:`~kdbias.runs.LinkedRunFolder`."""
    runs.check_run_folder(run_dir)
    summary, config = runs.read_summary(run_dir), runs.read_config_checked(run_dir)
    if not runs.is_complete(summary):
        raise InputError(f"{run_dir} is not a complete run (no complete summary.json): nothing to measure on.")
    assert summary is not None
    if summary.get("experiment") not in registry.ALL_EXPERIMENTS or summary.get("dataset") not in DATASETS:
        raise InputError(f"{run_dir}/summary.json names an unknown experiment or dataset: not a run of this kdbias.")
    for section in ("cka", "fidelity"):
        if summary.get(section) is not None and not isinstance(summary[section], dict):
            raise InputError(f"{run_dir}/summary.json: {section} is not a JSON object; restore the run's summary.")
    data, why = config
    if data is None:
        raise InputError(f"{run_dir}/{runs.CONFIG_FILE} {why or 'is missing'}: the controls are measured with it.")
    try:
        CIFARDataModule(**(data.get("data") or {}))  # checks its arguments; reads nothing
    except (TypeError, ValueError) as error:
        raise InputError(f"{run_dir}/{runs.CONFIG_FILE}: data: {one_line(error)}") from None


def fill_controls(
    run_dir: str | Path,
    runs_dir: str | Path | None = None,
    accelerator: str = "auto",
) -> list[str]:
    """Measure what :func:`missing_controls` names and whose teacher now exists; returns one
    line per control (measured, or still missing and why). ``runs_dir``: where the teacher runs
    are (default: the run's own ``runs_dir``)."""
    run_dir = Path(run_dir)
    cka_keys, fidelity_keys = missing_controls(run_dir)
    if not cka_keys and not fidelity_keys:
        return []
    summary, config = runs.read_summary(run_dir) or {}, runs.read_config(run_dir)
    experiment = registry.get(summary["experiment"])
    run = runs.Run.from_dir(run_dir)
    teachers_dir = runs_dir if runs_dir is not None else runs.config_value(config, "runs_dir", runs.DEFAULT_RUNS_DIR)
    run = replace(run, runs_dir=Path(teachers_dir))  # where this run's teachers are looked up
    lines: list[str] = []
    with runs.RunLock(run_dir):
        datamodule = CIFARDataModule(**(config.get("data") or {}))
        cka, cka_lines = _cka_controls(experiment, run, config, cka_keys)
        lines += cka_lines
        measured: dict[str, dict[str, Any]] = {}
        if cka:
            measured["cka"] = _measure(
                _own_file(run.folder, run.last_ckpt.relative_to(run.folder).as_posix(), run.checkpoints),
                experiment,
                datamodule,
                cka,
                accelerator,
                config,
                "validate",
            )
        fidelity = _fidelity_references(experiment, run, fidelity_keys)
        if fidelity:
            selected = run.selected_checkpoint(summary)  # inside the run, a regular file (RunPathError otherwise)
            measured["fidelity"] = _measure(selected, experiment, datamodule, fidelity, accelerator, config, "test")
        for key in fidelity_keys:
            lines.append(
                f"fidelity to {key}: " + ("measured" if key in measured.get("fidelity", {}) else "teacher run missing")
            )
        if measured:
            later = {
                section: {k: {**v, "measured": "later"} for k, v in values.items()}
                for section, values in measured.items()
            }
            run.update_summary(later)
    return [f"{run_dir}: {line}" for line in lines]


def _own_file(run_dir: Path, name: object, named_in: Path) -> Path:
    """The run's own regular file ``name`` (:func:`kdbias.runs.file_in_run`): another run's
    weights are never measured and written into this run's summary."""
    found = runs.file_in_run(run_dir, name, named_in)
    assert found is not None
    return found


def _cka_controls(experiment, run: runs.Run, config, keys):
    """The CKA callbacks of ``keys`` whose teachers exist, and a line per key."""
    settings = Analytics(**{k: v for k, v in (config.get("analytics") or {}).items() if k != "cka_against"})
    callbacks, lines = [], []
    for key in keys:
        other = registry.get(key)
        try:
            teacher, pairs = control_teacher(other, run, preset_config(other, str(run.preset)).model)
        except FileNotFoundError as missing:
            lines.append(f"CKA control against the {key} teacher still missing: {' '.join(str(missing).split())}")
            continue
        callbacks.append(settings.callback("cka", teacher=teacher, key=key, trained_pairs=pairs))
        lines.append(f"CKA control against the {key} teacher ({teacher.name}, {teacher.source}): measured")
    return callbacks, lines


def _fidelity_references(experiment, run: runs.Run, keys) -> list[Any]:
    from kdbias import why
    from kdbias.callbacks.fidelity import OWN, FidelityCallback

    refs, primary = why.fidelity_references(experiment, run, DATASETS[run.dataset].num_classes)
    chosen: dict[str, Callable[[], FrozenTeacher] | str] = {k: v for k, v in refs.items() if k in keys and v != OWN}
    return [FidelityCallback(chosen, primary)] if chosen else []


def _measure(checkpoint: Path, experiment, datamodule, callbacks, accelerator: str, config, stage: str) -> dict:
    """Run ``callbacks`` in one ``validate`` / ``test`` pass of ``checkpoint``; their results."""
    if not checkpoint.is_file():
        raise InputError(f"{checkpoint} is missing: the run's checkpoint is needed to measure its controls.")
    state = runs.load_checkpoint(checkpoint)
    module = experiment.module_class.load_from_checkpoint(checkpoint)
    for callback in callbacks:
        callback.at_epoch = int(state.get("epoch", 0))
    from kdbias.evaluate import measurement_trainer

    root = str(checkpoint.parent.parent)  # the run folder: heatmaps and per-image files land there
    trainer = measurement_trainer(config, accelerator, callbacks=callbacks, default_root_dir=root, limit_val_batches=1)
    if stage == "validate":
        trainer.validate(module, datamodule=datamodule, verbose=False)
        return {k: v for c in callbacks for k, v in c.summary_items().get("cka", {}).items()}
    trainer.test(module, datamodule=datamodule, verbose=False)
    return {k: v for c in callbacks for k, v in c.results.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdbias.controls", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="complete runs (runs/<experiment>/version_<n>)")
    parser.add_argument("--runs_dir", default=None, help="where the teacher runs are (default: each run's own)")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator of the measurement")
    parser.add_argument("--study", default=None, metavar="FILE", help="the study file the runs belong to")
    args = parser.parse_args(argv)

    quiet_lightning()
    try:
        if args.study is not None:
            registry.activate(args.study)
        for run_dir in args.run_dirs:
            check_run(run_dir)
            lines = fill_controls(run_dir, args.runs_dir, args.accelerator)
            emit("\n".join(lines) if lines else f"{run_dir}: every control is measured already")
    except (*FIT_INPUT_ERRORS, runs.RunningElsewhere) as error:  # a bug during a measurement keeps its traceback
        emit(f"{parser.prog}: error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
