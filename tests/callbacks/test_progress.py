"""Progress lines: the time left counts the epochs, the analytics still due and the test passes."""

from types import SimpleNamespace

import pytest

from kdbias.callbacks import EpochLineProgress, HessianCallback
from kdbias.callbacks.base import AnalyticsCallback


class _Timed(AnalyticsCallback):
    def __init__(self, every, measured, seconds):
        super().__init__(every)
        self.num_measurements, self.elapsed_s = measured, seconds


def _trainer(callbacks, epoch=1, max_epochs=10, limit_test=1.0):
    datamodule = SimpleNamespace(num_test=360, val_batch_size=32)
    return SimpleNamespace(
        callbacks=callbacks,
        current_epoch=epoch,
        max_epochs=max_epochs,
        limit_test_batches=limit_test,
        datamodule=datamodule,
    )


def test_time_left_adds_epochs_analytics_still_due_and_test_passes():
    progress = EpochLineProgress(test_passes=2)
    progress._epochs_done, progress._training_s = 2, 30.0  # 15 s per epoch without analytics
    progress._val_images, progress._val_s = 144, 7.2  # 0.05 s per image
    every_3 = _Timed(every=3, measured=1, seconds=4.0)  # still due: epochs 2, 5, 8 ((e + 1) % 3 == 0)
    trainer = _trainer([every_3], epoch=1, max_epochs=10)
    left, untimed = progress.time_left(trainer)
    expected = 8 * 15.0 + 3 * 4.0 + 2 * 360 * 0.05
    assert left == pytest.approx(expected) and untimed == []
    # A test limited to 3 batches of 32 images.
    left, _ = progress.time_left(_trainer([every_3], epoch=1, max_epochs=10, limit_test=3))
    assert left == pytest.approx(8 * 15.0 + 3 * 4.0 + 2 * 96 * 0.05)


def test_an_analytic_never_timed_is_named_and_the_hessian_counts_its_fit_end_measurement():
    progress = EpochLineProgress(test_passes=0)
    progress._epochs_done, progress._training_s = 1, 10.0
    hessian = HessianCallback(every_n_epochs=100)
    trainer = _trainer([hessian], epoch=0, max_epochs=3)
    assert hessian.measurements_left(trainer) == 1  # epoch 3 is not due: measured once at the end of training
    left, untimed = progress.time_left(trainer)
    assert left == pytest.approx(2 * 10.0) and untimed == ["HessianCallback"]
    assert "not yet timed" in progress.line(SimpleNamespace(**vars(trainer), callback_metrics={}))
    assert HessianCallback(every_n_epochs=3).measurements_left(trainer) == 1  # epoch index 2 is due, no extra


def test_test_passes_must_be_non_negative():
    with pytest.raises(ValueError, match="test_passes"):
        EpochLineProgress(test_passes=-1)
