import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from kdbias.analytics.cka_matrix import cka_matrix, diagonal_alignment, diagonal_contrast_split
from kdbias.callbacks import CKAHeatmapCallback, SummaryCallback
from kdbias.losses import unpaired_order
from kdbias.models import block_outputs

pytestmark = pytest.mark.filterwarnings("ignore:.*in eval mode at the start of training.*")


class Oddify(Callback):
    """Right before the callback under test, put a few student and teacher parts in odd modes."""

    def on_validation_end(self, trainer, pl_module):
        pl_module.model.blocks[0].eval()
        pl_module.teacher.network.layer2.train()


def _kl_module(kit):
    from kdbias.modules import KLDistillModule, TeacherModule

    torch.manual_seed(0)
    teacher = TeacherModule("resnet18_cifar", arch_kwargs=dict(kit.TINY_RESNET), **kit.OPTIM)
    return KLDistillModule("deit_tiny_p4", teacher=teacher, arch_kwargs=dict(kit.TINY_VIT), **kit.OPTIM)


def test_cka_heatmap_cnn_teacher(kit, tmp_path):
    module = _kl_module(kit)
    cb = CKAHeatmapCallback(every_n_epochs=1, num_batches=2, batch_size=8)
    before, after = kit.ModeProbe(("on_validation_end",)), kit.ModeProbe(("on_validation_end",))
    summary_cb = SummaryCallback("exp1", "digits", "test", 0)
    trainer = kit.fit(module, [summary_cb, Oddify(), before, cb, after], tmp_path, max_epochs=1)
    run = Path(trainer.log_dir)

    assert cb.num_measurements == 1 and True in before.sanity
    assert [m for _, m in before.records] == [m for _, m in after.records]
    png = run / "analytics" / "cka_heatmaps" / "teacher" / "epoch_0.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    images = kit.images(run)
    assert [e.step for e in images["cka/teacher/heatmap"]] == [2]
    scalars = kit.scalars(run)
    assert [s for s, _ in scalars["cka/diag_alignment"]] == [2] and "cka/diag_contrast" in scalars

    # the matrix: every student block x every residual block of the teacher, 2 batches of 8
    saved = json.loads(png.with_suffix(".json").read_text())
    assert saved["student_blocks"] == [0, 1] and saved["teacher_blocks"] == [0, 1, 2, 3]
    dm = kit.datamodule()
    images16, _ = dm.fixed_subset("val", 16, seed=0)
    x = dm.normalize_images(images16)
    module.eval(), module.teacher.eval()  # Oddify left teacher.layer2 in train mode
    with torch.no_grad():
        batches = [x[:8], x[8:]]
        s = [block_outputs(module.model, module.student_input(b)) for b in batches]
        t = [block_outputs(module.teacher.network, module.teacher.adapt(b)) for b in batches]
    direct = cka_matrix(s, t)
    torch.testing.assert_close(torch.tensor(saved["cka"], dtype=torch.float64), direct, rtol=1e-5, atol=1e-6)
    align = diagonal_alignment(direct)
    # the permutation floor: each batch's teacher images re-paired by a random cycle (floor_seed 0)
    gen = torch.Generator().manual_seed(0)
    repaired = [[f[order] for f in batch] for batch, order in zip(t, [unpaired_order(8, gen) for _ in t])]
    floor = cka_matrix(s, repaired)
    torch.testing.assert_close(torch.tensor(saved["cka_floor"], dtype=torch.float64), floor, rtol=1e-5, atol=1e-6)
    floor_align = diagonal_alignment(floor)

    summary = cb.summary_items()
    entry = summary["cka"]["teacher"]
    assert entry["heatmap"] == "analytics/cka_heatmaps/teacher/epoch_0.png"
    assert entry["teacher"] == "resnet18_cifar" and entry["trained_pairs"] is None
    assert entry["contrast"] == pytest.approx(align["contrast"], rel=1e-5, abs=1e-6)
    assert summary["cka_diag_alignment"] == pytest.approx(align["diag"], rel=1e-5)
    assert summary["cka_diag_contrast"] == pytest.approx(align["contrast"], rel=1e-5, abs=1e-6)
    for figure in ("diag", "off_diag", "contrast"):
        assert entry[f"floor_{figure}"] == pytest.approx(floor_align[figure], rel=1e-5, abs=1e-6)
        assert saved[f"floor_{figure}"] == entry[f"floor_{figure}"]
    assert summary["cka_diag_contrast_floor"] == entry["floor_contrast"]
    assert scalars["cka/diag_contrast_floor"][0][1] == pytest.approx(floor_align["contrast"], rel=1e-5, abs=1e-6)
    assert scalars["cka/teacher/floor_diag"][0][1] == pytest.approx(floor_align["diag"], rel=1e-5, abs=1e-6)
    assert scalars["cka/diag_alignment"][0][1] == pytest.approx(align["diag"], rel=1e-5)
    written = json.loads((run / "summary.json").read_text())
    assert {k: written[k] for k in summary} == summary


def test_cka_heatmap_dinov2_teacher_every_block(kit, tmp_path):
    from kdbias.modules import CKADistillModule

    torch.manual_seed(0)
    module = CKADistillModule(
        "deit_tiny_p4",
        teacher="dinov2_vits14",
        teacher_pretrained=None,
        teacher_image_size=28,
        layer_pairs=((0, 5), (1, 11)),
        arch_kwargs=dict(kit.TINY_VIT),
        **kit.OPTIM,
    )
    cb = CKAHeatmapCallback(every_n_epochs=1, num_batches=1, batch_size=8, student_blocks=[0, 1])
    trainer = kit.fit(module, [cb], tmp_path, max_epochs=1)
    entry = cb.summary_items()["cka"]["teacher"]
    saved = json.loads((Path(trainer.log_dir) / entry["heatmap"]).with_suffix(".json").read_text())
    assert saved["teacher_blocks"] == list(range(12))
    cka = torch.tensor(saved["cka"], dtype=torch.float64)
    assert cka.shape == (2, 12) and torch.isfinite(cka).all()
    # the module's trained pairs (0, 5) and (1, 11) are reported apart from the emergent alignment
    assert saved["trained_pairs"] == [[0, 5], [1, 11]]
    split = diagonal_contrast_split(cka, [(0, 5), (1, 11)])
    assert entry["trained"] == pytest.approx((cka[0, 5] + cka[1, 11]).item() / 2)
    assert entry["untrained_contrast"] == pytest.approx(split["untrained_contrast"])


def test_cka_control_measures_a_student_without_teacher_against_a_given_one(kit, tiny_vit_module, tmp_path):

    module = tiny_vit_module()
    control = _kl_module(kit).teacher  # a FrozenTeacher
    cb = CKAHeatmapCallback(every_n_epochs=1, num_batches=2, batch_size=8, teacher=control, key="exp1")
    trainer = kit.fit(module, [cb], tmp_path, max_epochs=1)
    entry = cb.summary_items()["cka"]["exp1"]
    assert "cka_diag_contrast" not in cb.summary_items()  # a control never poses as the run's own teacher
    saved = json.loads((Path(trainer.log_dir) / entry["heatmap"]).with_suffix(".json").read_text())
    dm = kit.datamodule()
    images16, _ = dm.fixed_subset("val", 16, seed=0)
    x = dm.normalize_images(images16)
    module.eval()
    with torch.no_grad():
        s = [block_outputs(module.model, module.student_input(b)) for b in (x[:8], x[8:])]
        t = [block_outputs(control.network, control.adapt(b)) for b in (x[:8], x[8:])]
    direct = cka_matrix(s, t)
    torch.testing.assert_close(torch.tensor(saved["cka"], dtype=torch.float64), direct, rtol=1e-5, atol=1e-6)
    assert entry["contrast"] == pytest.approx(diagonal_alignment(direct)["contrast"], rel=1e-5, abs=1e-6)
    assert "cka/exp1/contrast" in kit.scalars(trainer.log_dir)


def test_cka_heatmap_errors(kit, tiny_vit_module, tmp_path):
    with pytest.raises(TypeError, match="has none"):
        kit.fit(tiny_vit_module(), [CKAHeatmapCallback()], tmp_path / "a")
    with pytest.raises(ValueError, match="lower cka_batch_size"):
        kit.fit(_kl_module(kit), [CKAHeatmapCallback(batch_size=512)], tmp_path / "b")
    with pytest.raises(ValueError, match="out of range"):
        kit.fit(_kl_module(kit), [CKAHeatmapCallback(teacher_blocks=[0, 9])], tmp_path / "c")
    with pytest.raises(ValueError, match=">= 4"):
        CKAHeatmapCallback(batch_size=2)
