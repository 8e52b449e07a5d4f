"""Determinism and pairing on CPU.

- The same seed gives the same first epoch bit for bit (initialisation, data order,
  augmentation, drop-path); another seed gives another one.
- Every student run of the matrix at one seed starts from the same weights
  (``student_init_sha256``) and sees the same batches, whatever its teacher, loss or module,
  so that the comparisons between experiments are paired.
"""

from __future__ import annotations

import json

import pytest
from helpers import read_scalars, run_experiment

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _first_epoch(runs_dir, seed: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    run_dir = run_experiment(
        "baseline",
        runs_dir,
        "--seed_everything",
        str(seed),
        "--trainer.limit_train_batches",
        "3",
        "--trainer.log_every_n_steps",
        "1",
    )
    return read_scalars(run_dir, "train/loss"), read_scalars(run_dir, "val/acc") + read_scalars(run_dir, "val/loss")


def test_same_seed_same_first_epoch_other_seed_differs(tmp_path):
    loss_a, val_a = _first_epoch(tmp_path / "a", seed=3)
    loss_b, val_b = _first_epoch(tmp_path / "b", seed=3)
    loss_c, val_c = _first_epoch(tmp_path / "c", seed=4)

    assert [step for step, _ in loss_a] == [0, 1, 2]
    assert len(val_a) == 2  # val/acc and val/loss, once each
    assert loss_a == loss_b  # bitwise
    assert val_a == val_b
    assert [v for _, v in loss_c] != [v for _, v in loss_a]
    assert val_c != val_a


STUDENTS = ("baseline", "baseline_b512", "exp1", "exp2", "exp3")


def test_students_at_one_seed_share_initial_weights_and_data_order(tmp_path, runs_with_teacher):
    """The five student runs at seed 0 (one batch each): one ``student_init_sha256``, and
    the same first batches (labels recorded by ``helpers.RecordBatches``)."""
    runs = runs_with_teacher
    run_experiment("teacher_convnextv2", runs)
    init, batches = {}, {}
    for name in STUDENTS:
        record = tmp_path / f"{name}.json"
        run_dir = run_experiment(
            name,
            runs,
            "--trainer.limit_train_batches",
            "2",
            "--trainer.callbacks+=helpers.RecordBatches",
            f"--trainer.callbacks.path={record}",
        )
        init[name] = json.loads((run_dir / "summary.json").read_text())["student_init_sha256"]
        batches[name] = [labels for _, _, labels in json.loads(record.read_text())]
    assert len(set(init.values())) == 1 and len(next(iter(init.values()))) == 64, init
    reference = batches["baseline"]
    assert len(reference) == 2 and len(reference[0]) == 16
    assert {name: seen == reference for name, seen in batches.items()} == dict.fromkeys(STUDENTS, True)
