import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdbias.callbacks import GeneralisationGapCallback, SummaryCallback

pytestmark = pytest.mark.filterwarnings("ignore:.*in eval mode at the start of training.*")


def test_generalisation_gap_in_fit(kit, tiny_vit_module, tmp_path):
    module = tiny_vit_module()
    module.model.blocks[1].eval()  # odd state that must survive
    cb = GeneralisationGapCallback(every_n_epochs=1, num_images=40, batch_size=16)
    before, after = kit.ModeProbe(("on_validation_end",)), kit.ModeProbe(("on_validation_end",))
    # CutMix in training: the train side must still see plain, unaugmented images
    dm = kit.datamodule(mix="cutmix")
    trainer = kit.fit(
        module,
        [SummaryCallback("baseline", "digits", "test", 0), before, cb, after],
        tmp_path,
        max_epochs=2,
        datamodule=dm,
    )

    assert cb.num_measurements == 2 and True in before.sanity
    assert [m for _, m in before.records] == [m for _, m in after.records]
    scalars = kit.scalars(trainer.log_dir)
    for tag in ("gen_gap/acc", "gen_gap/loss", "gen_gap/train_acc", "gen_gap/train_loss"):
        assert [s for s, _ in scalars[tag]] == [2, 4]
    # gap = train side - the epoch's reduced val metrics (Lightning logs those one step
    # earlier: at its batch counter before the increment, we at trainer.global_step)
    assert len(scalars["val/acc"]) == 2
    for (_, gap), (_, train_acc), (_, val_acc) in zip(
        scalars["gen_gap/acc"], scalars["gen_gap/train_acc"], scalars["val/acc"]
    ):
        assert gap == pytest.approx(train_acc - val_acc, abs=1e-6)

    # train side equals a direct eval-mode computation on the fixed, unaugmented subset
    images, labels = dm.fixed_subset("train", 40, seed=0)
    module.eval()
    with torch.no_grad():
        logits = module(dm.normalize_images(images))
    acc = (logits.argmax(-1) == labels).float().mean().item()
    loss = F.cross_entropy(logits, labels).item()
    assert scalars["gen_gap/train_acc"][-1][1] == pytest.approx(acc, abs=1e-6)
    assert scalars["gen_gap/train_loss"][-1][1] == pytest.approx(loss, rel=1e-5)
    val_loss = scalars["val/loss"][-1][1]
    summary = cb.summary_items()
    assert set(summary) == {"gen_gap_acc", "gen_gap_loss"}
    assert summary["gen_gap_loss"] == pytest.approx(val_loss - loss, rel=1e-4, abs=1e-5)
    assert summary["gen_gap_acc"] == pytest.approx(acc - scalars["val/acc"][-1][1], abs=1e-6)
    written = json.loads((Path(trainer.log_dir) / "summary.json").read_text())
    assert written["gen_gap_acc"] == summary["gen_gap_acc"]


def test_no_gap_without_validation(kit, tiny_vit_module, tmp_path):
    cb = GeneralisationGapCallback(every_n_epochs=1, num_images=8, batch_size=8)
    kit.fit(tiny_vit_module(), [cb], tmp_path, max_epochs=1, check_val_every_n_epoch=2)
    assert cb.num_measurements == 0
    assert cb.summary_items() == {"gen_gap_acc": None, "gen_gap_loss": None}


def test_a_schedule_that_cannot_fire_warns_once_and_measures_at_the_end(kit, tiny_vit_module, tmp_path, recwarn):
    """every_n_epochs 5 and 7 with max_epochs 2: one warning naming both, then one measurement
    each at the end of the last epoch (at the last global step), none after epoch 0."""
    from kdbias.callbacks import AttentionDistanceCallback

    gap = GeneralisationGapCallback(every_n_epochs=5, num_images=8, batch_size=8)
    attention = AttentionDistanceCallback(every_n_epochs=7, num_images=8)
    trainer = kit.fit(tiny_vit_module(), [gap, attention], tmp_path, max_epochs=2)
    late = [w for w in recwarn.list if "cannot fire within max_epochs=2" in str(w.message)]
    assert len(late) == 1
    assert "every_n_epochs=5" in str(late[0].message) and "every_n_epochs=7" in str(late[0].message)
    assert gap.num_measurements == 1 and attention.num_measurements == 1
    assert [s for s, _ in kit.scalars(trainer.log_dir)["gen_gap/acc"]] == [trainer.global_step]


def test_a_schedule_that_fires_says_nothing(kit, tiny_vit_module, tmp_path, recwarn):
    gap = GeneralisationGapCallback(every_n_epochs=2, num_images=8, batch_size=8)
    kit.fit(tiny_vit_module(), [gap], tmp_path, max_epochs=2)
    assert not [w for w in recwarn.list if "cannot fire" in str(w.message)]
    assert gap.num_measurements == 1 and not gap.at_fit_end
