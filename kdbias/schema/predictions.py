"""Per-image predictions on the official test split: ``<run>/test_predictions.npz``.

The report pairs two runs image by image with these files (the same test images, the
same order), so every accuracy Δ carries the test set's own sampling error and states on
how many images the runs disagree.

File format (NumPy ``.npz``, no pickled object; read with :func:`read_predictions`):

- ``index`` int64 ``[N]``: position in the official test split (0-based, the loader's order);
- ``label`` int64 ``[N]``: the true class;
- ``pred`` int64 ``[N]``: the student's predicted class (argmax of its logits);
- ``correct`` bool ``[N]``: ``pred == label``;
- ``teacher_pred`` / ``teacher_correct`` (distilled runs whose teacher has a head): the same
  for the teacher on the same images;
- ``checkpoint`` str (0-d): the weights tested, ``checkpoints/<file>`` or ``"last weights"``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdbias.schema.files import UnreadableFile, load_npz, read_regular_file

__all__ = ["LAST_WEIGHTS", "PREDICTIONS_FILE", "Predictions", "encode_predictions", "read_predictions"]

PREDICTIONS_FILE = "test_predictions.npz"
LAST_WEIGHTS = "last weights"
MAX_PREDICTIONS_BYTES = 64 * 1024 * 1024  # 10,000 images take about 100 kB


@dataclass(frozen=True)
class Predictions:
    """One run's test predictions (see the module docstring); arrays of length ``N``."""

    index: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    correct: np.ndarray
    checkpoint: str
    teacher_pred: np.ndarray | None = None
    teacher_correct: np.ndarray | None = None

    @property
    def num_images(self) -> int:
        return int(self.label.shape[0])


def encode_predictions(predictions: Predictions) -> bytes:
    """The ``.npz`` bytes of ``predictions`` (uncompressed)."""
    arrays: dict[str, Any] = {
        "index": predictions.index.astype(np.int64),
        "label": predictions.label.astype(np.int64),
        "pred": predictions.pred.astype(np.int64),
        "correct": predictions.correct.astype(bool),
        "checkpoint": np.array(predictions.checkpoint),
    }
    if predictions.teacher_pred is not None:
        arrays["teacher_pred"] = predictions.teacher_pred.astype(np.int64)
        arrays["teacher_correct"] = predictions.teacher_pred.astype(np.int64) == arrays["label"]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_predictions(path: str | Path) -> Predictions:
    """Read and check a predictions file: a regular file of at most 64 MiB, loaded with
    ``allow_pickle=False``; one-dimensional integer arrays of one length, ``index`` the
    positions ``0..N-1`` once each, ``correct == (pred == label)``. :class:`UnreadableFile`
    naming the cause otherwise."""
    raw = read_regular_file(path, MAX_PREDICTIONS_BYTES)
    arrays = load_npz(raw)  # decompressed size capped before reading
    for key in ("index", "label", "pred", "correct", "checkpoint"):
        if key not in arrays:
            raise UnreadableFile(f"no {key!r} array")
    n = arrays["label"].shape[0] if arrays["label"].ndim == 1 else -1
    for key in ("index", "label", "pred", "teacher_pred"):
        if key in arrays and (arrays[key].ndim != 1 or arrays[key].dtype.kind not in "iu" or len(arrays[key]) != n):
            raise UnreadableFile(f"{key!r} is not a 1-D integer array of the labels' length")
    if n < 1 or not np.array_equal(np.sort(arrays["index"]), np.arange(n)):
        raise UnreadableFile("'index' is not the positions 0..N-1 of the test split, once each")
    correct = arrays["pred"] == arrays["label"]
    if arrays["correct"].shape != (n,) or not np.array_equal(arrays["correct"].astype(bool), correct):
        raise UnreadableFile("'correct' does not equal pred == label")
    checkpoint = arrays["checkpoint"]
    if checkpoint.ndim != 0 or checkpoint.dtype.kind != "U":
        raise UnreadableFile("'checkpoint' is not a string")
    order = np.argsort(arrays["index"])
    teacher = arrays.get("teacher_pred")
    return Predictions(
        index=arrays["index"][order],
        label=arrays["label"][order],
        pred=arrays["pred"][order],
        correct=correct[order],
        checkpoint=str(checkpoint),
        teacher_pred=None if teacher is None else teacher[order],
        teacher_correct=None if teacher is None else (teacher == arrays["label"])[order],
    )
