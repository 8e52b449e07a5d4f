import pytest
import torch

from kdbias.models import (
    attention_maps,
    block_modules,
    block_outputs,
    build_model,
    check_block_indices,
    forward_features_and_blocks,
    is_vit,
    materialized_attention,
    num_blocks,
    num_prefix_tokens_of,
    patch_size_of,
)


@pytest.fixture(scope="module")
def deit():
    torch.manual_seed(0)
    return build_model("deit_tiny_p4", drop_path_rate=0.0)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return build_model("resnet18_cifar")


@pytest.fixture(scope="module")
def convnext():
    torch.manual_seed(0)
    return build_model("convnextv2_tiny_cifar")


@pytest.fixture
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_block_counts(deit, resnet, convnext):
    assert (num_blocks(resnet), num_blocks(convnext), num_blocks(deit)) == (8, 18, 12)
    assert block_modules(resnet)[0] is resnet.layer1[0] and block_modules(resnet)[-1] is resnet.layer4[1]
    assert block_modules(convnext)[6] is convnext.stages[2].blocks[0]
    assert is_vit(deit) and not is_vit(resnet) and not is_vit(convnext)


def test_vit_block_outputs_are_patch_tokens_in_requested_order(deit, x):
    deit.eval()
    seen = {}
    handles = [deit.blocks[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out)) for i in (3, 9)]
    with torch.no_grad():
        feats = block_outputs(deit, x, [9, 3, 9])
    for handle in handles:
        handle.remove()
    assert [f.shape for f in feats] == [torch.Size([2, 64, 192])] * 3
    assert torch.equal(feats[0], seen[9][:, 1:]) and torch.equal(feats[1], seen[3][:, 1:])
    assert torch.equal(feats[2], feats[0])
    with torch.no_grad():
        assert len(block_outputs(deit, x)) == 12


def test_resnet_block_maps(resnet, x):
    resnet.eval()
    with torch.no_grad():
        feats = block_outputs(resnet, x)
    expected = [(64, 32)] * 2 + [(128, 16)] * 2 + [(256, 8)] * 2 + [(512, 4)] * 2
    assert [tuple(f.shape) for f in feats] == [(2, c, s, s) for c, s in expected]
    assert all(not block._forward_hooks for block in block_modules(resnet))


def test_convnext_block_maps(convnext, x):
    convnext.eval()
    with torch.no_grad():
        feats = block_outputs(convnext, x, [0, 3, 17])
    assert [tuple(f.shape) for f in feats] == [(2, 96, 16, 16), (2, 192, 8, 8), (2, 768, 2, 2)]


@pytest.mark.parametrize("fixture", ["deit", "resnet", "convnext"])
def test_one_pass_gives_the_models_output(fixture, x, request):
    model = request.getfixturevalue(fixture).eval()
    with torch.no_grad():
        out, feats = forward_features_and_blocks(model, x, [1, 5])
        reference = model(x)
    assert out.shape == (2, 10) and len(feats) == 2
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)


def test_headless_vit_returns_pooled_features():
    model = build_model("dinov2_vits14", img_size=28).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        out, (feat,) = forward_features_and_blocks(model, x, [11])
        reference = model(x)
    assert out.shape == (2, 384) and feat.shape == (2, 4, 384)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    assert (patch_size_of(model), num_prefix_tokens_of(model)) == (14, 1)


@pytest.mark.parametrize("fixture", ["deit", "resnet"])
def test_gradients_flow_through_block_outputs(fixture, x, request):
    model = request.getfixturevalue(fixture).train()
    model.zero_grad(set_to_none=True)
    _, (feat,) = forward_features_and_blocks(model, x, [3])
    assert feat.requires_grad
    feat.pow(2).mean().backward()
    blocks = block_modules(model)
    grads = [p.grad for p in blocks[3].parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in blocks[4].parameters())  # after the tap: untouched
    model.zero_grad(set_to_none=True)
    model.eval()


def test_hooks_removed_after_a_failing_forward(resnet):
    with pytest.raises(RuntimeError):
        forward_features_and_blocks(resnet, torch.randn(1, 5, 32, 32), [0, 7])
    assert all(not block._forward_hooks for block in block_modules(resnet))


def test_attention_maps_are_softmax_rows(deit, x):
    deit.eval()
    with torch.no_grad():
        maps = attention_maps(deit, x, [11, 0])
    assert [tuple(m.shape) for m in maps] == [(2, 3, 65, 65)] * 2
    assert all(m.min() >= 0 for m in maps)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 3, 65))
    assert not torch.allclose(maps[0], maps[1])
    assert len(attention_maps(deit, x[:1])) == 12
    assert (patch_size_of(deit), num_prefix_tokens_of(deit)) == (4, 1)


def test_attention_maps_reproduce_the_fused_block(deit, x):
    """softmax(q k^T / sqrt(d)) from the block's own qkv, and attn @ v through proj, match the fused run."""
    deit.eval()
    attn = deit.blocks[6].attn
    captured = {}
    handle = attn.register_forward_hook(lambda m, args, out: captured.update(inp=args[0], out=out))
    attn.fused_attn = True
    with torch.no_grad():
        fused_logits = deit(x)
        (maps,) = attention_maps(deit, x, [6])
    handle.remove()
    tokens = captured["inp"]  # from the second (unfused) pass: same input, same weights
    B, N, C = tokens.shape
    q, k, v = attn.qkv(tokens).reshape(B, N, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
    with torch.no_grad():
        by_hand = torch.softmax(q @ k.transpose(-2, -1) / (C // attn.num_heads) ** 0.5, dim=-1)
        out = attn.proj((maps @ v).transpose(1, 2).reshape(B, N, C))
    torch.testing.assert_close(maps, by_hand, rtol=0, atol=1e-5)
    torch.testing.assert_close(out, captured["out"], rtol=0, atol=1e-5)
    with torch.no_grad(), materialized_attention(deit):
        unfused_logits = deit(x)
    torch.testing.assert_close(unfused_logits, fused_logits, rtol=0, atol=1e-5)


def test_fused_flags_restored_even_after_an_error(deit):
    flags = [i % 2 == 0 for i in range(12)]
    for block, flag in zip(deit.blocks, flags):
        block.attn.fused_attn = flag
    with pytest.raises(KeyError):
        with materialized_attention(deit):
            assert not any(block.attn.fused_attn for block in deit.blocks)
            raise KeyError("inside")
    assert [block.attn.fused_attn for block in deit.blocks] == flags
    with torch.no_grad():
        attention_maps(deit, torch.randn(1, 3, 32, 32), [2])
    assert [block.attn.fused_attn for block in deit.blocks] == flags
    assert all(not block.attn.attn_drop._forward_pre_hooks for block in deit.blocks)


def test_attention_needs_a_vit(resnet, x):
    with pytest.raises(TypeError, match="ResNet"):
        attention_maps(resnet, x)
    with pytest.raises(TypeError):
        patch_size_of(resnet)


@pytest.mark.parametrize(("fixture", "bad", "depth"), [("deit", 12, 12), ("deit", -1, 12), ("resnet", 8, 8)])
def test_out_of_range_index(fixture, bad, depth, request, x):
    model = request.getfixturevalue(fixture)
    with pytest.raises(ValueError) as info:
        forward_features_and_blocks(model, x, [0, bad])
    message = str(info.value)
    assert str(bad) in message and f"0..{depth - 1}" in message and type(model).__name__ in message
    assert check_block_indices(model, [0, depth - 1]) == [0, depth - 1]
