"""Per-image files must agree with the summary beside them (image count, labels in the
dataset's classes, accuracy, fidelity figures), or they are ignored with a warning; a
``.npz`` that would inflate past its cap is refused before it is decompressed."""

from __future__ import annotations

import io
import shutil
import zipfile

import numpy as np
import pytest
import torch
from report_fixtures import write_predictions, write_run

from kdbias.callbacks.fidelity import FIDELITY_FILE, _write_fidelity_images, read_fidelity_images
from kdbias.callbacks.predictions import PREDICTIONS_FILE, read_predictions
from kdbias.report import ReportWarning, load_runs
from kdbias.schema import UnreadableFile, load_npz


def _load_one(runs_dir, experiment="baseline"):
    with pytest.warns(ReportWarning) as record:
        found = load_runs(runs_dir)
    (run,) = [r for r in found if r["experiment"] == experiment]
    return run, [str(w.message) for w in record if issubclass(w.category, ReportWarning)]


def test_all_correct_predictions_beside_a_low_accuracy_are_ignored(tmp_path):
    """The probe: a file of all correct answers beside a summary saying 9.2 %: ignored (the
    report keeps the summary's figures), with a warning naming the file."""
    runs = tmp_path / "runs"
    run_dir = write_run(runs, "baseline", val_acc=0.092)
    write_predictions(run_dir, np.ones(1000, dtype=bool))
    run, messages = _load_one(runs)
    assert run["predictions"] is None and run["test_acc"] == 0.092
    assert any(f"ignoring {run_dir / PREDICTIONS_FILE}" in m and "test_acc 0.0920" in m for m in messages)


def test_a_file_copied_from_another_run_is_ignored(tmp_path):
    runs = tmp_path / "runs"
    base = write_run(runs, "baseline", val_acc=0.6)
    exp1 = write_run(runs, "exp1", val_acc=0.7)
    shutil.copy(exp1 / PREDICTIONS_FILE, base / PREDICTIONS_FILE)
    run, messages = _load_one(runs)
    assert run["predictions"] is None
    assert any("another run's file" in m for m in messages)


def test_consistent_predictions_are_kept(tmp_path):
    """The positive control: the fixture's file (600 of 1000 correct) beside test_acc 0.6."""
    runs = tmp_path / "runs"
    write_run(runs, "baseline", val_acc=0.6)
    found = load_runs(runs)
    assert found[0]["predictions"] is not None and found[0]["predictions"].correct.sum() == 600


def test_labels_outside_the_datasets_classes_are_ignored(tmp_path):
    from kdbias.callbacks.predictions import Predictions, encode_predictions

    runs = tmp_path / "runs"
    run_dir = write_run(runs, "baseline", val_acc=0.5, test_images=4)
    (run_dir / "hparams.yaml").write_text("arch: deit_tiny_p4\nnum_classes: 10\n")  # what a run's module records
    label = np.array([0, 1, 1000, 3])
    pred = np.array([0, 1, 2, 2])
    data = Predictions(np.arange(4), label, pred, pred == label, "checkpoints/best.ckpt", None)
    (run_dir / PREDICTIONS_FILE).write_bytes(encode_predictions(data))
    run, messages = _load_one(runs)
    assert run["predictions"] is None
    assert any("from 0 to 1000, outside the run's classes 0..9" in m for m in messages)


def _fidelity(run_dir, agreement, kl):
    _write_fidelity_images(run_dir / FIDELITY_FILE, {"teacher_resnet18": (torch.tensor(agreement), torch.tensor(kl))})


def test_fidelity_that_disagrees_with_the_summary_is_ignored(tmp_path):
    runs = tmp_path / "runs"
    agree = [True] * 7 + [False] * 3
    kl = [0.1 * (i + 1) for i in range(10)]
    # the summary's figures, computed independently: 7 of 10 agree, mean KL 0.1 * (1 + ... + 10) / 10 = 0.55
    good = write_run(runs, "baseline", val_acc=0.5, test_images=10, correct=False,
                     fidelity={"teacher_resnet18": {"agreement": 0.7, "kl": 0.55}})  # fmt: skip
    _fidelity(good, agree, kl)
    assert load_runs(runs)[0]["fidelity_images"]["teacher_resnet18"]["kl"].tolist() == pytest.approx(kl)
    _fidelity(good, [True] * 10, kl)  # all agree: not the summary's 0.7
    run, messages = _load_one(runs)
    assert run["fidelity_images"] is None
    assert any(f"ignoring {good / FIDELITY_FILE}" in m and "agreement 1.0000" in m for m in messages)
    _fidelity(good, agree, [*kl[:-1], 1.1])  # mean KL 0.56, not 0.55
    assert _load_one(runs)[0]["fidelity_images"] is None


def test_fidelity_key_the_summary_lacks_is_ignored(tmp_path):
    runs = tmp_path / "runs"
    run_dir = write_run(runs, "baseline", val_acc=0.5, test_images=2, correct=False)
    _fidelity(run_dir, [True, False], [0.1, 0.1])
    run, messages = _load_one(runs)
    assert run["fidelity_images"] is None
    assert any("no fidelity figures for 'teacher_resnet18'" in m for m in messages)


def test_inflation_is_capped_before_decompressing(tmp_path, monkeypatch):
    """40 MB of zeros compress to ~40 kB: refused from the sizes the zip declares, np.load never called."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, label=np.zeros(5_000_000, dtype=np.int64))
    raw = buffer.getvalue()
    assert len(raw) < 200_000
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        declared = sum(info.file_size for info in archive.infolist())
    assert declared > 40_000_000

    inflated: list = []
    monkeypatch.setattr(np, "load", lambda *args, **kwargs: inflated.append(args))
    with pytest.raises(UnreadableFile, match=f"declares {declared} bytes once decompressed"):
        load_npz(raw, max_inflated=10_000_000)
    path = tmp_path / PREDICTIONS_FILE
    path.write_bytes(raw)
    monkeypatch.setattr("kdbias.schema.files.MAX_NPZ_INFLATED_BYTES", 10_000_000)
    for reader in (read_predictions, read_fidelity_images):
        with pytest.raises(UnreadableFile, match="once decompressed"):
            reader(path)
    assert inflated == []
