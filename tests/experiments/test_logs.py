"""What a run logs: one events file, each test pass under its own tags, one learning-rate curve
per schedule, the method's parameters in HPARAMS, user loggers kept, per-epoch metrics.csv."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from helpers import read_summary, run_experiment, scalars
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.types import LRSchedulerConfig

from kdbias.callbacks.lr import schedule_curves
from kdbias.logs import RunLogger, run_loggers

EPOCHS, BATCHES, LABEL = 2, 3, 3
# Not in HPARAMS: LightningCLI's bookkeeping and where/how the data is read.
NOT_METHOD = {"_instantiator", "_class_path", "data_dir", "num_workers", "pin_memory", "verify_md5"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A baseline run of 2 epochs whose last epoch ends with a constant head (predicts
    ``LABEL``): ``best.ckpt`` is epoch 0, the last weights score the label's share; a
    CSVLogger given as the trainer's logger; every step logged."""
    root = tmp_path_factory.mktemp("logs")
    run_dir = run_experiment(
        "baseline",
        root / "runs",
        "--trainer.max_epochs",
        str(EPOCHS),
        "--trainer.limit_train_batches",
        str(BATCHES),
        "--trainer.limit_val_batches",
        "3",
        "--trainer.limit_test_batches",
        "2",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.callbacks+=helpers.ConstantHeadAt",
        f"--trainer.callbacks.epoch={EPOCHS - 1}",
        f"--trainer.callbacks.label={LABEL}",
        "--trainer.logger=CSVLogger",
        f"--trainer.logger.save_dir={root / 'csv'}",
    )
    return SimpleNamespace(dir=run_dir, csv=root / "csv", summary=read_summary(run_dir), scalars=scalars(run_dir))


def test_one_events_file_per_run(run):
    assert len(list(run.dir.glob("events.out.tfevents.*"))) == 1


def test_each_test_pass_has_its_own_tags_once(run):
    summary, logged = run.summary, run.scalars
    assert summary["selected_checkpoint"] == "checkpoints/best.ckpt" and summary["best_epoch"] == 0  # precondition
    with np.load(run.dir / "test_predictions.npz", allow_pickle=False) as data:
        labels = data["label"]  # the tested images (same in both passes)
    share = float(np.mean(labels == LABEL))  # what a head that always answers LABEL scores
    assert summary["test_acc_last"] == pytest.approx(share, abs=1e-6)
    assert summary["test_acc"] != pytest.approx(share, abs=1e-6)  # the two passes are told apart
    step = EPOCHS * BATCHES
    assert logged["test/acc"] == [(step, pytest.approx(summary["test_acc"], abs=1e-7))]
    assert logged["test/loss"] == [(step, pytest.approx(summary["test_loss"], abs=1e-6))]
    assert logged["test_last/acc"] == [(step, pytest.approx(summary["test_acc_last"], abs=1e-7))]
    assert sorted(tag for tag in logged if tag.startswith("test_last/")) == ["test_last/acc", "test_last/loss"]


def test_one_learning_rate_curve_for_groups_that_share_a_schedule(run):
    state = torch.load(run.dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(state["optimizer_states"][0]["param_groups"]) == 2  # precondition: decayed and undecayed
    assert sorted(tag for tag in run.scalars if tag.startswith("lr")) == ["lr-AdamW"]
    config = yaml.safe_load((run.dir / "config.yaml").read_text())["model"]["optim"]
    total = EPOCHS * BATCHES
    warmup = min(int(total * config["warmup_epochs"] / EPOCHS), total - 1)

    def expected(step: int) -> float:  # linear warm-up from lr / (warmup + 1), then cosine to min_lr_ratio
        if step < warmup:
            return config["lr"] * (step + 1) / (warmup + 1)
        progress = (step - warmup) / (total - warmup)
        return config["lr"] * (
            config["min_lr_ratio"] + (1 - config["min_lr_ratio"]) * (1 + math.cos(math.pi * progress)) / 2
        )

    curve = run.scalars["lr-AdamW"]
    assert [s for s, _ in curve] == list(range(total))
    assert [v for _, v in curve] == pytest.approx([expected(s) for s in range(total)], rel=1e-6)


def _hparams_entry(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    found: dict = {}
    for events in run_dir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        found.update(data.session_start_info.hparams)
    return found


def _flat(config: dict, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in config.items():
        keys |= _flat(value, f"{prefix}{key}/") if isinstance(value, dict) and value else {f"{prefix}{key}"}
    return keys


def test_hparams_lists_the_method_parameters_only(run):
    listed = set(_hparams_entry(run.dir))
    saved = _flat(yaml.safe_load((run.dir / "hparams.yaml").read_text()))  # every constructor argument
    assert {"_instantiator", "data_dir", "num_workers", "pin_memory"} <= saved  # hparams.yaml stays whole
    assert listed == {key for key in saved if key.split("/")[0] not in NOT_METHOD}
    assert {"arch", "batch_size", "mix", "optim/lr", "seed"} <= listed


def test_a_user_logger_is_kept_beside_tensorboard(run):
    (path,) = run.csv.rglob("metrics.csv")
    rows = list(csv.DictReader(path.open()))
    final = {key: float(v) for row in rows for key, v in row.items() if v and key.startswith("test")}
    assert final["test/acc"] == pytest.approx(run.summary["test_acc"], abs=1e-7)
    assert final["test_last/acc"] == pytest.approx(run.summary["test_acc_last"], abs=1e-7)
    assert any(row.get("train/loss") for row in rows) and any(row.get("lr-AdamW") for row in rows)


def test_metrics_csv_has_each_epochs_train_and_val_metrics(run):
    rows = list(csv.DictReader((run.dir / "metrics.csv").open()))
    assert [(r["epoch"], r["step"]) for r in rows] == [(str(e + 1), str((e + 1) * BATCHES)) for e in range(EPOCHS)]
    for row, epoch in zip(rows, range(EPOCHS)):
        step = (epoch + 1) * BATCHES - 1  # Lightning logs epoch-level metrics at the epoch's last step
        for tag in ("train/acc", "val/acc", "val/loss", "train/loss", "lr-AdamW"):
            assert float(row[tag]) == dict(run.scalars[tag])[step], (tag, epoch)


def test_logger_false_keeps_the_record_and_without_holdout_both_tags_hold_the_one_pass(tmp_path):
    run_dir = run_experiment("baseline", tmp_path / "runs", "--trainer.logger", "false", "--data.holdout", "0")
    summary, logged = read_summary(run_dir), scalars(run_dir)
    assert summary["selected_checkpoint"] == "checkpoints/last.ckpt" and len(list(run_dir.glob("events.*"))) == 1
    assert logged["test/acc"] == [(2, pytest.approx(summary["test_acc"], abs=1e-7))]
    assert logged["test_last/acc"] == [(2, pytest.approx(summary["test_acc_last"], abs=1e-7))]


def test_loggers_as_lightningcli_passes_them(tmp_path):
    user = CSVLogger(tmp_path / "csv")
    for given, extra in ((None, []), (True, []), (False, []), (user, [user]), ([user], [user])):
        loggers = run_loggers(tmp_path, "exp", "version_0", given)
        assert isinstance(loggers[0], RunLogger) and loggers[1:] == extra
        assert Path(loggers[0].log_dir) == tmp_path / "exp" / "version_0"
    with pytest.raises(ValueError, match="trainer.logger"):
        run_loggers(tmp_path, "exp", "version_0", "wandb")


def _trainer(optimizer, scheduler=None, name=None):
    configs = [] if scheduler is None else [LRSchedulerConfig(scheduler, name=name)]
    return SimpleNamespace(optimizers=[optimizer], lr_scheduler_configs=configs)


def test_groups_are_merged_only_when_their_schedule_is_the_same():
    a, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))

    def sgd(*lrs):
        groups = [{"params": [p], "lr": lr} for p, lr in zip((a, b, c), lrs)]
        return torch.optim.SGD(groups, lr=0.1)

    def halve(step):
        return 0.5**step

    same = sgd(0.1, 0.1, 0.1)
    assert list(schedule_curves(_trainer(same, torch.optim.lr_scheduler.LambdaLR(same, halve)))) == ["lr-SGD"]
    mixed = sgd(0.1, 0.2, 0.1)
    tags = schedule_curves(_trainer(mixed, torch.optim.lr_scheduler.LambdaLR(mixed, halve), name="lr"))
    assert {tag: index for tag, (_, index) in tags.items()} == {"lr/pg1": 0, "lr/pg2": 1}
    own = sgd(0.1, 0.1, 0.1)
    functions = [halve, halve, lambda step: 1.0]
    assert list(schedule_curves(_trainer(own, torch.optim.lr_scheduler.LambdaLR(own, functions)))) == [
        "lr-SGD/pg1",
        "lr-SGD/pg3",
    ]
    other = sgd(0.1, 0.1, 0.1)
    step = torch.optim.lr_scheduler.StepLR(other, 1)
    assert list(schedule_curves(_trainer(other, step))) == ["lr-SGD/pg1", "lr-SGD/pg2", "lr-SGD/pg3"]
    constant = sgd(0.1, 0.1, 0.3)
    assert list(schedule_curves(_trainer(constant))) == ["lr-SGD/pg1", "lr-SGD/pg3"]


def test_one_test_pass_when_the_selected_checkpoint_holds_the_last_weights(tmp_path, monkeypatch):
    """One epoch: best.ckpt is saved after the last optimiser step, so the selected and the last
    weights are one set, tested once and logged under both tags with the same values."""
    from kdbias import logs

    tested = []
    real = logs.test_pass
    monkeypatch.setattr(logs, "test_pass", lambda *a, **k: tested.append(a[3]) or real(*a, **k))
    run_dir = run_experiment("baseline", tmp_path)
    assert len(tested) == 1 and str(tested[0]).endswith("best.ckpt")
    summary = read_summary(run_dir)
    assert summary["test_acc_last"] == summary["test_acc"]
    tags = scalars(run_dir)
    assert [v for _, v in tags["test/acc"]] == pytest.approx([v for _, v in tags["test_last/acc"]])
    assert len(tags["test/acc"]) == 1
