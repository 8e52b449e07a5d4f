"""A NaN loss component stops the fit, names the training batch and the component, and
keeps the last finite checkpoint."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from helpers import TINY_VIT
from lightning.pytorch.callbacks import ModelCheckpoint
from resilience_helpers import cli_error, smoke_args, versions

from kdbias.callbacks.nonfinite import NonFiniteGuard, NonFiniteLossError
from kdbias.data import CIFARDataModule
from kdbias.modules import KLDistillModule, Optimization, TeacherModule

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\)"),  # inside Lightning
]

BATCHES, NAN_FROM = 3, 4  # NaN teacher logits from training batch 4: epoch 1, batch 1


def _fit_with_nan_teacher(folder, check_every: int) -> tuple[str, L.Trainer]:
    """A tiny KLDistillModule whose teacher logits are NaN from training batch ``NAN_FROM``
    on; returns the guard's message and the trainer."""
    L.seed_everything(0)
    optim = Optimization(lr=1e-3, warmup_epochs=0.0)
    teacher = TeacherModule("deit_tiny_p4", num_classes=10, dataset="digits", arch_kwargs=TINY_VIT, optim=optim)
    module = KLDistillModule(
        arch="deit_tiny_p4", teacher=teacher, num_classes=10, dataset="digits", arch_kwargs=TINY_VIT, optim=optim
    )
    network = module.teacher.network
    forward = network.forward

    def nan_from_batch(images):
        logits = forward(images)
        return logits + math.nan if module.trainer.training and module.trainer.global_step >= NAN_FROM else logits

    network.forward = nan_from_batch
    checkpoints = ModelCheckpoint(dirpath=folder, save_last=True)
    trainer = L.Trainer(
        default_root_dir=folder,
        accelerator="cpu",
        max_epochs=3,
        limit_train_batches=BATCHES,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[checkpoints, NonFiniteGuard(check_every)],
    )
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(module, datamodule=CIFARDataModule("digits", batch_size=8))
    return str(info.value), trainer


@pytest.mark.parametrize("check_every", [1, 50], ids=["checked-every-step", "checked-at-epoch-end"])
def test_nan_teacher_logits_stop_the_fit_and_keep_the_finite_checkpoint(tmp_path, check_every):
    message, trainer = _fit_with_nan_teacher(tmp_path, check_every)
    assert "at training batch " in message and " (epoch 1)" in message  # the number: next test
    assert "loss component 'kd'" in message and "'ce'" not in message  # the CE stayed finite
    assert f"The last finite checkpoint is kept at {tmp_path / 'last.ckpt'}" in message
    assert "--resume" in message

    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == BATCHES and last["epoch"] == 0  # from before the NaN
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values() if value.is_floating_point())
    # stopped at once (every step), or at the validation that would run on the NaN weights
    assert trainer.global_step == (NAN_FROM + 1 if check_every == 1 else 2 * BATCHES)


def test_nan_message_names_the_bad_batch(tmp_path):
    message, _ = _fit_with_nan_teacher(tmp_path, check_every=1)
    assert f"at training batch {NAN_FROM} (epoch 1)" in message


def test_nan_loss_through_the_command_line_is_one_line(tmp_path, capsys):
    """``--model.optim.lr 1e30`` makes the loss non-finite after the first step (batch 1, 0-based)."""
    runs = tmp_path / "runs"
    line = cli_error(
        "baseline",
        smoke_args(
            "baseline",
            runs,
            "--model.optim.lr",
            "1e30",
            "--model.optim.warmup_epochs",
            "0",
            "--trainer.log_every_n_steps",
            "1",
        ),
        capsys,
    )
    assert "Non-finite total loss at training batch 1 (epoch 0)" in line  # 0-based: the second batch
    assert versions(runs, "baseline") == []
    assert "--resume" not in line  # nothing to resume: no checkpoint, no folder
