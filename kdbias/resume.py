"""``--resume``: which run continues, from which checkpoint, and whether its configuration may.

:func:`plan_resume` finds the newest unfinished run with the same seed, dataset and preset
(or the finished one) and its newest loadable checkpoint; :meth:`ResumePlan.check_changes`
compares the configuration it was started with against the new one.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbias import runs
from kdbias.experiment import RESUME_SAFE_CHANGES, allowed_changes

__all__ = ["ResumePlan", "plan_resume"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePlan:
    """``finished``: a complete run (nothing to train); ``run_dir``/``checkpoint``: the run to
    continue and its checkpoint; all ``None``: a new run starts."""

    finished: Path | None = None
    run_dir: Path | None = None
    checkpoint: Path | None = None
    notes: tuple[str, ...] = ()

    def announce(self) -> None:
        """Print what the resume will do (once its configuration is accepted)."""
        for note in self.notes:
            log.info(note)

    def check_changes(self, config: dict[str, Any], allow_changed: Any, max_epochs: int | None) -> None:
        """``ValueError`` when ``config`` differs from the run's saved one beyond ``allow_changed``
        (only :data:`~kdbias.experiment.RESUME_SAFE_CHANGES`), or asks for fewer epochs than done."""
        assert self.run_dir is not None
        allowed = allowed_changes(allow_changed)
        changes = runs.config_differences(runs.read_config(self.run_dir), config)  # a moved teacher is the same
        refused = {k: v for k, v in changes.items() if k not in allowed}
        if refused:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
            raise ValueError(
                f"--resume: the configuration differs from the one {self.run_dir} was started with: {listed}. Resume "
                f"with the same settings, start a new run without --resume, or (for more epochs only) add "
                f"--allow_changed {RESUME_SAFE_CHANGES[0]}."
            )
        if "trainer.max_epochs" in changes:
            done = runs.load_checkpoint(runs.Run.from_dir(self.run_dir).last_ckpt).get("epoch", 0) + 1
            if max_epochs is not None and max_epochs < done:
                raise ValueError(
                    f"--resume: trainer.max_epochs {max_epochs} is below the {done} epochs {self.run_dir} has trained."
                )


def plan_resume(
    runs_dir: Path, experiment: str, seed: int, dataset: str, preset: str, config: dict[str, Any] | None = None
) -> ResumePlan:
    """What ``--resume`` does for this run (printing what it found); ``config``: the new
    configuration, which a finished run must match to count as this run."""
    described = f"{experiment} seed {seed} on {dataset} ({preset} preset)"
    with warnings.catch_warnings(record=True) as ignored:  # a run ignored says why (kdbias.runs.RunsWarning)
        warnings.simplefilter("always", runs.RunsWarning)
        previous = runs.resumable_run(runs_dir, experiment, seed, dataset, preset)
        done = (
            None if previous else runs.latest_complete_run(runs_dir, experiment, seed, dataset, preset, config=config)
        )
    for warning in ignored:
        log.info(f"--resume: warning: {warning.message}")
    if previous is None:
        if done is not None:
            return ResumePlan(finished=done)
        return ResumePlan(notes=(f"--resume: no unfinished run of {described} under {runs_dir}; starting a new run.",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpoint = runs.newest_loadable_checkpoint(previous)
    for warning in caught:
        log.info(f"--resume: warning: {warning.message}")
    if checkpoint is None:
        return ResumePlan(notes=(f"--resume: no loadable checkpoint in {previous}; it is kept, and a new run starts.",))
    notes = []
    if checkpoint.name != runs.LAST_CKPT:
        notes.append(
            f"--resume: warning: {runs.Run.from_dir(previous).last_ckpt} is missing or broken; "
            f"resuming from the newest loadable checkpoint {checkpoint}."
        )
    notes.append(f"Resuming {previous} from {checkpoint}")
    return ResumePlan(run_dir=previous, checkpoint=checkpoint, notes=tuple(notes))
