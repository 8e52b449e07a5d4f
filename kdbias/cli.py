"""The command line behind every ``experiments/<name>.py``: Lightning's ``LightningCLI``.

``python experiments/exp1.py [--smoke] [--resume] [--config FILE] [--model.temperature 2] ...``

- Every argument of the LightningModule (``--model.*``), the DataModule (``--data.*``) and
  the Trainer (``--trainer.*``) is settable; ``--help`` lists them with the preset's values;
  ``--print_config`` prints YAML that ``--config`` reruns identically.
- Presets: the paper preset (the research plan's values) is the default configuration;
  ``--smoke`` (exactly that spelling) applies the offline CPU preset on top, at its place in
  the command line (later arguments win). The files: :meth:`kdbias.registry.Experiment.config_files`.
- ``data.dataset`` is named once and reaches the module (``model.dataset``,
  ``model.num_classes``); ``seed_everything`` seeds the data order too (``data.seed``).
- ``model.teacher: auto`` (EXP-1/2) is the selected checkpoint of the newest complete
  teacher run on the same dataset and preset (:func:`kdbias.runs.teacher_checkpoint`).
- ``--resume`` continues the newest unfinished run with the same seed, dataset and
  preset from its newest loadable checkpoint, after comparing its saved configuration with
  this one; ``--allow_changed trainer.max_epochs`` accepts more epochs. A finished run is
  reported as finished and nothing is trained.
- Bad input ends in one line on stderr and exit status 2 (``KDBIAS_TRACEBACK=1``: traceback).

The run itself (fit, test, summary) is :mod:`kdbias.runner`.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from kdbias import registry
from kdbias.callbacks import NonFiniteLossError
from kdbias.data import DATASETS, CIFARDataModule
from kdbias.experiment import Analytics, check_trainer_settings
from kdbias.models import PretrainedWeightsError
from kdbias.runner import Finished
from kdbias.runs import CheckpointError

__all__ = ["INPUT_ERRORS", "KDBiasCLI", "expand_smoke", "main", "one_line"]

#: Errors caused by the command line or the files it names (not bugs): one line, exit 2.
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    OSError,
    EOFError,
    pickle.UnpicklingError,
    yaml.YAMLError,
    PretrainedWeightsError,
    CheckpointError,
    MisconfigurationException,
    NonFiniteLossError,
)
SMOKE_FLAG = "--smoke"


def one_line(message: object) -> str:
    """``message`` with its whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(message).split())


def expand_smoke(argv: Sequence[str], files: Sequence[Path]) -> list[str]:
    """``argv`` with each exact ``--smoke`` replaced by ``--config FILE`` for every smoke file,
    in place (later arguments still override). Abbreviations are left for the parser to reject."""
    out: list[str] = []
    for arg in argv:
        if arg == SMOKE_FLAG:
            for path in files:
                out += ["--config", str(path)]
        else:
            out.append(arg)
    return out


class _Parser(LightningArgumentParser):
    """``LightningArgumentParser`` whose errors are one line and exit status 2."""

    def error(self, message: str, ex: Exception | None = None):  # type: ignore[override]
        if not self.exit_on_error:
            return super().error(message, ex)
        sys.stderr.write(f"{self.prog}: error: {one_line(message)} (options: {self.prog} --help)\n")
        self.exit(2)


class KDBiasCLI(LightningCLI):
    """``LightningCLI`` for one experiment of :mod:`kdbias.registry`.

    Parses and instantiates the module, the DataModule and the Trainer (run directory,
    logger, callbacks, atomic checkpoints; see :mod:`kdbias.runner`) without running them:
    :func:`main` then calls :meth:`kdbias.runner.Run.train`.
    """

    def __init__(self, experiment: registry.Experiment, configs_dir: str | Path, args: Sequence[str]) -> None:
        self.experiment = experiment
        self.configs_dir = Path(configs_dir)
        paper = experiment.config_files(self.configs_dir, "paper")
        missing = [str(p) for p in paper if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"preset files missing: {', '.join(missing)}; run from a complete checkout.")
        smoke = experiment.config_files(self.configs_dir, "smoke")[len(paper) :]
        self.run = None
        listed = ", ".join(p.relative_to(self.configs_dir).as_posix() for p in smoke)
        description = (
            f"{experiment.description}\n\nPresets: the paper preset is the default configuration. "
            f"{SMOKE_FLAG} (exactly that spelling) applies the offline CPU preset at its place in the command "
            f"line: {listed} (under experiments/configs/). --resume continues an unfinished run."
        )
        super().__init__(
            model_class=experiment.module_class,
            datamodule_class=CIFARDataModule,
            save_config_callback=None,
            seed_everything_default=0,
            run=False,
            auto_configure_optimizers=False,
            args=expand_smoke(args, smoke),
            parser_kwargs={
                "default_config_files": [str(p) for p in paper],
                "allow_abbrev": False,
                "prog": f"{experiment.name}.py",
                "description": description,
                "parser_mode": "yaml",
            },
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("dump_header", [f"kdbias experiment {self.experiment.name}"])
        parser = _Parser(**kwargs)
        parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML configuration file (repeatable)")
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--preset", type=str, default="paper", help="name of the preset (set by the preset files)")
        parser.add_argument("--runs_dir", type=str, default="runs", help="root of <runs_dir>/<experiment>/version_<n>/")
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue the newest unfinished run with the same seed, dataset and preset",
        )
        parser.add_argument(
            "--allow_changed",
            type=str | list[str],
            default="",
            help="with --resume: comma-separated configuration keys that may differ (only trainer.max_epochs)",
        )
        parser.add_class_arguments(Analytics, "analytics")
        parser.link_arguments("data.dataset", "model.dataset")
        parser.link_arguments("data.dataset", "model.num_classes", compute_fn=_num_classes)
        parser.link_arguments("seed_everything", "data.seed", compute_fn=_seed)

    def before_instantiate_classes(self) -> None:
        from kdbias.runner import Run

        check_trainer_settings(self.config.trainer)
        self.run = Run.prepare(self)

    def instantiate_trainer(self, **kwargs: Any):
        return self.run.instantiate_trainer(self)


def _num_classes(dataset: str) -> int:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[dataset].num_classes


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed_everything must be an integer (the run's seed), got {seed!r}")
    return seed


def main(name: str, configs_dir: str | Path, argv: Sequence[str] | None = None) -> Path | None:
    """Entry point of ``experiments/<name>.py``: parse, train, test; return the run directory
    (``None`` when ``--resume`` found the run finished)."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = f"{name}.py"
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)  # no "Seed set to 0" lines
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # argv is passed on purpose
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # the frozen teacher
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # inside Lightning
    try:
        cli = KDBiasCLI(registry.get(name), configs_dir, args)
        return cli.run.train(cli)
    except Finished as done:
        print(f"{prog}: {done.run_dir} is finished (complete summary.json); nothing to train.", flush=True)
        return None
    except INPUT_ERRORS as error:
        if os.environ.get("KDBIAS_TRACEBACK", "") not in ("", "0"):
            raise
        if rank_zero_only.rank == 0:
            kind = "" if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: "
            print(f"{prog}: error: {kind}{one_line(error)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
