import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file

from kdbias.models import PretrainedWeightsError, build_model


def _save_timm(tmp_path, arch, filename, **kwargs):
    torch.manual_seed(123)
    state = timm.create_model(arch, **kwargs).state_dict()
    path = tmp_path / filename
    if filename.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path, state


def test_convnext_loads_every_weight_but_stem_and_head(tmp_path):
    path, state = _save_timm(tmp_path, "convnextv2_tiny", "w.safetensors", num_classes=1000)
    torch.manual_seed(0)
    model = build_model("convnextv2_tiny_cifar", num_classes=10, pretrained=path)
    loaded = model.state_dict()
    assert model.stem[0].weight.shape == (96, 3, 2, 2)
    assert model.head.fc.weight.shape == (10, 768)
    compared = [k for k in state if not k.startswith(("stem.0.", "head.fc."))]
    assert "stages.2.blocks.8.conv_dw.weight" in compared
    for key in compared:
        assert torch.equal(loaded[key], state[key]), key
    assert set(loaded) == set(state)


def test_deit_p4_resizes_224px_weights(tmp_path):
    path, state = _save_timm(tmp_path, "deit_tiny_patch16_224", "deit.safetensors")
    assert state["pos_embed"].shape == (1, 197, 192)
    model = build_model("deit_tiny_p4", pretrained=path)
    loaded = model.state_dict()
    assert loaded["pos_embed"].shape == (1, 65, 192)
    assert torch.equal(loaded["pos_embed"][:, 0], state["pos_embed"][:, 0])  # CLS position kept
    assert loaded["patch_embed.proj.weight"].shape == (192, 3, 4, 4)
    assert torch.equal(loaded["cls_token"], state["cls_token"])
    for key in (k for k in state if k.startswith("blocks.") or k.startswith("norm.")):
        assert torch.equal(loaded[key], state[key]), key
    assert loaded["head.weight"].shape == (10, 192)


def test_pth_file_and_wrapped_checkpoint(tmp_path):
    path, state = _save_timm(tmp_path, "deit_tiny_patch16_224", "deit.pth")
    model = build_model("deit_tiny_p4", pretrained=str(path))
    assert torch.equal(model.blocks[5].mlp.fc1.weight, state["blocks.5.mlp.fc1.weight"])

    wrapped = tmp_path / "ckpt.pt"
    torch.save({"state_dict": state}, wrapped)
    model = build_model("deit_tiny_p4", pretrained=wrapped)
    assert torch.equal(model.blocks[11].attn.qkv.weight, state["blocks.11.attn.qkv.weight"])


def test_dinov2_from_518px_file_at_56px(tmp_path):
    path, state = _save_timm(tmp_path, "vit_small_patch14_dinov2", "dinov2.safetensors", num_classes=0)
    model = build_model("dinov2_vits14", pretrained=path, img_size=56).eval()
    assert state["pos_embed"].shape == (1, 37 * 37 + 1, 384)
    assert model.pos_embed.shape == (1, 4 * 4 + 1, 384)
    assert torch.equal(model.blocks[3].ls1.gamma, state["blocks.3.ls1.gamma"])
    assert torch.equal(model.blocks[3].attn.proj.weight, state["blocks.3.attn.proj.weight"])
    with torch.no_grad():
        assert model(torch.randn(2, 3, 56, 56)).shape == (2, 384)


def test_weights_of_another_architecture(tmp_path):
    path, _ = _save_timm(tmp_path, "resnet18", "resnet.safetensors")
    with pytest.raises(PretrainedWeightsError) as info:
        build_model("deit_tiny_p4", pretrained=path)
    message = str(info.value)
    assert str(path) in message
    assert "deit_tiny_patch16_224" in message
    assert "cls_token" in message or "pos_embed" in message or "blocks.0" in message


def test_weights_with_mismatching_shapes(tmp_path):
    path, _ = _save_timm(tmp_path, "deit_small_patch16_224", "small.safetensors")
    with pytest.raises(PretrainedWeightsError) as info:
        build_model("deit_tiny_p4", pretrained=path)
    assert str(path) in str(info.value)
    assert "384" in str(info.value) and "192" in str(info.value)


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_model("convnextv2_tiny_cifar", pretrained=path)


def test_unreachable_hub_asks_for_a_local_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(PretrainedWeightsError) as info:
        build_model("deit_tiny_p4", pretrained="hub")
    assert isinstance(info.value, RuntimeError)
    message = str(info.value)
    assert "deit_tiny_patch16_224" in message
    assert "hub" in message and 'pretrained="/path/to/model.safetensors"' in message


def test_offline_hub_error_names_the_argument_and_the_random_option():
    """Offline (HF_HUB_OFFLINE=1, set for the suite) the hub fails at once; the error says which
    argument to change and that None means random weights."""
    from kdbias import CKADistillModule, TeacherModule
    from kdbias.models import PretrainedWeightsError

    with pytest.raises(PretrainedWeightsError) as teacher:
        CKADistillModule(
            "deit_tiny_p4",
            teacher_pretrained="hub",
            teacher_image_size=56,
            teacher_kwargs={"depth": 1},
            layer_pairs=[(0, 0)],
            dataset="digits",
        )
    assert 'teacher_pretrained="/path/to/model.safetensors"' in str(teacher.value)
    assert "teacher_pretrained=None" in str(teacher.value) and "--model.teacher_pretrained" in str(teacher.value)
    with pytest.raises(PretrainedWeightsError, match="pretrained=None for random weights"):
        TeacherModule("convnextv2_tiny_cifar", pretrained="hub", dataset="digits")
