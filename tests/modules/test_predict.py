"""Raw DataModule batches, predict_step and students reloaded without their teacher, against
normalisation and accuracy written out here with numpy."""

import numpy as np
import pytest
import torch
from helpers import DIGITS, OPTIM, TINY_VIT, cka_module, kl_module, quiet_trainer, teacher_checkpoint
from lightning.pytorch.callbacks import ModelCheckpoint

from kdbias.modules import CKADistillModule, KLDistillModule, TeacherModule
from kdbias.teacher import FrozenTeacher

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*in eval mode at the start of training.*", "ignore:.*does not have many workers.*"
)
TINY_CONVNEXT = {"depths": [1, 1, 1, 1], "dims": [16, 16, 16, 16]}
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # the published statistics


def numpy_normalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, in float64 numpy, as float32."""
    x = images.numpy().astype(np.float64) / 255.0
    out = (x - np.asarray(mean)[None, :, None, None]) / np.asarray(std)[None, :, None, None]
    return torch.from_numpy(out.astype(np.float32))


def numpy_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(np.mean(logits.numpy().argmax(axis=1) == labels.numpy()))


@pytest.mark.parametrize(
    "arch, arch_kwargs",
    [("deit_tiny_p4", TINY_VIT), ("convnextv2_tiny_cifar", TINY_CONVNEXT)],
    ids=["deit_dataset_stats", "convnext_imagenet_stats"],
)
def test_raw_uint8_is_the_numpy_normalised_float(arch, arch_kwargs):
    module = TeacherModule(arch, arch_kwargs=arch_kwargs, optim=OPTIM, dataset="cifar10", num_classes=10).eval()
    raw = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8))
    reference = numpy_normalised(raw, CIFAR10_MEAN, CIFAR10_STD)
    torch.testing.assert_close(module.dataset_normalised(raw), reference, atol=1e-6, rtol=0)
    assert module.dataset_normalised(reference) is reference  # float: already normalised, unchanged
    with torch.no_grad():
        logits = module(raw)
        torch.testing.assert_close(logits, module(reference))
        torch.testing.assert_close(module.predict_step((raw, torch.zeros(6)), 0), logits)
        torch.testing.assert_close(module.predict_step(raw, 0), logits)
    assert logits.shape == (6, 10) and logits.dtype == torch.float32


def test_frozen_teacher_refuses_raw_images(digits_dm):
    teacher = FrozenTeacher.from_module(TeacherModule("deit_tiny_p4", arch_kwargs=TINY_VIT, optim=OPTIM, **DIGITS))
    with pytest.raises(TypeError, match="normalise them first"):
        teacher.logits(digits_dm.fixed_subset("test", 2)[0])


def test_trainer_predict_and_test_on_raw_and_datamodule_batches(digits_dm, tmp_path):
    """``trainer.predict(module, datamodule=dm)`` (normalised by the DataModule) and the raw
    loaders alone give the same logits; a KL student and its teacher test raw batches too."""
    module = kl_module().eval()
    n = 2 * digits_dm.val_batch_size  # two batches of the official test split, in order
    images, labels = digits_dm.test_images[:n], digits_dm.test_labels[:n]
    reference = numpy_normalised(images, digits_dm.mean, digits_dm.std)
    with torch.no_grad():
        expected = module(reference)
        teacher_expected = module.teacher.logits(reference)
    trainer = quiet_trainer(tmp_path, limit_predict_batches=2, limit_test_batches=2)
    by_dm = torch.cat(trainer.predict(module, datamodule=digits_dm))
    raw = torch.cat(trainer.predict(module, dataloaders=digits_dm.predict_dataloader()))
    assert by_dm.shape == (n, 10) and by_dm.dtype == torch.float32
    torch.testing.assert_close(by_dm, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(raw, expected, atol=1e-5, rtol=1e-5)
    (result,) = trainer.test(module, dataloaders=digits_dm.test_dataloader(), verbose=False)  # raw uint8
    assert result["test/acc"] == pytest.approx(numpy_accuracy(expected, labels), abs=1e-6)
    assert result["test/teacher_acc"] == pytest.approx(numpy_accuracy(teacher_expected, labels), abs=1e-6)


def _fit_and_save(module, folder, datamodule):
    checkpoint = ModelCheckpoint(dirpath=folder, filename="last")
    trainer = quiet_trainer(
        folder, max_epochs=1, limit_train_batches=2, limit_val_batches=0, callbacks=[checkpoint], num_sanity_val_steps=0
    )
    trainer.fit(module, datamodule=datamodule)
    return folder / "last.ckpt"


def _no_teacher_builds(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was built")

    monkeypatch.setattr(FrozenTeacher, "from_checkpoint", refuse)
    monkeypatch.setattr(FrozenTeacher, "from_pretrained", refuse)


@pytest.mark.parametrize("kind", ["kl", "cka"])
def test_students_reload_without_their_teacher_and_predict_as_saved(kind, digits_dm, tmp_path, monkeypatch):
    if kind == "kl":
        module = kl_module(str(teacher_checkpoint(tmp_path / "teacher", digits_dm)))
    else:
        module = cka_module()
    path = _fit_and_save(module, tmp_path / "student", digits_dm)
    raw, _ = digits_dm.fixed_subset("test", 12)
    module.eval()
    with torch.no_grad():
        expected = module(raw)
        expected_teacher = module.teacher.blocks(module.dataset_normalised(raw), [0])[0]

    with monkeypatch.context() as patched:
        _no_teacher_builds(patched)
        loaded = type(module).load_from_checkpoint(path)
    assert loaded.teacher is None and dict(loaded.hparams) == dict(module.hparams)  # the teacher's description kept
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(raw), expected)
        torch.testing.assert_close(loaded.predict_step((raw, None), 0), expected)
    (logits, *_) = quiet_trainer(tmp_path, limit_predict_batches=1).predict(loaded, datamodule=digits_dm)
    assert logits.shape == (digits_dm.val_batch_size, 10)
    with pytest.raises(ValueError, match="attach_teacher"):
        quiet_trainer(tmp_path, max_epochs=1).fit(loaded, datamodule=digits_dm)

    teacher = loaded.attach_teacher()  # rebuilt from the saved description, when asked
    assert loaded.teacher is teacher and teacher.source == module.teacher.source
    with torch.no_grad():
        torch.testing.assert_close(teacher.blocks(loaded.dataset_normalised(raw), [0])[0], expected_teacher)
    if kind == "cka":
        assert loaded.grids == module.grids and loaded.teacher_blocks == module.teacher_blocks
        for mine, saved in zip(loaded.projectors, module.projectors):
            assert torch.equal(mine.weight, saved.weight)


def test_cka_without_teacher_needs_explicit_pairs():
    with pytest.raises(ValueError, match="relative"):
        CKADistillModule("deit_tiny_p4", teacher=None, layer_pairs="relative", arch_kwargs=TINY_VIT, **DIGITS)
    module = CKADistillModule("deit_tiny_p4", teacher=None, layer_pairs=[(0, 0)], arch_kwargs=TINY_VIT, **DIGITS)
    assert module.teacher is None and len(module.projectors) == 0


def test_kl_student_given_as_an_object_names_no_teacher_to_rebuild():
    module = KLDistillModule("deit_tiny_p4", teacher=None, arch_kwargs=TINY_VIT, optim=OPTIM, **DIGITS)
    with pytest.raises(ValueError, match="name no teacher"):
        module.attach_teacher()
