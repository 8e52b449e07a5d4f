"""What a run logs: one TensorBoard events file, user loggers beside it, two test passes, HPARAMS.

- :func:`run_loggers`: the run's :class:`RunLogger` first (so ``trainer.logger`` and
  ``trainer.log_dir`` are the run directory), then the loggers given as ``--trainer.logger``;
- :func:`test_pass`: one ``trainer.test``; the selected checkpoint's results are logged under
  ``test/*``, the last epoch's weights under ``test_last/*`` (:data:`TEST_LAST`), each once;
- :func:`method_hparams` and :func:`log_hparams`: TensorBoard's HPARAMS entry, the method's
  parameters with the final metrics;
- :func:`close_loggers`: the end of the run's logging.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from kdbias.runs.config_diff import RUN_LOCAL_KEYS

__all__ = [
    "HP_METRICS",
    "TEST",
    "TEST_LAST",
    "RunLogger",
    "close_loggers",
    "log_hparams",
    "method_hparams",
    "run_loggers",
    "test_pass",
]

#: Prefix of the selected checkpoint's test metrics (what the module logs: ``test/acc``).
TEST = "test"
#: Prefix of the last epoch's test metrics (``test_last/acc``: ``summary.json``'s ``test_acc_last``).
TEST_LAST = "test_last"
#: ``summary.json`` figures that HPARAMS shows, as ``hp/<key>``.
HP_METRICS = ("test_acc", "test_acc_last", "val_acc", "best_val_acc", "teacher_acc", "teacher_knn_acc")


class RunLogger(TensorBoardLogger):
    """The run's TensorBoard record in ``<runs_dir>/<experiment>/<version>/``: one events file
    per process (no ``hp_metric`` placeholder).

    Lightning finalizes every logger at the end of each ``fit`` and ``test``, and a closed
    TensorBoard writer opens a new events file at its next write: a run (fit, two test
    passes, HPARAMS) would leave four. Here a successful stage's end flushes the writer and
    writes ``hparams.yaml`` (once: Lightning never rewrites it) but keeps the writer open;
    :meth:`close` ends it, after the last entry. A failed or interrupted stage closes it at
    once. A resumed run is another process: its events go to a second file in the folder.
    """

    def __init__(self, runs_dir: str | Path, experiment: str, version: str) -> None:
        super().__init__(save_dir=str(runs_dir), name=experiment, version=version, default_hp_metric=False)

    @override
    @rank_zero_only
    def finalize(self, status: str) -> None:
        if status != "success":
            super().finalize(status)
            return
        self.experiment.flush()
        self.save()

    @rank_zero_only
    def close(self) -> None:
        """Flush and close the events file (the run logs nothing more)."""
        super().finalize("success")


def run_loggers(runs_dir: str | Path, experiment: str, version: str, given: Any) -> list[Logger]:
    """The run's loggers: its :class:`RunLogger`, then the user's (``--trainer.logger``).

    ``given`` as LightningCLI passes it: a Lightning ``Logger`` or a list of them (W&B,
    MLflow, CSV: kept, after TensorBoard); ``None``, ``True`` or ``False`` (Lightning's
    default logger, or none): no other logger. The TensorBoard record is the run's own
    (``kdbias.report`` and ``--resume`` read it), so ``logger: false`` does not turn it off.
    """
    if isinstance(given, Logger):
        user = [given]
    elif given is None or isinstance(given, bool):
        user = []
    elif isinstance(given, Iterable) and not isinstance(given, str) and all(isinstance(g, Logger) for g in given):
        user = list(given)
    else:
        raise ValueError(f"trainer.logger must be a Lightning Logger, a list of them, true or false; got {given!r}")
    return [RunLogger(runs_dir, experiment, version), *user]


def test_pass(
    trainer: L.Trainer, module: L.LightningModule, datamodule: Any, ckpt: str | None, prefixes: tuple[str, ...]
) -> dict[str, float]:
    """``trainer.test`` of checkpoint ``ckpt`` (``None``: the weights in memory, the last
    epoch's); returns the results under the module's names (``{"test/acc": ...}``).

    ``prefixes``: the tags the results are logged under. ``"test"``: as Lightning logs them
    (``test/acc``); without it the loggers are detached for the pass. Any other prefix: once
    to every logger at ``trainer.global_step``, as ``<prefix>/<name>`` (``test/acc`` ->
    ``test_last/acc``). So each tag holds one pass.
    """
    loggers = trainer.loggers
    if TEST not in prefixes:
        trainer.loggers = []
    try:
        results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
    finally:
        trainer.loggers = loggers
    out = {k: float(v) for k, v in (results[0] if results else {}).items()}
    for prefix in (p for p in prefixes if p != TEST and trainer.is_global_zero):
        renamed = {f"{prefix}/{k.removeprefix(f'{TEST}/')}": v for k, v in out.items()}
        for logger in loggers:
            logger.log_metrics(renamed, step=trainer.global_step)
    return out


def method_hparams(module: L.LightningModule, datamodule: Any) -> dict[str, Any]:
    """The parameters HPARAMS lists: those that define the method and change its results.

    Rule: the DataModule's and the module's constructor arguments (``hparams_initial``, as
    Lightning saves them to ``hparams.yaml``), without ``_``-prefixed keys (LightningCLI's
    bookkeeping, such as its instantiator) and without the data arguments that
    say where and how data is read (the ``data.*`` entries of
    :data:`~kdbias.runs.config_diff.RUN_LOCAL_KEYS`: ``data_dir``, ``num_workers``, ``pin_memory``,
    ``verify_md5``); a ``teacher`` is its name, not its checkpoint's path. Nested settings
    stay nested (TensorBoard shows ``optim/lr``).
    """
    local = {key.removeprefix("data.") for key in RUN_LOCAL_KEYS if key.startswith("data.")}
    data = {k: v for k, v in dict(datamodule.hparams_initial).items() if k not in local}
    params = {k: v for k, v in {**data, **dict(module.hparams_initial)}.items() if not k.startswith("_")}
    teacher = getattr(module, "teacher", None)
    if "teacher" in params and teacher is not None:
        params["teacher"] = teacher.name
    return params


def log_hparams(trainer: L.Trainer, module: L.LightningModule, datamodule: Any, summary: dict[str, Any]) -> None:
    """TensorBoard's HPARAMS entry (global rank 0): :func:`method_hparams` with the final
    figures of ``summary`` (``summary.json``) as ``hp/<key>`` (:data:`HP_METRICS`)."""
    metrics = {f"hp/{k}": float(summary[k]) for k in HP_METRICS if isinstance(summary.get(k), (int, float))}
    for logger in trainer.loggers:
        if isinstance(logger, RunLogger):
            logger.log_hyperparams(method_hparams(module, datamodule), metrics)


def close_loggers(trainer: L.Trainer) -> None:
    """End the run's logging: close the events file, finalize the user's loggers (a CSV
    logger writes the ``test_last/*`` rows then)."""
    for logger in trainer.loggers:
        if isinstance(logger, RunLogger):
            logger.close()
        else:
            logger.finalize("success")
