"""``--resume``: a finished run is left alone, a broken ``last.ckpt`` keeps the run and starts
a new one (``best.ckpt`` holds weights only), a changed configuration is refused (except more epochs, which stretch the
schedule to the new end).

The SIGKILL of a real script is ``test_resume_kill.py``; the bitwise equality of a resumed
epoch with an uninterrupted one is ``test_resume_state.py``.
"""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import TINY_VIT, read_scalars, run_experiment
from resilience_helpers import cli_error, interrupted_run, load, smoke_args, snapshot, versions

from kdbias.modules.schedule import WarmupCosine

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

EPOCHS = 3


@pytest.fixture(scope="module")
def crashed(tmp_path_factory) -> tuple:
    """A baseline run planned for 3 epochs that crashed in epoch 2 (read-only here)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("crashed") / "runs"
        return root, interrupted_run("baseline", root, epochs=EPOCHS)
    finally:
        torch.set_num_threads(threads)


def test_resume_of_a_finished_run_trains_nothing(tmp_path, capsys, baseline_run):
    root = tmp_path / "runs"
    run_dir = root / "baseline" / baseline_run.name
    shutil.copytree(baseline_run, run_dir)
    before = snapshot(root)
    capsys.readouterr()
    try:
        result = run_experiment("baseline", root, "--resume")
    except SystemExit as stop:
        assert stop.code in (0, None)
        result = None
    out = capsys.readouterr().out
    assert result is None
    assert any("finished" in line.lower() and str(run_dir) in line for line in out.splitlines()), out
    assert snapshot(root) == before and versions(root, "baseline") == [baseline_run.name]


BROKEN = {
    "garbage": lambda raw: b"garbage, not a checkpoint\n" * 8,
    "truncated": lambda raw: raw[: len(raw) // 2],
    "empty": lambda raw: b"",
}


def test_best_ckpt_holds_the_weights_and_last_ckpt_the_training_state(tmp_path):
    """``best.ckpt`` keeps what testing, students and the report read (weights, hyperparameters,
    epoch); the optimiser and schedule state that resuming needs lives in ``last.ckpt`` only."""
    run_dir = interrupted_run("baseline", tmp_path / "runs", epochs=EPOCHS)
    last, best = load(run_dir / "checkpoints" / "last.ckpt"), load(run_dir / "checkpoints" / "best.ckpt")
    assert {"optimizer_states", "lr_schedulers", "callbacks"} <= set(last)
    assert not {"optimizer_states", "lr_schedulers", "callbacks"} & set(best)
    assert {"state_dict", "hyper_parameters", "epoch", "global_step"} <= set(best)
    assert best["state_dict"].keys() == last["state_dict"].keys()
    size = (run_dir / "checkpoints" / "best.ckpt").stat().st_size
    assert size < 0.6 * (run_dir / "checkpoints" / "last.ckpt").stat().st_size  # AdamW: two moments per weight


@pytest.mark.parametrize("kind", list(BROKEN))
def test_resume_with_broken_last_ckpt_keeps_the_run_and_starts_anew(tmp_path, capsys, kind):
    """``best.ckpt`` holds no optimiser state, so it cannot continue training: a broken
    ``last.ckpt`` leaves the run untouched (its best weights still testable) and a new run starts."""
    root = tmp_path / "runs"
    run_dir = interrupted_run("baseline", root, epochs=EPOCHS)
    last, best = run_dir / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "best.ckpt"
    last.write_bytes(BROKEN[kind](last.read_bytes()))
    kept = best.read_bytes()
    capsys.readouterr()
    new = run_experiment("baseline", root, "--trainer.max_epochs", str(EPOCHS), "--resume")
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("--resume: warning:") and str(last) in line]
    assert warnings, out
    assert f"--resume: no loadable checkpoint in {run_dir}; it is kept, and a new run starts." in out
    assert new != run_dir and versions(root, "baseline") == ["version_0", "version_1"]
    assert best.read_bytes() == kept
    summary = json.loads((new / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs_completed"] == EPOCHS


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "truncated",
        "empty",
    ],
)
def test_broken_checkpoint_warning_does_not_call_it_a_payload(tmp_path, kind, baseline_run):
    """The warning for a damaged file says it is damaged, not that it holds code."""
    from kdbias.runs import CheckpointError, load_checkpoint

    path = tmp_path / "last.ckpt"
    path.write_bytes(BROKEN[kind]((baseline_run / "checkpoints" / "last.ckpt").read_bytes()))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "Python objects" not in str(error.value)


CHANGES = {
    "optim.lr": (["--model.optim.lr", "0.1"], "model.optim.lr: 0.001 -> 0.1"),
    "arch_kwargs": (["--model.arch_kwargs", json.dumps({**TINY_VIT, "depth": 3})], "model.arch_kwargs.depth: 2 -> 3"),
    "batch_size": (["--data.batch_size", "8"], "data.batch_size: 16 -> 8"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_resume_with_changed_configuration_is_refused(capsys, crashed, change):
    root, run_dir = crashed
    before = snapshot(root)
    extra, listed = CHANGES[change]
    line = cli_error(
        "baseline", smoke_args("baseline", root, "--trainer.max_epochs", str(EPOCHS), "--resume", *extra), capsys
    )
    assert listed in line and str(run_dir) in line and "--allow_changed trainer.max_epochs" in line
    assert snapshot(root) == before


@pytest.mark.parametrize("spelling", ["plain", "list"])
def test_resume_with_fewer_epochs_than_trained_is_refused(capsys, crashed, spelling):
    root, run_dir = crashed
    before = snapshot(root)
    allow = "trainer.max_epochs" if spelling == "plain" else "[trainer.max_epochs]"
    line = cli_error(
        "baseline",
        smoke_args("baseline", root, "--trainer.max_epochs", "1", "--resume", "--allow_changed", allow),
        capsys,
    )
    assert "trainer.max_epochs 1 is below the 2 epochs" in line
    assert snapshot(root) == before


@pytest.mark.parametrize("spelling", ["plain", "list"])
def test_allow_changed_learning_rate_is_refused(capsys, crashed, spelling):
    root, _ = crashed
    before = snapshot(root)
    allow = "model.optim.lr" if spelling == "plain" else "[model.optim.lr]"
    line = cli_error(
        "baseline",
        smoke_args(
            "baseline",
            root,
            "--trainer.max_epochs",
            str(EPOCHS),
            "--resume",
            "--allow_changed",
            allow,
            "--model.optim.lr",
            "0.1",
        ),
        capsys,
    )
    assert "--allow_changed accepts only trainer.max_epochs, got model.optim.lr" in line
    assert snapshot(root) == before


BATCHES, LR, FLOOR = 8, 1e-3, 0.1


@pytest.fixture(scope="module")
def stretched(tmp_path_factory) -> tuple:
    """Planned for 3 epochs (warm-up 1 epoch, floor 0.1), crashed in epoch 2, resumed with
    ``--trainer.max_epochs 4 --allow_changed [trainer.max_epochs]``: the run folder, the
    logged learning rate per step, the final ``last.ckpt``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("stretched") / "runs"
        schedule = [
            "--model.optim.warmup_epochs",
            "1",
            "--model.optim.min_lr_ratio",
            str(FLOOR),
            "--trainer.log_every_n_steps",
            "1",
            "--trainer.limit_train_batches",
            str(BATCHES),
        ]
        run_dir = interrupted_run("baseline", root, *schedule, epochs=EPOCHS)
        resumed = run_experiment(
            "baseline",
            root,
            *schedule,
            "--trainer.max_epochs",
            "4",
            "--resume",
            "--allow_changed",
            "[trainer.max_epochs]",
        )
    finally:
        torch.set_num_threads(threads)
    assert resumed == run_dir and versions(root, "baseline") == ["version_0"]
    logged = dict(read_scalars(run_dir, "lr-AdamW"))  # the last event of a step wins
    return run_dir, logged, load(run_dir / "checkpoints" / "last.ckpt")


def test_resume_with_more_epochs_stretches_the_schedule(stretched):
    """4 epochs in the same folder; epochs 0-1 followed the 3-epoch cosine, epochs 2-3 the one
    stretched to 4 epochs, which reaches its floor at the new last step, not the old one."""
    run_dir, logged, final = stretched
    total = 4 * BATCHES
    assert json.loads((run_dir / "summary.json").read_text())["epochs_completed"] == 4
    assert (final["epoch"], final["global_step"]) == (3, total)
    fn_state = final["lr_schedulers"][0]["lr_lambdas"][0]
    assert fn_state["total_steps"] == total and fn_state["warmup_steps"] == BATCHES
    assert final["lr_schedulers"][0]["last_epoch"] == total
    assert [g["lr"] for g in final["optimizer_states"][0]["param_groups"]] == [pytest.approx(LR * FLOOR)] * 2

    assert sorted(logged) == list(range(total))
    old, new = WarmupCosine(BATCHES, 3 * BATCHES, FLOOR), WarmupCosine(BATCHES, total, FLOOR)
    first_resumed = 2 * BATCHES  # checked by the next test
    wrong = [
        (step, logged[step])
        for step in range(total)
        if step != first_resumed
        and logged[step] != pytest.approx(LR * (old if step < first_resumed else new)(step), rel=1e-5)
    ]
    assert wrong == []
    assert logged[3 * BATCHES - 1] > LR * (FLOOR + 0.1)  # the old last step is far from the floor
    assert new(total) == pytest.approx(FLOOR) and logged[total - 1] < LR * (FLOOR + 0.01)


def test_first_resumed_step_uses_the_stretched_schedule(stretched):
    _, logged, _ = stretched
    new = WarmupCosine(BATCHES, 4 * BATCHES, FLOOR)
    assert logged[2 * BATCHES] == pytest.approx(LR * new(2 * BATCHES), rel=1e-5)


def test_a_finished_runs_last_ckpt_keeps_steps_and_drops_the_optimiser_moments(tmp_path):
    """Once complete, a run is never resumed: ``last.ckpt`` keeps its weights, step counts and
    optimiser hyper-parameters but not the per-weight moments, and is offered for resuming no more."""
    import io

    import torch

    from kdbias.runs import COMPACTED_KEY, compact_finished_checkpoint, newest_loadable_checkpoint

    weights = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(weights.parameters(), lr=1e-3)
    for _ in range(3):
        weights(torch.randn(4, 64)).sum().backward()
        optimizer.step()
    state = {"state_dict": weights.state_dict(), "loops": {}, "epoch": 2, "optimizer_states": [optimizer.state_dict()]}
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    path = folder / "last.ckpt"
    torch.save(state, path)
    full = path.stat().st_size
    assert newest_loadable_checkpoint(tmp_path) == path
    compact_finished_checkpoint(path)
    kept = torch.load(path, weights_only=True)
    assert kept[COMPACTED_KEY] is True and kept["epoch"] == 2
    for key, value in weights.state_dict().items():
        assert torch.equal(kept["state_dict"][key], value)
    (saved,) = kept["optimizer_states"]
    assert saved["param_groups"] == optimizer.state_dict()["param_groups"]
    assert {index: set(entry) for index, entry in saved["state"].items()} == {0: {"step"}, 1: {"step"}}
    assert float(saved["state"][0]["step"]) == 3.0
    buffer = io.BytesIO()
    torch.save({"state_dict": weights.state_dict()}, buffer)
    assert path.stat().st_size < full / 2 and path.stat().st_size < 2 * len(buffer.getvalue())
    assert newest_loadable_checkpoint(tmp_path) is None  # never resumed from
    compact_finished_checkpoint(path)  # a second call changes nothing
    assert torch.load(path, weights_only=True)[COMPACTED_KEY] is True
