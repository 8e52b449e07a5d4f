"""Teacher snapshots, accuracy matching, fidelity on the selected checkpoint, the probe and random teachers."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import DIGITS, OPTIM, TINY_DINO, kl_module, quiet_trainer, teacher_checkpoint
from lightning.pytorch.callbacks import ModelCheckpoint

from kdbias import registry, runs, why
from kdbias.callbacks.fidelity import FIDELITY_FILE, OWN, FidelityCallback, read_fidelity_images
from kdbias.callbacks.snapshots import SnapshotCallback, read_snapshots
from kdbias.modules import KLDistillModule, ProbeTeacherModule
from kdbias.teacher import FrozenTeacher, RandomTeacher

pytestmark = pytest.mark.filterwarnings("ignore:.*in eval mode at the start of training.*")


def test_select_groups_and_dependencies():
    teachers, students = registry.select("plan")
    assert (teachers, students) == (registry.TEACHERS, registry.STUDENTS)
    teachers, students = registry.select("why")
    assert teachers[0] == "teacher_resnet18"  # exp1_cka and exp1_matched need the plan's ResNet-18
    assert set(students) == {e.name for e in registry.WHY_EXPERIMENTS.values() if e.role == "student"}
    both = registry.select("plan,why")
    assert both[1][: len(registry.STUDENTS)] == registry.STUDENTS
    for name in both[1]:
        assert set(registry.get(name).depends_on) <= set(both[0])
    with pytest.raises(ValueError, match="valid: plan, why"):
        registry.select("plan,extra")
    assert all(e.group == "plan" for e in registry.EXPERIMENTS.values())


def test_closest_snapshot_by_hand():
    assert why.closest_snapshot({"a": 0.80, "b": 0.86, "c": 0.95}, 0.87) == "b"
    assert why.closest_snapshot({"epoch001": 0.5, "epoch000": 0.7}, 0.6) == "epoch000"  # tie: the earlier
    with pytest.raises(ValueError):
        why.closest_snapshot({}, 0.5)


def _summary(run_dir, **items):
    (run_dir / "summary.json").write_text(
        json.dumps({"status": "complete", "seed": 0, "dataset": "digits", "preset": "smoke", **items})
    )
    (run_dir / "config.yaml").write_text("seed_everything: 0\npreset: smoke\ndata:\n  dataset: digits\n")


def test_matched_teacher_reads_held_out_accuracies_only(tmp_path):
    resnet = tmp_path / "teacher_resnet18" / "version_0"
    snaps = resnet / "checkpoints" / "snapshots"
    snaps.mkdir(parents=True)
    for name in ("epoch000.ckpt", "epoch001.ckpt", "best.ckpt"):
        (snaps / name if name != "best.ckpt" else resnet / "checkpoints" / name).write_bytes(b"x")
    (snaps / "index.json").write_text(
        json.dumps({"epoch000.ckpt": {"epoch": 0, "val_acc": 0.5}, "epoch001.ckpt": {"epoch": 1, "val_acc": 0.8}})
    )
    _summary(resnet, selected_checkpoint="checkpoints/best.ckpt", best_val_acc=0.94, test_acc=0.79)
    deit = tmp_path / "teacher_deit" / "version_0"
    deit.mkdir(parents=True)
    _summary(deit, best_val_acc=0.78, test_acc=0.51)  # the test accuracy would pick epoch000
    spec = registry.get("exp1_matched")
    assert why.matched_teacher_checkpoint(tmp_path, spec, "digits", "smoke") == snaps / "epoch001.ckpt"
    _summary(deit, best_val_acc=0.93, test_acc=0.5)
    assert why.resolve_teacher(tmp_path, spec, "digits", "smoke") == resnet / "checkpoints" / "best.ckpt"
    with pytest.raises(FileNotFoundError, match="teacher_deit"):
        why.matched_teacher_checkpoint(tmp_path / "empty", spec, "digits", "smoke")


def _logits(module, teacher, dm):
    student, reference = [], []
    with torch.no_grad():
        for raw, _ in dm.test_dataloader():
            images = dm.normalize_images(raw)
            student.append(module(images))
            reference.append(teacher.logits(images))
    return torch.cat(student), torch.cat(reference)


def test_snapshots_and_fidelity_on_the_selected_checkpoint_only(tmp_path, digits_dm):
    module = kl_module()
    random_teacher = FrozenTeacher.from_pretrained("resnet18_cifar", None, "digits", num_classes=10)
    fidelity = FidelityCallback({"own": OWN, "random_teacher": lambda: random_teacher}, primary="own")
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="best", monitor="val/acc", mode="max")
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[best, SnapshotCallback(tmp_path / "snaps", 1), fidelity],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=digits_dm)
    index = read_snapshots(tmp_path / "snaps")
    assert sorted(index) == ["epoch000.ckpt", "epoch001.ckpt"]
    assert all(0.0 <= v["val_acc"] <= 1.0 for v in index.values())
    trainer.test(module, datamodule=digits_dm, verbose=False)  # the last weights: not the selected checkpoint
    assert fidelity.results == {}
    trainer.test(module, datamodule=digits_dm, ckpt_path=best.best_model_path, verbose=False, weights_only=True)
    module.eval()
    student, own = _logits(module, module.teacher, digits_dm)
    _, rand = _logits(module, random_teacher, digits_dm)
    for key, teacher_logits in (("own", own), ("random_teacher", rand)):
        agree = (student.argmax(1) == teacher_logits.argmax(1)).double().mean()
        p, log_q = teacher_logits.double().softmax(1), student.double().log_softmax(1)
        kl = (p * (p.log() - log_q)).sum(1).mean()
        assert fidelity.results[key]["agreement"] == pytest.approx(float(agree))
        assert fidelity.results[key]["kl"] == pytest.approx(float(kl), rel=1e-5)
        per_image = read_fidelity_images(tmp_path / FIDELITY_FILE)[key]  # the same values, image by image
        assert per_image["agreement"].tolist() == (student.argmax(1) == teacher_logits.argmax(1)).tolist()
        assert per_image["kl"].mean() == pytest.approx(float(kl), rel=1e-5)
    assert "fidelity/agreement" in trainer.callback_metrics
    assert "fidelity/random_teacher/kl" in trainer.callback_metrics


def test_probe_trains_its_head_only_and_loads_as_a_resized_teacher(tmp_path, digits_dm):
    probe = ProbeTeacherModule(pretrained=None, arch_kwargs={"img_size": 28, **TINY_DINO}, optim=OPTIM, **DIGITS)
    backbone = {k: v.clone() for k, v in probe.model.state_dict().items() if not k.startswith("head")}
    head = probe.head.weight.clone()
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        callbacks=[ModelCheckpoint(tmp_path, "last")],
    )
    trainer.fit(probe, datamodule=digits_dm)
    assert all(torch.equal(v, probe.model.state_dict()[k]) for k, v in backbone.items())
    assert not torch.equal(head, probe.head.weight)
    teacher = FrozenTeacher.from_checkpoint(tmp_path / "last.ckpt", "digits", 10)
    assert teacher.has_head and teacher.adapter.image_size == 28 and teacher.family == "VisionTransformer"
    images, _ = digits_dm.fixed_subset("val", 4, seed=0)
    images = digits_dm.normalize_images(images)
    probe.eval()
    torch.testing.assert_close(teacher.logits(images), probe(images))
    student = KLDistillModule("deit_tiny_p4", str(tmp_path / "last.ckpt"), optim=OPTIM, **DIGITS)
    assert student.teacher.name == "dinov2_vits14_probe"


def test_random_teacher_is_seeded_and_untrained():
    spec = {"class_path": "kdbias.teacher.RandomTeacher", "init_args": {"arch": "resnet18_cifar"}}
    a = kl_module(spec).teacher
    b = KLDistillModule("deit_tiny_p4", RandomTeacher("resnet18_cifar"), optim=OPTIM, **DIGITS).teacher
    assert a.source == "random" and a.family == "ResNet" and a.has_head
    assert all(torch.equal(x, y) for x, y in zip(a.network.state_dict().values(), b.network.state_dict().values()))


def test_fidelity_references(tmp_path, digits_dm):
    path = teacher_checkpoint(tmp_path / "teacher_resnet18" / "version_0" / "checkpoints", digits_dm)
    _summary(path.parents[1], selected_checkpoint="checkpoints/last.ckpt")
    refs, primary = why.fidelity_references(registry.get("baseline"), runs.Run(tmp_path, "x", "digits", "smoke"), 10)
    assert primary is None and set(refs) == {"teacher_resnet18", why.RANDOM_KEY}
    assert refs["teacher_resnet18"]().family == "ResNet"
    refs, primary = why.fidelity_references(
        registry.get("exp_random_teacher"), runs.Run(tmp_path, "x", "digits", "smoke"), 10
    )
    assert refs == {why.RANDOM_KEY: OWN} and primary == why.RANDOM_KEY
    refs, primary = why.fidelity_references(registry.get("exp3"), runs.Run(tmp_path, "x", "digits", "smoke"), 10)
    assert refs == {} and primary is None  # no probe run: not measured
    probe = tmp_path / "teacher_dinov2_probe" / "version_0"
    (probe / "checkpoints").mkdir(parents=True)
    _summary(probe, selected_checkpoint="checkpoints/best.ckpt")
    refs, _ = why.fidelity_references(registry.get("exp3"), runs.Run(tmp_path, "x", "digits", "smoke"), 10)
    assert refs == {}  # complete, but its selected checkpoint is missing: not measured (no failure at test)
    (probe / "checkpoints" / "best.ckpt").write_bytes(b"x")
    for name in ("exp3", "baseline_b512"):
        refs, primary = why.fidelity_references(registry.get(name), runs.Run(tmp_path, "x", "digits", "smoke"), 10)
        assert set(refs) == {"teacher_dinov2_probe"}
        assert primary == ("teacher_dinov2_probe" if name == "exp3" else None)


def test_only_the_matched_from_teacher_keeps_snapshots(tmp_path):
    run = runs.Run(tmp_path, "teacher_resnet18", "digits", "smoke", 0, tmp_path)
    resnet = why.why_callbacks(registry.get("teacher_resnet18"), run, None)
    assert [type(c).__name__ for c in resnet] == ["SnapshotCallback"] and resnet[0].every_n_epochs == 1
    convnext = runs.Run(tmp_path, "teacher_convnextv2", "digits", "paper", 0, tmp_path)
    assert why.why_callbacks(registry.get("teacher_convnextv2"), convnext, None) == []
