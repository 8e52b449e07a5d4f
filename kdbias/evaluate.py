"""``python -m kdbias.evaluate CKPT``: a kdbias checkpoint's accuracy and loss on the official test split.

::

    python -m kdbias.evaluate runs/exp3/version_0/checkpoints/best.ckpt [--data_dir DIR] [--batch_size N]
        [--accelerator auto] [--precision 32-true] [--json]

prints one line (``--json``: one JSON object) with ``test_acc`` (top-1, a fraction of the
images) and ``test_loss`` (mean cross-entropy per image, nats) of ``trainer.test`` over every
image of the official test split: for the run's selected checkpoint, the ``test_acc`` and
``test_loss`` of its ``summary.json``.

- **Module.** The checkpoint (read with ``weights_only=True``: no code runs from it) names its
  class (``kdbias_module``, written by every kdbias module); one that does not is found by
  the experiment of the run it lies in
  (``summary.json``, or the folder ``<experiment>/version_<n>``). It is rebuilt with
  ``load_from_checkpoint``: a distilled student without its teacher (nothing of the teacher is
  read), so ``test/teacher_acc`` is not measured.
- **Data.** :class:`~kdbias.CIFARDataModule` of the module's ``dataset``; ``data_dir``:
  ``--data_dir``, else the run's ``config.yaml`` (``data.data_dir``, relative to the working
  directory as when it trained), else the DataModule's default; ``verify_md5`` as the run had it.
- **Numerics.** ``--precision``, else the run's ``trainer.precision``, else ``32-true``; one device.
- **Bad input** (no such file, not a kdbias module checkpoint, missing data): one line on
  stderr, exit status 2 (:func:`kdbias.console.input_error`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from kdbias import modules, registry, runs
from kdbias.console import emit, input_error, no_setup_lines, quiet_lightning
from kdbias.data import CIFARDataModule
from kdbias.errors import FIT_INPUT_ERRORS, SETUP_INPUT_ERRORS, InputError
from kdbias.modules.base import MODULE_KEY, ClassifierModule

__all__ = ["build", "evaluate", "format_line", "main", "measurement_trainer", "module_class", "run_dir_of", "test"]

PROG = "python -m kdbias.evaluate"
DEFAULT_PRECISION = "32-true"
_FIX = "pass checkpoints/best.ckpt or last.ckpt of a kdbias run (runs/<experiment>/version_<n>/)"


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run folder holding ``checkpoint`` (``<run>/checkpoints/**/<file>`` beside a
    ``config.yaml``), or ``None`` for a checkpoint outside a run."""
    path = Path(checkpoint).resolve()
    for parent in path.parents:
        if parent.name == runs.CHECKPOINT_DIR and (parent.parent / runs.CONFIG_FILE).is_file():
            return parent.parent
    return None


def _known(name: Any) -> type[ClassifierModule] | None:
    """The class of ``kdbias.modules`` called ``name`` (a last dotted component counts), if it is a trainable module."""
    short = str(name).rsplit(".", 1)[-1] if isinstance(name, str) else ""
    cls = getattr(modules, short, None) if short in modules.__all__ else None
    trainable = isinstance(cls, type) and issubclass(cls, ClassifierModule)
    return cls if trainable and cls not in (ClassifierModule, modules.DistillationModule) else None


def module_class(checkpoint: dict[str, Any], run_dir: Path | None = None) -> type[ClassifierModule]:
    """The kdbias module class that wrote ``checkpoint`` (module docstring); ``InputError`` when none is found."""
    summary = (runs.read_summary(run_dir) or {}) if run_dir is not None else {}
    experiment = summary.get("experiment") or (run_dir.parent.name if run_dir is not None else None)
    from_run = registry.ALL_EXPERIMENTS.get(experiment) if isinstance(experiment, str) else None
    for name in (checkpoint.get(MODULE_KEY), from_run and from_run.module):
        cls = _known(name)
        if cls is not None:
            return cls
    raise InputError(f"cannot tell which kdbias module wrote this checkpoint (it names none, nor its run); {_FIX}.")


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}; {_FIX}.")
    checkpoint = runs.load_checkpoint(path)  # weights_only=True; CheckpointError: one line
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(checkpoint.get("state_dict"), dict) or "dataset" not in hparams:
        raise InputError(f"{path} is not a kdbias module checkpoint (no state_dict or dataset hyperparameter); {_FIX}.")
    return checkpoint


def build(
    path: str | Path, data_dir: str | Path | None = None, batch_size: int | None = None
) -> tuple[ClassifierModule, CIFARDataModule, dict[str, Any]]:
    """``(module, datamodule, run config)`` for evaluating ``path``; the data are read (setup)."""
    path = Path(path)
    checkpoint = _read(path)
    run_dir = run_dir_of(path)
    config = runs.read_config(run_dir) if run_dir is not None else {}
    cls = module_class(checkpoint, run_dir)
    dataset = checkpoint["hyper_parameters"]["dataset"]
    del checkpoint  # load_from_checkpoint reads it again, into the module
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    keys = ("data_dir", "verify_md5", "image_size")
    kwargs: dict[str, Any] = {k: data[k] for k in keys if data.get(k) is not None}
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    datamodule = CIFARDataModule(dataset, **kwargs)  # first: a folder dataset is registered here
    try:
        module = cls.load_from_checkpoint(path, map_location="cpu")
    except RuntimeError as error:  # load_state_dict: shapes or keys that are not the network's
        if "state_dict" not in str(error):
            raise
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), "")
        raise runs.CheckpointError(
            f"{path}: its weights do not fit the network its hyperparameters describe ({detail[:200]}); use the "
            "checkpoint as the run wrote it."
        ) from None
    broken = [name for name, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
    if broken:
        raise runs.CheckpointError(
            f"{path} holds non-finite weights (NaN or Inf in {len(broken)} tensors, e.g. {broken[0]}): a diverged "
            "run; evaluate an earlier checkpoint."
        )
    datamodule.prepare_data()
    datamodule.setup("test")
    return module, datamodule, config


def measurement_trainer(
    config: dict[str, Any], accelerator: str = "auto", precision: str | None = None, **kwargs: Any
) -> L.Trainer:
    """A Trainer that measures a finished run's checkpoint: one device, ``precision`` (else the
    run's ``trainer.precision`` in ``config``, else ``32-true``), no logger, checkpoints, bar or
    summary; ``kwargs`` (callbacks, ``default_root_dir``, ...) are passed on."""
    trainer_config = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    with no_setup_lines(), _refused_settings():  # its "GPU available" lines are about this throwaway Trainer
        return L.Trainer(
            accelerator=accelerator,
            devices=1,
            precision=precision or trainer_config.get("precision") or DEFAULT_PRECISION,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            **kwargs,
        )


@contextlib.contextmanager
def _refused_settings() -> Iterator[None]:
    """Lightning's ``ValueError`` for a setting it refuses (``--precision bf17``) as input."""
    try:
        yield
    except ValueError as error:
        raise InputError(f"{error}") from None


def test(
    module: ClassifierModule,
    datamodule: CIFARDataModule,
    config: dict[str, Any],
    path: str | Path,
    accelerator: str = "auto",
    precision: str | None = None,
) -> dict[str, Any]:
    """``trainer.test`` of a :func:`build` result on one device; the result of :func:`evaluate`."""
    trainer = measurement_trainer(config, accelerator, precision)
    (results,) = trainer.test(module, datamodule=datamodule, verbose=False)
    return {
        "checkpoint": str(path),
        "module": type(module).__name__,
        "dataset": datamodule.dataset,
        "images": datamodule.num_test,
        "precision": str(trainer.precision),  # what the Trainer used: --precision, the run's, or 32-true
        "test_acc": float(results["test/acc"]),
        "test_loss": float(results["test/loss"]),
    }


def evaluate(
    path: str | Path,
    data_dir: str | Path | None = None,
    batch_size: int | None = None,
    accelerator: str = "auto",
    precision: str | None = None,
) -> dict[str, Any]:
    """Test checkpoint ``path`` on the official test split (module docstring).

    Returns ``{"checkpoint", "module", "dataset", "images", "precision", "test_acc", "test_loss"}``:
    ``test_acc`` a fraction of ``images``, ``test_loss`` the mean cross-entropy (nats).
    """
    module, datamodule, config = build(path, data_dir, batch_size)
    return test(module, datamodule, config, path, accelerator, precision)


def format_line(result: dict[str, Any]) -> str:
    """One line: ``<checkpoint>: test_acc 0.9412 test_loss 0.2105 (10000 images, cifar10 test split, ...)``."""
    return (
        f"{result['checkpoint']}: test_acc {result['test_acc']:.4f} test_loss {result['test_loss']:.4f} "
        f"({result['images']} images, {result['dataset']} test split, {result['module']}, {result['precision']})"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("checkpoint", help="a kdbias checkpoint (runs/<experiment>/version_<n>/checkpoints/best.ckpt)")
    parser.add_argument("--data_dir", default=None, help="dataset root (default: the run's data.data_dir)")
    parser.add_argument("--batch_size", type=int, default=None, help="test batch size (default: the DataModule's)")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
    parser.add_argument("--precision", default=None, help="Lightning precision (default: the run's, else 32-true)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the line")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, evaluate, print the result; bad input: one line and ``SystemExit(2)``."""
    args = _parser().parse_args(argv)
    quiet_lightning()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no device lines around the one result line
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r".*does not have many workers")  # in-memory batches, on purpose
    if args.batch_size is not None and args.batch_size < 1:
        raise input_error(PROG, InputError(f"--batch_size must be >= 1, got {args.batch_size}"))
    try:  # until testing starts a refused value (ValueError) is input; then only the explicit kinds
        module, datamodule, config = build(args.checkpoint, args.data_dir, args.batch_size)
    except SETUP_INPUT_ERRORS as error:
        raise input_error(PROG, error) from None
    try:
        result = test(module, datamodule, config, args.checkpoint, args.accelerator, args.precision)
    except FIT_INPUT_ERRORS as error:
        raise input_error(PROG, error) from None
    emit(json.dumps(result) if args.json else format_line(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
