"""The speed paths change nothing but speed: channels_last and torch.compile give the eager
logits, and the training step never reads a tensor back to the host."""

import copy

import lightning as L
import pytest
import torch

from kdbias.benchmark import HostSyncCounter
from kdbias.data import CIFARDataModule
from kdbias.modules import CKADistillModule, KLDistillModule, TeacherModule

TINY_VIT = {"depth": 1}


def tiny_deit(**kwargs) -> TeacherModule:
    return TeacherModule("deit_tiny_p4", num_classes=10, dataset="digits", model_kwargs=TINY_VIT,
                         lr=1e-3, warmup_epochs=0, **kwargs)


def tiny_kl() -> KLDistillModule:
    return KLDistillModule("deit_tiny_p4", tiny_deit(), num_classes=10, dataset="digits",
                           model_kwargs=TINY_VIT, lr=1e-3, warmup_epochs=0)


def tiny_cka() -> CKADistillModule:
    return CKADistillModule(
        "deit_tiny_p4", teacher="dinov2_vits14", teacher_pretrained=None, teacher_image_size=56,
        layer_pairs=((0, 0),), teacher_kwargs={"depth": 1}, num_classes=10, dataset="digits",
        model_kwargs=TINY_VIT, lr=1e-3, warmup_epochs=0,
    )


# -- channels_last --------------------------------------------------------------------------
def test_channels_last_cnn_matches_contiguous_copy():
    torch.manual_seed(0)
    module = TeacherModule("resnet18_cifar", num_classes=10, dataset="digits").eval()
    assert module.channels_last
    assert module.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    reference = copy.deepcopy(module)
    reference.model.to(memory_format=torch.contiguous_format)
    reference.channels_last = False
    assert reference.model.conv1.weight.is_contiguous()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        fast, slow = module(x), reference(x)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


def test_vit_stays_in_default_memory_format():
    module = tiny_deit()
    assert not module.channels_last


# -- torch.compile ------------------------------------------------------------------------------
def _compiled_vs_eager(monkeypatch=None, backend=None):
    if backend is not None:  # same wiring, a backend that needs no C++ toolchain and compiles in seconds
        original = torch.nn.Module.compile
        monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: original(self, backend=backend, **kw))
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = tiny_deit().eval()
    compiled = tiny_deit(compile=True).eval()
    assert set(compiled.state_dict()) == set(eager.state_dict())  # compiled in place: same keys
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected, got = eager(x), compiled(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


def test_compile_wiring_matches_eager_logits(monkeypatch):
    _compiled_vs_eager(monkeypatch, backend="aot_eager")


@pytest.mark.slow  # inductor's C++ code generation takes over a minute on 2 CPU cores
def test_compile_inductor_matches_eager_logits():
    _compiled_vs_eager()


# -- no host syncs in the hot loop ------------------------------------------------------------------
def test_host_sync_counter_counts_and_restores():
    t = torch.tensor([1.5])
    with HostSyncCounter() as counter:
        t.item()
        bool(t > 0)
        float(t)
        t.tolist()
        t.sum()  # not a sync
    assert counter.calls == {"item": 1, "__bool__": 1, "__float__": 1, "tolist": 1}
    assert "item" not in torch.Tensor.__dict__ and "__bool__" not in torch.Tensor.__dict__
    with HostSyncCounter() as again:
        pass
    assert again.total == 0 and t.item() == 1.5


def _fit_counting_syncs(module, datamodule, tmp_path, steps=3) -> HostSyncCounter:
    counter = HostSyncCounter()
    original = module.training_step
    calls = []

    def counted_training_step(*args, **kwargs):
        calls.append(1)
        with counter:
            return original(*args, **kwargs)

    module.training_step = counted_training_step
    trainer = L.Trainer(max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=datamodule)
    assert len(calls) == steps
    return counter


@pytest.mark.parametrize("factory", [tiny_deit, tiny_kl, tiny_cka], ids=["teacher", "kl", "cka"])
@pytest.mark.parametrize("mix", [None, "cutmix"])
def test_training_step_makes_no_host_sync(factory, mix, tmp_path):
    torch.manual_seed(0)
    dm = CIFARDataModule("digits", batch_size=16, num_workers=0, mix=mix, mix_prob=0.5)
    counter = _fit_counting_syncs(factory(), dm, tmp_path)
    assert counter.total == 0, f"host reads in training_step: {dict(counter.calls)}"


@pytest.mark.parametrize("mix", [None, "cutmix", "mixup"])
def test_batch_augmentation_makes_no_host_sync(mix, digits_dm):
    dm = CIFARDataModule("digits", batch_size=16, num_workers=0, mix=mix, mix_prob=0.5)
    dm.train_images, dm.train_labels = digits_dm.train_images, digits_dm.train_labels
    images, labels = dm.train_images[:16], dm.train_labels[:16]
    with HostSyncCounter() as counter:
        for _ in range(3):
            dm.augment_batch(images, labels)
    assert counter.total == 0, dict(counter.calls)
