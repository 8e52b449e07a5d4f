"""A student run's summary holds its teacher's accuracy once: ``teacher_acc`` (the runner's, from
the selected checkpoint's test pass), never again under ``teacher`` or as a k-NN figure."""

from __future__ import annotations

import json

import numpy as np
import timm
import torch
from helpers import read_summary, run_experiment
from safetensors.torch import save_file

from kdbias.schema.predictions import read_predictions
from kdbias.teacher import PretrainedTeacher

ARCH = "test_resnet"  # timm's 0.4 M-parameter ResNet: seconds to build


def _keys(value, prefix=""):
    """Every key path of a nested JSON object (``teacher.name``)."""
    if not isinstance(value, dict):
        return []
    return [p for k, v in value.items() for p in [f"{prefix}{k}", *_keys(v, f"{prefix}{k}.")]]


def test_a_student_summary_holds_the_teacher_accuracy_once(tmp_path, digits_dm):
    torch.manual_seed(3)
    network = timm.create_model(ARCH, num_classes=10).eval()
    weights = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(weights))
    spec = json.dumps({"class_path": "PretrainedTeacher", "init_args": {"arch": ARCH, "weights": str(weights)}})
    run_dir = run_experiment("exp1", tmp_path / "runs", "--model.teacher", spec, "--trainer.limit_test_batches", "3")
    summary = read_summary(run_dir)

    accuracy_keys = [k for k in _keys(summary) if "teacher" in k and "acc" in k]
    assert accuracy_keys == ["teacher_acc"]  # once: not teacher.test_acc, not teacher_knn_acc
    assert set(summary["teacher"]) == {"name", "family", "source"}

    # Reference: the saved network itself on the tested images (3 batches of 16, in split order),
    # counted with NumPy; and the teacher's per-image predictions the run wrote.
    tested = read_predictions(run_dir / "test_predictions.npz")
    n = tested.num_images
    assert n == 48 and summary["test_images"] == n
    teacher = PretrainedTeacher(ARCH, str(weights)).build("digits", 10)
    images = digits_dm.normalize_images(digits_dm.test_images[:n])
    with torch.no_grad():
        predicted = network(teacher.adapt(images)).argmax(1).numpy()
    labels = np.asarray(digits_dm.test_labels[:n])
    np.testing.assert_array_equal(tested.label, labels)
    expected = float(np.mean(predicted == labels))
    assert abs(summary["teacher_acc"] - expected) < 1e-6
    assert abs(float(np.mean(tested.teacher_pred == tested.label)) - expected) < 1e-9
