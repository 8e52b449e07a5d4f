"""The speed paths change nothing but speed, and the training step never reads the device.

Host reads: a ``TorchFunctionMode`` (:class:`experiments.benchmark.measure.HostReadCounter`)
counts ``item``/``tolist``/``cpu``/``__bool__``/``__float__``/``__int__``/``numpy`` calls in
every step of the real experiment Trainer (KDBiasCLI, smoke preset, tiny networks, analytics
off): a step that does not log must make none (logging steps read their scalars by design).
"""

import copy

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from speed_helpers import PerStepReads, real_trainer

from experiments.benchmark.experiment import fit
from experiments.benchmark.measure import CudaSyncCounter, HostReadCounter
from kdbias.data import CIFARDataModule
from kdbias.modules import TeacherModule


def tiny_deit(**kwargs) -> TeacherModule:
    return TeacherModule("deit_tiny_p4", num_classes=10, dataset="digits", arch_kwargs={"depth": 1}, **kwargs)


# -- no host reads in the hot loop -------------------------------------------------------------------
@pytest.mark.parametrize("run", ["baseline", "teacher_resnet18", "exp1", "exp3_112"])
def test_non_logging_steps_of_the_real_trainer_read_nothing(run, dry_plan):
    # teacher_resnet18 trains with CutMix (mixed soft targets), exp1 with a frozen CNN teacher
    # (soft KL), exp3_112 with DINOv2 block taps (CKA + token loss)
    built = real_trainer(dry_plan, run, max_steps=8, **{"trainer.log_every_n_steps": 3})
    probe = PerStepReads(first=1, last=6)
    built.trainer.callbacks.append(probe)
    fit(built, dry_plan)
    assert [s["batch"] for s in probe.steps] == [1, 2, 3, 4, 5, 6]
    assert [s["logging"] for s in probe.steps] == [False, True, False, False, True, False]
    reads = {s["batch"]: s["reads"] for s in probe.steps if not s["logging"]}
    sites = probe.steps[-1]["sites"]
    assert reads == dict.fromkeys(reads, 0), f"host reads in non-logging steps of {run}: {reads}; sites: {sites}"


@pytest.mark.parametrize("mix", [None, "cutmix", "mixup"])
def test_batch_augmentation_makes_no_host_read(mix, digits_dm):
    dm = CIFARDataModule("digits", batch_size=16, num_workers=0, mix=mix, mix_prob=0.5)
    dm.train_images, dm.train_labels = digits_dm.train_images, digits_dm.train_labels
    images, labels = dm.train_images[:16], dm.train_labels[:16]
    counter = HostReadCounter()
    counter.start()
    try:
        for _ in range(3):
            dm.augment_batch(images, labels)
    finally:
        counter.stop()
    assert counter.total == 0, dict(counter.sites)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="synchronising CUDA calls need a GPU")
def test_non_logging_steps_make_no_cuda_sync(tmp_path):
    from experiments.benchmark.experiment import Plan

    plan = Plan.make(False, tmp_path / "runs")
    plan.tiny, plan.batch_size = True, 64
    built = real_trainer(plan, "exp3_112", max_steps=6)
    counter = CudaSyncCounter()

    class Window(Callback):  # from the end of batch 1 to the end of batch 4: three whole steps
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 1:
                counter.start()
            if batch_idx == 4:
                counter.stop()

    built.trainer.callbacks.append(Window())
    fit(built, plan)
    assert counter.count == 0, counter.examples


# -- channels_last ---------------------------------------------------------------------------------------
def test_channels_last_cnn_matches_contiguous_copy():
    module = TeacherModule("resnet18_cifar", num_classes=10, dataset="digits").eval()
    assert module.channels_last
    assert module.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    reference = copy.deepcopy(module)
    reference.model.to(memory_format=torch.contiguous_format)
    reference.channels_last = False
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        fast, slow = module(x), reference(x)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


def test_vit_stays_in_default_memory_format():
    assert not tiny_deit().channels_last
