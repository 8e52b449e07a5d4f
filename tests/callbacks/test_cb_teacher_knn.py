import json
from pathlib import Path

import pytest
import torch

from kdbias.analytics.knn import knn_accuracy
from kdbias.callbacks import SummaryCallback, TeacherKNNCallback

pytestmark = pytest.mark.filterwarnings("ignore:.*in eval mode at the start of training.*")


def _cka_module(kit):
    from kdbias.modules import CKADistillModule

    torch.manual_seed(0)
    return CKADistillModule(
        "deit_tiny_p4",
        teacher="dinov2_vits14",
        teacher_pretrained=None,
        teacher_image_size=28,
        layer_pairs=((0, 5), (1, 11)),
        arch_kwargs=dict(kit.TINY_VIT),
        **kit.OPTIM,
    )


def test_teacher_knn_measured_once(kit, tmp_path):
    module = _cka_module(kit)
    cb = TeacherKNNCallback(num_train=60, num_test=30, k=5, batch_size=25)
    before, after = kit.ModeProbe(("on_validation_end",)), kit.ModeProbe(("on_validation_end",))
    trainer = kit.fit(module, [SummaryCallback("exp3", "digits", "test", 0), before, cb, after], tmp_path, max_epochs=2)

    # once, at the first validation end after the sanity check
    assert cb.num_measurements == 1 and True in before.sanity
    scalars = kit.scalars(trainer.log_dir)
    assert [s for s, _ in scalars["teacher/knn_acc"]] == [2]
    assert [m for _, m in before.records] == [m for _, m in after.records]

    # equals k-NN on the teacher's CLS embedding of the same fixed subsets
    dm = kit.datamodule()
    net = module.teacher.network
    feats = {}
    with torch.no_grad():
        for split, n in (("train", 60), ("test", 30)):  # the k-NN is scored on the official test split
            images, labels = dm.fixed_subset(split, n, seed=0)
            x = module.teacher.adapt(dm.normalize_images(images))
            torch.testing.assert_close(module.teacher.embedding(dm.normalize_images(images)), net(x))  # CLS output
            feats[split] = (net(x), labels)
    direct = knn_accuracy(*feats["train"], *feats["test"], k=5, temperature=0.07, num_classes=10)
    assert cb.summary_items() == {"teacher_knn_acc": pytest.approx(direct), "teacher_knn_images": 30}
    assert scalars["teacher/knn_acc"][0][1] == pytest.approx(direct, abs=1e-6)
    written = json.loads((Path(trainer.log_dir) / "summary.json").read_text())
    assert written["teacher_knn_acc"] == pytest.approx(direct) and "teacher_acc" not in written  # the runner's

    # kept in the checkpoint state: a resumed run does not measure again
    fresh = TeacherKNNCallback()
    fresh.load_state_dict(cb.state_dict())
    assert fresh.summary_items() == cb.summary_items() and fresh.measured_step == 2


def test_teacher_knn_needs_a_teacher(kit, tiny_vit_module, tmp_path):
    assert TeacherKNNCallback().summary_items() == {}  # nothing before it measured
    with pytest.raises(TypeError, match="teacher"):
        kit.fit(tiny_vit_module(), [TeacherKNNCallback()], tmp_path)
