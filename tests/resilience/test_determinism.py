"""The same seed gives the same first epoch on CPU; another seed gives another one."""

from __future__ import annotations

from resilience_helpers import TINY, read_scalars

from kdbias.recipes import BASELINE


def _first_epoch(runs_dir, seed: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    run_dir = BASELINE.run([*TINY, "--runs-dir", str(runs_dir), "--seed", str(seed), "--epochs", "1",
                            "--limit-train-batches", "3"])
    return read_scalars(run_dir, "train/loss"), read_scalars(run_dir, "val/acc") + read_scalars(run_dir, "val/loss")


def test_same_seed_same_first_epoch_other_seed_differs(tmp_path):
    loss_a, val_a = _first_epoch(tmp_path / "a", seed=3)
    loss_b, val_b = _first_epoch(tmp_path / "b", seed=3)
    loss_c, val_c = _first_epoch(tmp_path / "c", seed=4)

    assert [step for step, _ in loss_a] == [0, 1, 2]
    assert len(val_a) == 2  # val/acc and val/loss, once each
    assert loss_a == loss_b  # bitwise: initialisation, data order, augmentation, drop-path
    assert val_a == val_b
    assert [v for _, v in loss_c] != [v for _, v in loss_a]
    assert val_c != val_a
