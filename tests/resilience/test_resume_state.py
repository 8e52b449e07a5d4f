"""In-process crash and ``--resume``: the resumed epoch equals that of an uninterrupted run.

This is the strict form of the resume contract (optimiser, schedule, epoch, callbacks'
state, data order, augmentation stream and RNG all restored): every training loss of the
resumed epoch matches the uninterrupted run bit for bit (same process, one thread), with a
high drop-path rate so that a replayed random stream would show.
"""

from __future__ import annotations

import json

import pytest
from helpers import TINY_VIT, SimulatedCrash, read_scalars, run_experiment
from resilience_helpers import crash_at, load, versions

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BATCHES = 3  # per epoch; 2 epochs
ARGS = [
    "--trainer.max_epochs",
    "2",
    "--trainer.limit_train_batches",
    str(BATCHES),
    "--trainer.log_every_n_steps",
    "1",
    "--model.arch_kwargs",
    json.dumps({**TINY_VIT, "drop_path_rate": 0.5}),
]


def test_resumed_epoch_matches_the_uninterrupted_run(tmp_path, capsys):
    reference = run_experiment("baseline", tmp_path / "a", *ARGS)

    with pytest.raises(SimulatedCrash):
        run_experiment("baseline", tmp_path / "b", *ARGS, *crash_at(epoch=1, batch=1))
    run_dir = tmp_path / "b" / "baseline" / "version_0"
    saved = load(run_dir / "checkpoints" / "last.ckpt")
    assert saved["epoch"] == 0 and saved["global_step"] == BATCHES
    assert {"torch", "numpy", "python"} <= set(saved["callbacks"]["RNGStateCallback"])
    assert saved["CIFARDataModule"]["aug_step"] == BATCHES and "shuffle_rng" in saved["CIFARDataModule"]
    elapsed_epoch0 = saved["callbacks"]["SummaryCallback[baseline]"]["elapsed_s"]

    capsys.readouterr()
    assert run_experiment("baseline", tmp_path / "b", *ARGS, "--resume") == run_dir
    assert f"Resuming {run_dir} from {run_dir / 'checkpoints' / 'last.ckpt'}" in capsys.readouterr().out
    assert versions(tmp_path / "b", "baseline") == ["version_0"]

    # callbacks' and datamodule's state came back from the checkpoint and continued
    final = load(run_dir / "checkpoints" / "last.ckpt")
    assert final["CIFARDataModule"]["aug_step"] == 2 * BATCHES  # continued from BATCHES, not restarted at 0
    summary_state = final["callbacks"]["SummaryCallback[baseline]"]
    assert summary_state["elapsed_s"] > elapsed_epoch0 and summary_state["best_epoch"] is not None
    assert final["global_step"] == 2 * BATCHES

    # every resumed step equals the uninterrupted run (the last event per step wins)
    expected = dict(read_scalars(reference, "train/loss"))
    got = dict(read_scalars(run_dir, "train/loss"))
    assert sorted(got) == sorted(expected) == list(range(2 * BATCHES))
    assert [got[s] for s in range(BATCHES, 2 * BATCHES)] == [expected[s] for s in range(BATCHES, 2 * BATCHES)]
    assert read_scalars(run_dir, "val/acc") == read_scalars(reference, "val/acc")
    assert [s for s, _ in read_scalars(run_dir, "val/acc")] == [BATCHES - 1, 2 * BATCHES - 1]
    a, b = json.loads((reference / "summary.json").read_text()), json.loads((run_dir / "summary.json").read_text())
    assert (a["test_acc"], a["best_val_acc"], a["best_epoch"]) == (b["test_acc"], b["best_val_acc"], b["best_epoch"])
