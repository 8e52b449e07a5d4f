"""PredictionsCallback and the summary record: per-image test predictions of the tested weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from kdbias.callbacks import PredictionsCallback, SummaryCallback
from kdbias.callbacks.predictions import LAST_WEIGHTS, PREDICTIONS_FILE, read_predictions
from kdbias.schema import SCHEMA_VERSION, SummaryContributor, validate_summary

pytestmark = pytest.mark.filterwarnings("ignore:.*in eval mode at the start of training.*")


def _reference(module, datamodule, network=None):
    """Predicted classes over the whole official test split, computed here batch by batch:
    the DataModule's own normalisation, eval mode, argmax of the logits."""
    datamodule.setup("test")
    module.eval()
    preds = []
    with torch.no_grad():
        for images, _ in datamodule.test_dataloader():
            x = datamodule.normalize_images(images)
            preds.append((network(x) if network is not None else module(x)).argmax(dim=1))
    return torch.cat(preds).numpy(), datamodule.test_labels.numpy()


class Late(Callback):
    """A contributor measured at train end whose state a checkpoint restore turns stale."""

    def __init__(self):
        self.value = None

    def on_train_end(self, trainer, pl_module):
        self.value = 5.0

    def summary_items(self):
        return {"hessian_trace": self.value}

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state_dict):
        self.value = state_dict["value"]


def test_predictions_of_each_test_pass_and_the_last_wins(kit, tiny_vit_module, tmp_path):
    module = tiny_vit_module()
    predictions, summary, late = PredictionsCallback(), SummaryCallback("baseline", "digits", "smoke", 0), Late()
    assert isinstance(predictions, SummaryContributor) and isinstance(late, SummaryContributor)
    trainer = kit.fit(module, [summary, predictions, late], tmp_path, max_epochs=1)
    assert summary.written["hessian_trace"] == 5.0
    late.value = None  # as in a checkpoint saved before the measurement
    datamodule = kit.datamodule()
    trainer.test(module, datamodule=datamodule, verbose=False)
    path = tmp_path / "run" / "version_0" / PREDICTIONS_FILE
    first = read_predictions(path)
    assert first.checkpoint == LAST_WEIGHTS
    pred, labels = _reference(module, datamodule)
    assert np.array_equal(first.pred, pred) and np.array_equal(first.label, labels)
    assert np.array_equal(first.correct, pred == labels) and first.num_images == len(labels)
    assert first.teacher_pred is None  # no teacher
    # the selected checkpoint's test: other weights, and the file says which
    ckpt = tmp_path / "run" / "version_0" / "checkpoints" / "best.ckpt"
    torch.nn.init.zeros_(module.model.head.weight)  # predictions of the saved weights must differ
    torch.nn.init.constant_(module.model.head.bias, 0.0)
    module.model.head.bias.data[3] = 1.0
    trainer.save_checkpoint(ckpt)
    trainer.test(module, datamodule=kit.datamodule(), ckpt_path=str(ckpt), verbose=False, weights_only=True)
    second = read_predictions(path)
    assert second.checkpoint == "checkpoints/best.ckpt" and (second.pred == 3).all()
    written = summary.update(status="complete")
    assert written["test_images"] == len(labels) and written["test_predictions"] == PREDICTIONS_FILE
    assert written["schema"] == SCHEMA_VERSION and written["val_images"] == 16  # 1 val batch of 16
    assert late.value is None and written["hessian_trace"] == 5.0  # the restored stale state does not win
    on_disk = json.loads((tmp_path / "run" / "version_0" / "summary.json").read_text())
    run, reason, dropped = validate_summary(on_disk, "baseline")
    assert reason is None and dropped == [] and run["test_images"] == len(labels)
    assert not list(path.parent.glob(".*.tmp"))  # written atomically


def test_teacher_predictions_of_a_distilled_run(kit, tmp_path):
    from kdbias.modules import KLDistillModule, TeacherModule

    torch.manual_seed(0)
    teacher = TeacherModule("resnet18_cifar", arch_kwargs=dict(kit.TINY_RESNET), **kit.OPTIM)
    module = KLDistillModule("deit_tiny_p4", teacher=teacher, arch_kwargs=dict(kit.TINY_VIT), **kit.OPTIM)
    trainer = kit.fit(module, [PredictionsCallback()], tmp_path, max_epochs=1)
    datamodule = kit.datamodule()
    metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    got = read_predictions(tmp_path / "run" / "version_0" / PREDICTIONS_FILE)
    teacher_pred, labels = _reference(module, datamodule, network=module.teacher.logits)
    assert np.array_equal(got.teacher_pred, teacher_pred)
    assert got.teacher_correct.mean() == pytest.approx(metrics["test/teacher_acc"], abs=1e-6)
    assert got.correct.mean() == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_read_predictions_refuses_pickles_and_inconsistent_files(tmp_path):
    from kdbias.schema import UnreadableFile

    path = tmp_path / PREDICTIONS_FILE
    np.savez(path, index=np.arange(2), label=np.array([0, 1]), pred=np.array([0, 0]), correct=np.array([True, True]),
             checkpoint=np.array("last weights"))  # fmt: skip
    with pytest.raises(UnreadableFile, match="pred == label"):
        read_predictions(path)
    np.savez(path, index=np.array([0, 0]), label=np.array([0, 1]), pred=np.array([0, 1]),
             correct=np.array([True, True]), checkpoint=np.array("x"))  # fmt: skip
    with pytest.raises(UnreadableFile, match="once each"):
        read_predictions(path)
    np.savez(path, index=np.arange(2), label=np.array([0, 1]), pred=np.array([0, 1]),
             correct=np.array([{"a": 1}, {}], dtype=object), checkpoint=np.array("x"))  # fmt: skip
    with pytest.raises(UnreadableFile, match="not a readable .npz"):
        read_predictions(path)
