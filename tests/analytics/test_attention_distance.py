import math

import pytest
import torch

from kdbias.analytics.attention_distance import grid_distances, mean_attention_distance

# Mean pairwise distance between the cells of an 8x8 grid (self-pairs included),
# in cells, times the patch size 4: 4 * 4.136475... (computed independently below).
UNIFORM_8x8_P4 = 16.5459


def _embed(patch_attn: torch.Tensor, num_prefix: int = 1) -> torch.Tensor:
    """[B, H, N, N] patch attention -> [B, H, P+N, P+N] with zero prefix rows/cols."""
    b, h, n, _ = patch_attn.shape
    out = torch.zeros(b, h, num_prefix + n, num_prefix + n, dtype=patch_attn.dtype)
    out[:, :, num_prefix:, num_prefix:] = patch_attn
    return out


def _brute_force(attn, patch_size, num_prefix):
    b, h, t, _ = attn.shape
    n = t - num_prefix
    grid = math.isqrt(n)
    out = []
    for head in range(h):
        total = 0.0
        for img in range(b):
            for q in range(n):
                qr, qc = divmod(q, grid)
                for k in range(n):
                    kr, kc = divmod(k, grid)
                    d = patch_size * math.hypot(qr - kr, qc - kc)
                    total += float(attn[img, head, num_prefix + q, num_prefix + k]) * d
        out.append(total / (b * n))
    return torch.tensor(out)


def test_uniform_constant_matches_independent_sum():
    cells = [(r, c) for r in range(8) for c in range(8)]
    mean = sum(math.dist(a, b) for a in cells for b in cells) / len(cells) ** 2
    assert 4 * mean == pytest.approx(UNIFORM_8x8_P4, abs=1e-4)


def test_grid_distances_closed_form():
    d = grid_distances(8, 4, torch.device("cpu"))
    assert d.shape == (64, 64) and d.dtype == torch.float32
    assert torch.equal(d, d.T) and torch.all(d.diagonal() == 0)
    assert d[0, 1] == 4 and d[0, 8] == 4
    assert d[0, 9] == pytest.approx(4 * math.sqrt(2))
    assert d[0, 63] == pytest.approx(4 * 7 * math.sqrt(2))
    assert d[10, 29] == pytest.approx(4 * math.hypot(2, 3))  # (1,2) -> (3,5)


def test_uniform_over_patches():
    attn = _embed(torch.full((2, 3, 64, 64), 1 / 64))
    attn[:, :, 0, :] = 1 / 65  # CLS row is ignored
    out = mean_attention_distance(attn, patch_size=4)
    assert out.shape == (3,) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((3,), UNIFORM_8x8_P4), atol=1e-3, rtol=0)


def test_uniform_over_all_tokens_counts_cls_as_zero_distance():
    attn = torch.full((1, 3, 65, 65), 1 / 65)
    out = mean_attention_distance(attn, patch_size=4)
    torch.testing.assert_close(out, torch.full((3,), UNIFORM_8x8_P4 * 64 / 65), atol=1e-3, rtol=0)


def test_identity_attention_is_zero():
    attn = _embed(torch.eye(64).expand(2, 3, 64, 64))
    assert torch.all(mean_attention_distance(attn, patch_size=4) == 0)


def test_right_neighbour():
    patch = torch.zeros(64, 64)
    has_right = torch.zeros(64, dtype=torch.bool)
    for q in range(64):
        r, c = divmod(q, 8)
        if c < 7:
            patch[q, q + 1] = 1.0
            has_right[q] = True
        else:
            patch[q, q] = 1.0
    attn = _embed(patch.expand(2, 3, 64, 64).clone())
    out = mean_attention_distance(attn, patch_size=4)
    torch.testing.assert_close(out, torch.full((3,), 4.0 * 56 / 64))
    per_query = (patch * grid_distances(8, 4, torch.device("cpu"))).sum(-1)
    assert has_right.sum() == 56
    assert torch.all(per_query[has_right] == 4.0) and torch.all(per_query[~has_right] == 0)


@pytest.mark.parametrize("num_prefix", [0, 1, 2])
def test_matches_brute_force(num_prefix):
    g = torch.Generator().manual_seed(num_prefix)
    attn = torch.randn(2, 3, num_prefix + 16, num_prefix + 16, generator=g).mul(3).softmax(-1)
    out = mean_attention_distance(attn, patch_size=4, num_prefix_tokens=num_prefix)
    ref = _brute_force(attn, 4, num_prefix)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, out[0].expand(3))  # heads are kept apart


def test_linear_in_patch_size_and_accepts_bf16():
    attn = torch.randn(2, 3, 65, 65, generator=torch.Generator().manual_seed(0)).softmax(-1)
    ref = mean_attention_distance(attn, patch_size=4)
    torch.testing.assert_close(mean_attention_distance(attn, patch_size=8), 2 * ref)
    out = mean_attention_distance(attn.bfloat16(), patch_size=4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=0)


@pytest.mark.parametrize(
    "shape, prefix, match",
    [
        ((3, 65, 65), 1, r"\[B, heads, T, T\]"),
        ((1, 3, 65, 64), 1, r"\[B, heads, T, T\]"),
        ((1, 3, 64, 64), 1, "not a square grid"),
        ((1, 3, 1, 1), 1, "at least one patch token"),
        ((1, 3, 2, 2), 2, "at least one patch token"),
        ((1, 3, 65, 65), -1, "num_prefix_tokens"),
    ],
)
def test_shape_errors(shape, prefix, match):
    with pytest.raises(ValueError, match=match):
        mean_attention_distance(torch.rand(shape), patch_size=4, num_prefix_tokens=prefix)
