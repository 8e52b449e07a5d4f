import pytest
import torch
from torch import nn

from kdbias.analytics.attention_distance import mean_attention_distance
from kdbias.callbacks import AttentionDistanceCallback, eval_mode
from kdbias.models import attention_maps

pytestmark = pytest.mark.filterwarnings("ignore:.*in eval mode at the start of training.*")


def test_eval_mode_restores_every_submodule_flag_also_on_error():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(), nn.Linear(2, 2)))
    net.train()
    net[1][0].eval()  # an odd, mixed state
    before = [m.training for m in net.modules()]
    other = nn.Dropout().eval()
    with eval_mode(net, other, None):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == before and not other.training
    with pytest.raises(RuntimeError):
        with eval_mode(net):
            raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == before


def _run(kit, make, tmp_path, name):
    module = make()
    module.model.blocks[1].mlp.eval()  # odd state that must survive the callback
    cb = AttentionDistanceCallback(every_n_epochs=1, num_images=24, batch_size=10)  # chunks 10, 10, 4
    before, after = kit.ModeProbe(), kit.ModeProbe()
    trainer = kit.fit(module, [before, cb, after], tmp_path / name, max_epochs=2)
    return module, cb, before, after, trainer


def test_attention_distance_in_fit(kit, tiny_vit_module, tmp_path):
    module, cb, before, after, trainer = _run(kit, tiny_vit_module, tmp_path, "a")

    # measured after each epoch's validation, never in the sanity check
    assert True in before.sanity and cb.num_measurements == 2
    scalars = kit.scalars(trainer.log_dir)
    for i in (0, 1):
        assert [s for s, _ in scalars[f"attn_dist/layer_{i}"]] == [2, 4]
        for h in (0, 1):
            assert len(scalars[f"attn_dist/layer_{i}/head_{h}"]) == 2

    # modes left exactly as found (the odd mlp included), in every hook call
    assert [m for _, m in before.records] == [m for _, m in after.records]
    assert not module.model.blocks[1].mlp.training and module.model.blocks[0].mlp.training

    # the last values equal the pure function on the same images, all at once
    dm = kit.datamodule()
    images, _ = dm.fixed_subset("val", 24, seed=0)
    module.eval()
    with torch.no_grad():
        maps = attention_maps(module.model, module.input_adapter(dm.normalize_images(images)))
    summary = cb.summary_items()
    assert set(summary) == {"attn_dist", "attn_dist_heads"} and set(summary["attn_dist"]) == {"0", "1"}
    for i, attn in enumerate(maps):
        direct = mean_attention_distance(attn, patch_size=4, num_prefix_tokens=1)
        torch.testing.assert_close(torch.tensor(summary["attn_dist_heads"][str(i)]), direct, rtol=1e-5, atol=1e-5)
        assert summary["attn_dist"][str(i)] == pytest.approx(direct.mean().item(), rel=1e-5)
        assert scalars[f"attn_dist/layer_{i}"][-1][1] == pytest.approx(direct.mean().item(), rel=1e-5)
        assert 0.0 < summary["attn_dist"][str(i)] < 4 * 7 * 2**0.5

    # same seed, same run: same logged values
    _, _, _, _, trainer2 = _run(kit, tiny_vit_module, tmp_path, "b")
    again = kit.scalars(trainer2.log_dir)
    for tag, values in scalars.items():
        if tag.startswith("attn_dist/"):
            assert again[tag] == values


def test_chosen_layers_and_epochs_without_validation(kit, tiny_vit_module, tmp_path):
    # No validation closes epoch 0, so the due measurement happens at the train epoch end.
    cb = AttentionDistanceCallback(every_n_epochs=1, num_images=8, batch_size=8, layers=[1])
    trainer = kit.fit(tiny_vit_module(), [cb], tmp_path, max_epochs=1, check_val_every_n_epoch=2)
    assert cb.num_measurements == 1
    tags = {t for t in kit.scalars(trainer.log_dir) if t.startswith("attn_dist/")}
    assert tags == {"attn_dist/layer_1", "attn_dist/layer_1/head_0", "attn_dist/layer_1/head_1"}
    assert set(cb.summary_items()["attn_dist"]) == {"1"}
    state = cb.state_dict()
    fresh = AttentionDistanceCallback(layers=[1])
    fresh.load_state_dict(state)
    assert fresh.summary_items() == cb.summary_items() and fresh.measured_epoch == 0
    assert AttentionDistanceCallback().summary_items() == {"attn_dist": None, "attn_dist_heads": None}


def test_errors_are_clear(kit, tmp_path):
    from kdbias.modules import TeacherModule

    cnn = TeacherModule("resnet18_cifar", arch_kwargs=dict(kit.TINY_RESNET), **kit.OPTIM)
    with pytest.raises(TypeError, match="ViT student"):
        kit.fit(cnn, [AttentionDistanceCallback()], tmp_path / "cnn")
    vit = TeacherModule("deit_tiny_p4", arch_kwargs=dict(kit.TINY_VIT), **kit.OPTIM)
    with pytest.raises(ValueError, match="out of range"):
        kit.fit(vit, [AttentionDistanceCallback(layers=[5])], tmp_path / "layers")
    dm = kit.datamodule()
    dm.setup()
    with pytest.raises(TypeError, match="CIFARDataModule"):
        import lightning as L

        L.Trainer(
            default_root_dir=tmp_path,
            accelerator="cpu",
            max_epochs=1,
            logger=False,
            enable_progress_bar=False,
            callbacks=[AttentionDistanceCallback()],
        ).fit(vit, train_dataloaders=dm.train_dataloader(), val_dataloaders=dm.val_dataloader())
    with pytest.raises(ValueError):
        AttentionDistanceCallback(every_n_epochs=0)
