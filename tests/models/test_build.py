import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from kdbias.models import MODEL_NAMES, build_model, model_input_stats


@pytest.mark.parametrize(
    ("name", "num_classes"),
    [("resnet18_cifar", 10), ("convnextv2_tiny_cifar", 100), ("deit_tiny_p4", 10), ("deit_small_p4", 7)],
)
def test_classifier_logits_at_32px(name, num_classes):
    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()


def test_dinov2_is_headless_and_returns_cls_embedding():
    model = build_model("dinov2_vits14", img_size=56).eval()
    assert model.num_classes == 0
    with torch.no_grad():
        out = model(torch.randn(2, 3, 56, 56))
    assert out.shape == (2, 384)


def test_dinov2_default_is_224px_with_16x16_grid():
    model = build_model("dinov2_vits14")
    assert tuple(model.patch_embed.img_size) == (224, 224)
    assert tuple(model.patch_embed.grid_size) == (16, 16)
    assert model.pos_embed.shape == (1, 16 * 16 + 1, 384)


def test_dinov2_112px_matches_student_grid():
    assert tuple(build_model("dinov2_vits14", img_size=112).patch_embed.grid_size) == (8, 8)


def test_resnet_cifar_stem_keeps_32px():
    model = build_model("resnet18_cifar").eval()
    conv = model.conv1
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
    assert conv.in_channels == 3 and conv.out_channels == 64 and conv.bias is None
    assert isinstance(model.maxpool, nn.Identity)
    sizes = []
    handle = model.maxpool.register_forward_hook(lambda m, args, out: sizes.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    handle.remove()
    assert sizes == [(32, 32)]


def test_convnext_stem_is_fresh_2x2_stride_2_conv():
    torch.manual_seed(0)
    model = build_model("convnextv2_tiny_cifar")
    stem = model.stem[0]
    assert (stem.kernel_size, stem.stride) == ((2, 2), (2, 2))
    assert stem.weight.shape == (96, 3, 2, 2)
    assert torch.all(stem.bias == 0)
    assert abs(stem.weight.std().item() - 0.02) < 0.004  # trunc_normal(std=.02)
    assert model.head.fc.out_features == 10


@pytest.mark.parametrize(
    ("name", "kw", "rate"),
    [("convnextv2_tiny_cifar", {}, 0.1), ("deit_tiny_p4", {}, 0.1), ("deit_tiny_p4", {"drop_path_rate": 0.3}, 0.3)],
)
def test_drop_path_rate_of_the_deepest_block(name, kw, rate):
    rates = [m.drop_prob for m in build_model(name, **kw).modules() if type(m).__name__ == "DropPath"]
    assert max(rates) == pytest.approx(rate)


def test_deit_p4_has_8x8_grid_plus_cls():
    model = build_model("deit_tiny_p4")
    assert tuple(model.patch_embed.patch_size) == (4, 4)
    assert model.pos_embed.shape == (1, 65, 192)


def test_input_stats():
    imagenet = (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
    assert model_input_stats("convnextv2_tiny_cifar") == imagenet
    assert model_input_stats("dinov2_vits14") == imagenet
    for name in ("resnet18_cifar", "deit_tiny_p4", "deit_small_p4"):
        assert model_input_stats(name) is None


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        build_model("vit_huge_p2")
    assert "vit_huge_p2" in str(info.value)
    assert all(name in str(info.value) for name in MODEL_NAMES)
    with pytest.raises(ValueError):
        model_input_stats("vit_huge_p2")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_kdbias_models_are_registered_with_timm(name):
    """``timm.create_model`` builds the plan's variants (``import kdbias`` registers them), and
    their input statistics live in timm's pretrained config."""
    import timm

    import kdbias  # noqa: F401

    assert timm.is_model(name)
    kwargs = {"img_size": 56, "depth": 1} if name.startswith("dinov2_vits14") else {}
    model = timm.create_model(name, num_classes=10, **kwargs)
    reference = build_model(name, num_classes=10, **kwargs)
    assert type(model) is type(reference) and model.state_dict().keys() == reference.state_dict().keys()
    cfg = timm.models.get_pretrained_cfg(name)
    imagenet = name in ("convnextv2_tiny_cifar", "dinov2_vits14", "dinov2_vits14_probe")
    assert (cfg.mean == tuple(IMAGENET_DEFAULT_MEAN)) if imagenet else cfg.mean is None
    if name == "resnet18_cifar":
        assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, torch.nn.Identity)  # the CIFAR stem
