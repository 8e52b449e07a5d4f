"""A CNN teacher in CKADistillModule: its stage outputs as tokens, pairs by relative depth,
and its CKA loss equal to a linear CKA written out here."""

import pytest
import torch
import torch.nn.functional as F
from helpers import DIGITS, OPTIM, TINY_VIT, teacher_checkpoint

from kdbias.models.tokens import relative_depth_pairs, resolve_layer_pairs, to_tokens
from kdbias.modules import CKADistillModule

pytestmark = pytest.mark.filterwarnings("ignore:.*in eval mode at the start of training.*")


def linear_cka(x, y):
    """Biased linear CKA of [n, d] features: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), centred."""
    x = x.double().flatten(1)
    y = y.double().flatten(1)
    x, y = x - x.mean(0), y - y.mean(0)
    return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


def block_mean(maps, grid):
    """[B, C, H, W] -> [B, grid*grid, C] by plain k x k block means (H = k * grid)."""
    b, c, h, _ = maps.shape
    k = h // grid
    return maps.view(b, c, grid, k, grid, k).mean((3, 5)).flatten(2).transpose(1, 2)


def test_relative_depth_pairs_by_hand():
    assert relative_depth_pairs([3, 6, 9, 11], 12, 8) == [(3, 2), (6, 4), (9, 6), (11, 7)]
    assert relative_depth_pairs([3, 6, 9, 11], 12, 12) == [(3, 3), (6, 6), (9, 9), (11, 11)]
    assert relative_depth_pairs([0, 1], 2, 4) == [(0, 1), (1, 3)]
    assert resolve_layer_pairs("relative", 12, 8) == [(3, 2), (6, 4), (9, 6), (11, 7)]
    assert resolve_layer_pairs("relative", 12, 18) == [(3, 5), (6, 10), (9, 14), (11, 17)]  # ConvNeXt-T
    assert resolve_layer_pairs("relative", 2, 4) == [(0, 1), (1, 3)]
    assert resolve_layer_pairs([[1, 0]], 2, 4) == [(1, 0)]
    with pytest.raises(ValueError, match="relative"):
        resolve_layer_pairs("deep", 2, 4)


def test_cnn_maps_become_row_major_tokens():
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    tokens = to_tokens(maps, 4)
    assert tokens.shape == (2, 16, 3)
    assert torch.equal(tokens[1, 4 * 2 + 3], maps[1, :, 2, 3])  # token i*grid+j is cell (i, j)
    torch.testing.assert_close(to_tokens(maps, 2), block_mean(maps, 2))
    with pytest.raises(ValueError, match="grid"):
        to_tokens(maps, 8)


def test_cnn_teacher_cka_is_the_linear_cka_of_its_stage_outputs(tmp_path, digits_dm):
    path = teacher_checkpoint(tmp_path, digits_dm)  # tiny ResNet: one BasicBlock per stage, 16 channels
    module = CKADistillModule(
        "deit_tiny_p4",
        teacher=str(path),
        layer_pairs="relative",
        lambda_cka=1.0,
        lambda_tok=0.0,
        unbiased_cka=False,  # the biased estimator written out above (the pairing is what is tested)
        arch_kwargs=dict(TINY_VIT),
        optim=OPTIM,
        **DIGITS,
    )
    assert module.layer_pairs == [(0, 1), (1, 3)]  # student depth 2, teacher depth 4 (layer2, layer4)
    assert module.grids == [8, 4]  # layer2 is 16x16 -> student's 8x8; layer4 is 4x4: the student pooled to it
    assert module.teacher.family == "ResNet"
    module.eval()
    images, labels = digits_dm.fixed_subset("train", 12, seed=0)
    images = digits_dm.normalize_images(images)
    losses, _ = module.training_losses(images, labels)

    resnet = module.teacher.network
    with torch.no_grad():
        x = resnet.act1(resnet.bn1(resnet.conv1(images)))  # digits stats = the ResNet's own: no re-normalisation
        stage1 = resnet.layer1(x)
        stage2 = resnet.layer2(stage1)
        stage4 = resnet.layer4(resnet.layer3(stage2))
        student = module.model
        tokens = student.patch_drop(student.norm_pre(student._pos_embed(student.patch_embed(images))))
        first = student.blocks[0](tokens)
        second = student.blocks[1](first)
    assert stage2.shape[-1] == 16 and stage4.shape[-1] == 4
    s0 = first[:, student.num_prefix_tokens :]  # [B, 64, D]
    s1 = block_mean(second[:, student.num_prefix_tokens :].transpose(1, 2).reshape(12, -1, 8, 8), 4)
    expected = [linear_cka(s0, block_mean(stage2, 8)), linear_cka(s1, block_mean(stage4, 4))]
    assert float(losses["cka"].detach()) == pytest.approx(1.0 - sum(expected) / 2, abs=1e-5)
    assert float(losses["loss"].detach()) == pytest.approx(
        float(F.cross_entropy(module(images), labels)) + float(losses["cka"].detach()), abs=1e-5
    )
    assert module.projectors[0].out_features == 16


def test_a_dinov2_teacher_keeps_todays_pairs(digits_dm):
    from helpers import cka_module

    module = cka_module(layer_pairs="relative")
    assert module.layer_pairs == [(0, 0), (1, 1)]  # tiny DINOv2 has 2 blocks like the tiny student
