"""The command line behind every ``experiments/<name>.py``: Lightning's ``LightningCLI``.

``python experiments/exp1.py [--smoke] [--resume] [--config FILE] [--model.temperature 2] ...``

- Every argument of the LightningModule (``--model.*``), the DataModule (``--data.*``), the
  analytics (``--analytics.*``) and the Trainer (``--trainer.*``) is settable; ``--help``
  lists them in that order with the preset's values; ``--print_config`` prints YAML that
  ``--config`` reruns identically. An unknown option gets the closest valid names.
- Presets: the paper preset (the research plan's values) is the default configuration;
  ``--smoke`` (exactly that spelling) applies the offline CPU preset on top, at its place in
  the command line (later arguments win). The files: :meth:`kdbias.registry.Experiment.config_files`.
  Jsonargparse merges them: the one preset merger, also used for the CKA controls and the
  benchmark (:func:`preset_config`).
- ``data.dataset`` is named once and reaches the module (``model.dataset``,
  ``model.num_classes``); ``seed_everything`` seeds the data order too (``data.seed``).
- ``model.teacher: auto`` (EXP-1/2) is the selected checkpoint of the newest complete
  teacher run on the same dataset and preset (:func:`kdbias.runs.teacher_checkpoint`); a
  teacher is also given as a spec (``class_path: kdbias.teacher.CheckpointTeacher`` ...).
- ``--resume`` continues the newest unfinished run with the same seed, dataset and
  preset from its newest loadable checkpoint, after comparing its saved configuration with
  this one; ``--allow_changed trainer.max_epochs`` accepts more epochs. A finished run is
  reported as finished and nothing is trained.
- A ``--config`` file names only what :mod:`kdbias.config_files` admits: a ``class_path``
  under ``kdbias.`` or ``lightning.pytorch.``; any other import path (a callable such as
  ``on_fit_start: module.function`` included) only when the command line writes it too.
  It is read bounded (size, aliases, depth; regular files or ``<(...)`` pipes only).
- Bad input ends in one line on stderr and exit status 2 (``KDBIAS_TRACEBACK=1``: traceback);
  an exception from library code during fit or test shows its traceback (exit status 1);
  SIGTERM / SIGINT during training exit 143 / 130 (``last.ckpt`` kept for ``--resume``): only
  a complete run exits 0.

A run's life, step by step, is :mod:`kdbias.runner`.
"""

from __future__ import annotations

import difflib
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from kdbias import registry, runner
from kdbias.config_files import prepare_config_args
from kdbias.console import emit, input_error, one_line, quiet_lightning
from kdbias.data import CIFARDataModule
from kdbias.data.folder import resolve_dataset
from kdbias.errors import FIT_INPUT_ERRORS, SETUP_INPUT_ERRORS, signal_exit_status
from kdbias.experiment import ANALYTICS_CALLBACKS
from kdbias.runs import DEFAULT_RUNS_DIR
from kdbias.why import control_teacher

__all__ = [
    "KDBiasCLI",
    "add_analytics_arguments",
    "expand_smoke",
    "main",
    "preset_config",
]

SMOKE_FLAG = "--smoke"
_LINK_FAILED = re.compile(r"^.*Call to compute_fn of link '[^']*' with args \(.*?\) failed: ", re.DOTALL)
_SPHINX = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):`~?(?:[\w.]*\.)?([^`]+)`")


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
    """``LightningArgumentParser`` whose errors are one line with the closest valid option
    names and exit status 2, and whose help shows no Sphinx markup."""

    def error(self, message: str, ex: Exception | None = None):  # type: ignore[override]
        if not self.exit_on_error:
            return super().error(message, ex)
        hint = self._suggestions(message)
        message = _LINK_FAILED.sub("", str(message))  # a compute_fn's own message, without the parser's wrapping
        sys.stderr.write(f"{self.prog}: error: {one_line(message)}{hint} (options: {self.prog} --help)\n")
        self.exit(2)

    def _suggestions(self, message: str) -> str:
        if "nrecognized" not in message and "not expected" not in message.lower():
            return ""
        known = sorted(set(re.findall(r"(?<![\w-])--[\w.\-]+", self.format_help())))  # every option, as --help lists it
        hints = []
        for given in dict.fromkeys(re.findall(r"--[\w.\-]+", message)):
            if given in known:
                continue
            close = difflib.get_close_matches(given.split("=")[0], known, n=3, cutoff=0.75)
            if close:
                hints.append(f"{given}: did you mean {' or '.join(close)}?")
        return f"; {'; '.join(hints)}" if hints else ""

    def format_help(self) -> str:
        return _SPHINX.sub(r"\1", super().format_help()).replace("``", "")


class KDBiasCLI(LightningCLI):
    """``LightningCLI`` for one experiment of :mod:`kdbias.registry`.

    Hooks: :meth:`before_instantiate_classes` checks every value and plans the run
    (:func:`kdbias.runner.plan_run`: teacher, resume) before anything is built;
    :meth:`instantiate_trainer` builds the Trainer into the claimed run directory
    (:func:`kdbias.runner.build_trainer`). Nothing runs: :func:`main` calls
    :func:`kdbias.runner.train`. ``parse_only=True`` stops after parsing (``self.config``
    is the merged configuration; nothing is checked, resolved or built).
    """

    def __init__(
        self,
        experiment: registry.Experiment,
        args: Sequence[str],
        parse_only: bool = False,
    ) -> None:
        self.experiment = experiment
        self.parse_only = parse_only
        self.plan: runner.RunPlan | None = None
        paper = experiment.config_files("paper")
        missing = [str(p) for p in paper if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"preset files missing: {', '.join(missing)}; a row's pieces are configs/<piece>.yaml beside its "
                "study file or among the shipped presets."
            )
        args = expand_smoke([*experiment.override_args(), *args], self._smoke_files())
        args = prepare_config_args(args)  # bounded, checked; a pipe's text handed on
        description = (
            f"{experiment.description}\n\nPresets: the paper preset is the default configuration; {SMOKE_FLAG} "
            "applies the offline CPU preset. Options: run, module (--model.*), data (--data.*), analytics "
            "(--analytics.*), then Lightning's Trainer (--trainer.*)."
        )
        super().__init__(
            model_class=experiment.module_class,
            datamodule_class=CIFARDataModule,
            save_config_callback=None,
            seed_everything_default=0,
            run=False,
            auto_configure_optimizers=False,
            parser_class=_Parser,
            args=args,
            parser_kwargs={
                "default_config_files": [str(p) for p in paper],
                "allow_abbrev": False,
                "prog": f"{experiment.name}.py",
                "description": description,
                "parser_mode": "yaml",
                "dump_header": [f"kdbias experiment {experiment.name}"],
            },
        )

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_default_arguments_to_parser(parser)
        listed = ", ".join(f"{p.parent.name}/{p.name}" for p in self._smoke_files())
        parser.add_argument(
            SMOKE_FLAG,
            action="store_true",
            help=f"the offline CPU preset, applied at its place in the command line ({listed}); exact spelling",
        )
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
        parser.add_argument("--preset", type=str, default="paper", help="name of the preset (set by the preset files)")
        parser.add_argument(
            "--runs_dir", type=str, default=DEFAULT_RUNS_DIR, help="root of <runs_dir>/<experiment>/version_<n>/"
        )

    def _smoke_files(self) -> list[Path]:
        paper = self.experiment.config_files("paper")
        return self.experiment.config_files("smoke")[len(paper) :]

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The module, the DataModule and the analytics first (what a user changes), then the Trainer."""
        parser.add_lightning_class_args(self.experiment.module_class, "model")
        parser.add_lightning_class_args(CIFARDataModule, "data")
        add_analytics_arguments(parser)
        parser.add_lightning_class_args(self.trainer_class, "trainer")

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.dataset", "model.dataset")
        parser.link_arguments(
            ("data.dataset", "data.data_dir", "data.image_size"), "model.num_classes", compute_fn=_num_classes
        )
        parser.link_arguments("seed_everything", "data.seed", compute_fn=_seed)

    def before_instantiate_classes(self) -> None:
        if self.parse_only:
            return
        dump = lambda config: self.parser.dump(config, skip_none=False)  # noqa: E731
        self.plan = runner.plan_run(self.experiment, self.config, dump)

    def instantiate_classes(self) -> None:
        if self.parse_only:
            return
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self.config_init["data"]
        self.model = self.config_init["model"]
        self.trainer = self.instantiate_trainer()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        assert self.plan is not None
        config = {**dict(self.config_init["trainer"]), **kwargs}
        plan = self.plan

        def control(key: str):
            other = registry.get(key)
            model = preset_config(other, plan.preset).model
            return control_teacher(other, plan.run, model)

        return runner.build_trainer(plan, self.trainer_class, config, self.model, self.datamodule, control)


def add_analytics_arguments(parser: LightningArgumentParser) -> None:
    """``--analytics.enabled``, ``--analytics.cka_against`` and one group per analytics callback
    (``--analytics.hessian.num_images`` ...): the callbacks' own arguments, defaults and help."""
    parser.add_argument("--analytics.enabled", type=bool, default=True, help="run the Phase-3 analytics at all")
    parser.add_argument(
        "--analytics.cka_against",
        type=list[str],
        default=[],
        help="experiments whose teachers the student is also measured against (CKA controls, measurement only)",
    )
    for key, (cls, fixed) in ANALYTICS_CALLBACKS.items():
        parser.add_class_arguments(cls, f"analytics.{key}", instantiate=False, skip=set(fixed))


def preset_config(experiment: registry.Experiment, preset: str = "paper") -> Namespace:
    """``experiment``'s merged preset configuration, parsed by the command line's own parser
    (nothing checked, resolved or built)."""
    args = [SMOKE_FLAG] if preset == "smoke" else []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return KDBiasCLI(experiment, args, parse_only=True).config


def _num_classes(dataset: str, data_dir: str, image_size: int | None) -> int:
    """Classes of the dataset (a folder dataset is registered here, at parse time)."""
    return resolve_dataset(dataset, data_dir, image_size).num_classes


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed_everything must be an integer (the run's seed), got {seed!r}")
    return seed


def own_teacher(name: str) -> registry.Experiment:
    """A teacher run of your own, filed under ``runs/<name>/``: :class:`~kdbias.modules.TeacherModule`
    with the ResNet-18 teacher's recipe and presets (any ``--model.arch``); students distil from
    it with ``--model.teacher run:<name>``. ``ValueError`` for a name that is not a plain
    identifier or that the matrix already uses."""
    if not re.fullmatch(r"[A-Za-z][\w-]*", name or ""):
        raise ValueError(f"--name {name!r}: a teacher run's name is a plain identifier (letters, digits, _ and -)")
    if name in registry.ALL_EXPERIMENTS:
        raise ValueError(f"--name {name}: an experiment of the matrix; run experiments/{name}.py, or pick another name")
    recipe = registry.get(next(n for n in registry.TEACHERS if registry.get(n).module == "TeacherModule"))
    return replace(
        recipe,
        name=name,
        label=name,
        description=f"Your own teacher {name}: {recipe.label}'s recipe and presets with any --model.arch (and "
        "--model.pretrained weights); students name it with --model.teacher run:" + name,
        target=None,
    )


def main(name: str | registry.Experiment, argv: Sequence[str] | None = None) -> Path | None:
    """Entry point of ``experiments/<name>.py``: parse and check, plan, build, then train and
    test; return the run directory (``None`` when ``--resume`` found the run finished).
    ``name``: an experiment of :mod:`kdbias.registry`, or one built here (:func:`own_teacher`).

    Input errors (:data:`kdbias.errors.SETUP_INPUT_ERRORS` until training starts,
    :data:`kdbias.errors.FIT_INPUT_ERRORS` after) end in one line and exit status 2; any other
    exception propagates with its traceback (exit status 1)."""
    args = list(sys.argv[1:] if argv is None else argv)
    experiment = name if isinstance(name, registry.Experiment) else None
    prog = f"{name if experiment is None else experiment.name}.py"
    quiet_lightning()
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # argv is passed on purpose
    try:
        cli = KDBiasCLI(experiment or registry.get(name), args)
        assert cli.plan is not None
        runner.prepare_data(cli.plan, cli.datamodule)
    except runner.Finished as done:
        emit(f"{prog}: {done.run_dir} is finished (complete summary.json); nothing to train.")
        return None
    except SETUP_INPUT_ERRORS as error:
        raise input_error(prog, error) from None
    try:
        with signal_exit_status(cli.trainer, cli.plan.describe(), cli.plan.run_dir):  # SIGTERM/SIGINT: never 0
            return runner.train(cli.plan, cli.trainer, cli.model, cli.datamodule)
    except FIT_INPUT_ERRORS as error:
        raise input_error(prog, error) from None
