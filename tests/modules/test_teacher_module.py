import math

import lightning as L
import pytest
import torch
from helpers import DIGITS, OPTIM

from kdbias.models.input_adapter import InputAdapter
from kdbias.modules import Optimization, TeacherModule
from kdbias.modules.schedule import WarmupCosine


def test_warmup_cosine_matches_closed_form():
    schedule = WarmupCosine(warmup_steps=4, total_steps=24, min_ratio=0.1)
    assert [schedule(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert schedule(4) == pytest.approx(1.0)
    # halfway through the cosine part: min + (1 - min) / 2
    assert schedule(14) == pytest.approx(0.1 + 0.9 * 0.5)
    assert schedule(24) == pytest.approx(0.1)
    for step in range(4, 24):
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 4) / 20))
        assert schedule(step) == pytest.approx(expected)


def test_input_adapter_renormalises_exactly():
    data_mean, data_std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    model_mean, model_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    raw = torch.rand(2, 3, 8, 8)
    dm = torch.tensor(data_mean).view(1, 3, 1, 1)
    ds = torch.tensor(data_std).view(1, 3, 1, 1)
    mm = torch.tensor(model_mean).view(1, 3, 1, 1)
    ms = torch.tensor(model_std).view(1, 3, 1, 1)
    out = InputAdapter(data_mean, data_std, model_mean, model_std)((raw - dm) / ds)
    torch.testing.assert_close(out, (raw - mm) / ms, atol=1e-5, rtol=1e-5)
    x = torch.randn(2, 3, 8, 8)
    assert InputAdapter(data_mean, data_std)(x) is x  # identity: no work at all
    resized = InputAdapter(data_mean, data_std, image_size=16)(x)
    assert resized.shape == (2, 3, 16, 16)


def test_teacher_loss_is_cross_entropy_with_soft_targets():
    module = TeacherModule(
        "deit_tiny_p4",
        num_classes=10,
        dataset="digits",
        arch_kwargs={"depth": 1},
        optim=Optimization(label_smoothing=0.1),
    )
    images = torch.randn(4, 3, 32, 32)
    soft = torch.softmax(torch.randn(4, 10), dim=-1)
    losses, logits = module.training_losses(images, soft)
    smoothed = soft * 0.9 + 0.1 / 10
    expected = -(smoothed * torch.log_softmax(logits.float(), -1)).sum(-1).mean()
    torch.testing.assert_close(losses["loss"], expected)


def test_convnext_teacher_sees_imagenet_statistics():
    module = TeacherModule("convnextv2_tiny_cifar", num_classes=10, dataset="cifar10")
    assert module.input_adapter.renormalise
    assert not TeacherModule("resnet18_cifar", dataset="cifar10").input_adapter.renormalise


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_optimiser_groups_exclude_norms_and_biases(optimizer):
    module = TeacherModule(
        "deit_tiny_p4",
        num_classes=10,
        dataset="digits",
        arch_kwargs={"depth": 1},
        optim=Optimization(optimizer, weight_decay=0.05),
    )
    module.trainer = type("T", (), {"estimated_stepping_batches": 10, "max_epochs": 1})()
    config = module.configure_optimizers()
    groups = config["optimizer"].param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, param in module.model.named_parameters():
        no_decay = param.ndim <= 1 or name in ("pos_embed", "cls_token")
        assert (id(param) not in decayed) == no_decay, name


TINY_RESNET = {"layers": [1, 1, 1, 1], "channels": [16, 32, 32, 32]}


def test_teacher_fit_on_digits_beats_chance_widely(digits_dm, tmp_path):
    torch.manual_seed(0)
    module = TeacherModule(
        "resnet18_cifar",
        num_classes=10,
        dataset="digits",
        arch_kwargs=TINY_RESNET,
        optim=Optimization("adamw", lr=3e-3, weight_decay=1e-4, warmup_epochs=0.0),
    )
    trainer = L.Trainer(
        max_epochs=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=digits_dm)  # 4 x 44 steps of 32 images
    assert float(trainer.callback_metrics["val/acc"]) > 0.5  # chance is 0.1


def test_optimization_rejects_values_that_cannot_train():
    for bad in (
        dict(lr=0),
        dict(lr=-1),
        dict(weight_decay=-0.1),
        dict(warmup_epochs=-1),
        dict(min_lr_ratio=1.5),
        dict(min_lr_ratio=-0.1),
        dict(momentum=1.0),
        dict(label_smoothing=1.0),
        dict(optimizer="lion"),
    ):
        with pytest.raises(ValueError, match="optim\\."):
            Optimization(**bad)
    assert Optimization.of({"lr": 0.1}) == Optimization(lr=0.1) and Optimization.of(None) == Optimization()


def test_any_timm_model_is_a_student_by_name():
    module = TeacherModule(
        "vit_small_patch16_224", arch_kwargs={"img_size": 32, "patch_size": 4, "depth": 1}, dataset="digits"
    )
    assert module.model.patch_embed.grid_size == (8, 8)
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert not module.input_adapter.renormalise  # trained from scratch: the dataset's statistics
    with pytest.raises(ValueError, match="unknown model"):
        TeacherModule("no_such_model_anywhere", dataset="digits")


def test_hparams_are_plain_values_that_reload():
    import yaml

    module = TeacherModule(
        "deit_tiny_p4", arch_kwargs={"depth": 1}, dataset="digits", optim=Optimization("sgd", lr=0.1)
    )
    assert module.hparams["optim"] == Optimization("sgd", lr=0.1).as_dict()
    assert yaml.safe_load(yaml.safe_dump(dict(module.hparams))) == dict(module.hparams)
    assert TeacherModule(**module.hparams).optim == module.optim


def test_a_checkpoint_without_the_student_keys_is_refused_as_a_teacher(tmp_path):
    """A checkpoint whose network is not under ``student.model.*`` is no kdbias checkpoint:
    one line naming the file, never a silently empty teacher."""
    from kdbias.runs import CheckpointError
    from kdbias.teacher import FrozenTeacher

    module = TeacherModule("resnet18_cifar", arch_kwargs=dict(TINY_RESNET), optim=OPTIM, **DIGITS)
    foreign = {k.removeprefix("student."): v for k, v in module.state_dict().items()}
    path = tmp_path / "foreign.ckpt"
    torch.save(
        {"state_dict": foreign, "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": L.__version__},
        path,
    )
    with pytest.raises(CheckpointError, match="foreign.ckpt does not fit resnet18_cifar"):
        FrozenTeacher.from_checkpoint(path, "digits", 10)
