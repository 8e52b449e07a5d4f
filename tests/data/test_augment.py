"""Augmentation ops against direct pixel references."""

import numpy as np
import pytest
import torch
from scipy import stats

from kdbias.data import cutmix, mixup, normalize, random_crop, random_crop_flip, random_hflip, to_soft_targets
from kdbias.data.augment import _sample_beta, _sample_gamma


def gen(seed):
    return torch.Generator().manual_seed(seed)


def shifted(images, dy, dx):
    """Reference: out[..., y, x] = images[..., y + dy, x + dx] where in range, else 0."""
    h, w = images.shape[-2:]
    out = torch.zeros_like(images)
    ys, ye = max(0, -dy), min(h, h - dy)
    xs, xe = max(0, -dx), min(w, w - dx)
    out[..., ys:ye, xs:xe] = images[..., ys + dy : ye + dy, xs + dx : xe + dx]
    return out


def find_shifts(out, images, padding=4):
    """Per image, every (dy, dx) whose reference shift equals ``out`` exactly."""
    r = range(-padding, padding + 1)
    shifts = [(dy, dx) for dy in r for dx in r]
    match = torch.stack([(shifted(images, dy, dx) == out).flatten(1).all(1) for dy, dx in shifts], 1)
    return [[shifts[j] for j in torch.nonzero(row).flatten().tolist()] for row in match]


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_random_crop_is_a_zero_filled_shift(dtype):
    images = torch.randint(1, 256, (64, 3, 12, 10), generator=gen(0)).to(dtype)
    out = random_crop(images, padding=4, generator=gen(1))
    assert out.shape == images.shape and out.dtype == dtype
    found = find_shifts(out, images)
    assert all(len(f) == 1 for f in found)  # random content: exactly one shift matches
    assert len({f[0] for f in found}) > 10  # offsets drawn independently per image


def test_random_crop_reaches_every_shift():
    images = torch.rand(1500, 1, 9, 9, generator=gen(2)) + 0.1
    found = find_shifts(random_crop(images, 4, gen(3)), images)
    assert {f[0] for f in found} == {(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)}


def test_random_crop_padding_zero_is_identity():
    images = torch.rand(4, 3, 8, 8)
    assert torch.equal(random_crop(images, 0, gen(0)), images)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
@pytest.mark.parametrize("flip_p", [0.0, 0.5, 1.0])
def test_random_crop_flip_is_a_shift_then_a_mirror(dtype, flip_p):
    images = torch.randint(1, 256, (64, 3, 12, 10), generator=gen(0)).to(dtype)
    out = random_crop_flip(images, padding=4, flip_p=flip_p, generator=gen(1))
    # The same draws, replayed: offsets [2, B] in 0..2p, then (if flipping) one uniform per image.
    g = gen(1)
    off = torch.randint(0, 9, (2, 64), generator=g) - 4
    flip = torch.rand(64, generator=g) < flip_p if flip_p > 0 else torch.zeros(64, dtype=torch.bool)
    assert out.shape == images.shape and out.dtype == dtype
    for b in range(64):
        ref = shifted(images[b], int(off[0, b]), int(off[1, b]))
        if flip[b]:
            ref = torch.flip(ref, [-1])
        assert torch.equal(out[b], ref), b
    if flip_p == 0.5:
        assert 10 < int(flip.sum()) < 54


def test_random_crop_flip_padding_zero_no_flip_is_identity():
    images = torch.rand(4, 3, 8, 8)
    assert torch.equal(random_crop_flip(images, 0, 0.0, gen(0)), images)


def test_random_hflip_mirrors_or_keeps_each_image():
    images = torch.rand(400, 3, 6, 7, generator=gen(0))
    out = random_hflip(images, p=0.5, generator=gen(1))
    flipped = (out == torch.flip(images, [-1])).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert torch.all(flipped ^ kept)
    assert 150 < int(flipped.sum()) < 250
    assert torch.equal(random_hflip(images, p=0.0, generator=gen(2)), images)
    assert torch.equal(random_hflip(images, p=1.0, generator=gen(2)), torch.flip(images, [-1]))


def test_cutmix_weights_equal_pasted_area():
    b, h, w = 8, 16, 12
    clipped = 0
    for seed in range(40):
        images = torch.rand(b, 3, h, w, generator=gen(seed))
        labels = torch.arange(b)  # one class per image: each weight is readable on its own
        out, soft = cutmix(images, labels, num_classes=b, alpha=1.0, generator=gen(1000 + seed))
        assert soft.dtype == torch.float32 and soft.shape == (b, b)
        torch.testing.assert_close(soft.sum(1), torch.ones(b))
        for i in range(b):
            pasted = (out[i] != images[i]).any(0)  # [H, W]
            area = pasted.float().mean().item()
            if area == 0:
                assert torch.equal(out[i], images[i])
                assert soft[i, i].item() == pytest.approx(1.0)
                continue
            rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
            box = torch.zeros_like(pasted)
            box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
            assert torch.equal(pasted, box)  # one rectangle
            partners = [j for j in range(b) if j != i and torch.equal(out[i][:, pasted], images[j][:, pasted])]
            assert len(partners) == 1
            j = partners[0]
            assert torch.equal(out[i][:, ~pasted], images[i][:, ~pasted])
            assert soft[i, j].item() == pytest.approx(area, abs=1e-6)
            assert soft[i, i].item() == pytest.approx(1 - area, abs=1e-6)
            touches = rows.min() == 0 or cols.min() == 0 or rows.max() == h - 1 or cols.max() == w - 1
            clipped += bool(touches)
    assert clipped > 0  # boxes at the border were exercised


def test_cutmix_mixes_soft_targets_and_keeps_dtype():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=gen(0))
    targets = torch.softmax(torch.randn(6, 5, generator=gen(1)), 1)
    out, soft = cutmix(images, targets, num_classes=5, alpha=1.0, generator=gen(2))
    assert out.dtype == torch.uint8
    for i in range(6):
        pasted = (out[i] != images[i]).any(0)
        area = pasted.float().mean()
        j = (i - 1) % 6 if pasted.any() else i
        expected = (1 - area) * targets[i] + area * targets[j]
        torch.testing.assert_close(soft[i], expected)


def test_cutmix_apply_false_is_identity():
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    out, soft = cutmix(images, labels, 4, generator=gen(0), apply=torch.tensor(False))
    assert torch.equal(out, images) and torch.equal(soft, torch.eye(4))


def test_mixup_is_a_convex_combination():
    b = 6
    images = torch.rand(b, 3, 5, 5, generator=gen(0), dtype=torch.float64)
    labels = torch.arange(b)
    out, soft = mixup(images, labels, num_classes=b, alpha=0.4, generator=gen(1))
    torch.testing.assert_close(soft.sum(1), torch.ones(b, dtype=soft.dtype))
    lams = []
    for i in range(b):
        best = None
        for j in range(b):
            if j == i:
                continue
            d, t = (images[i] - images[j]).flatten(), (out[i] - images[j]).flatten()
            lam = float(d @ t / (d @ d))  # least squares: out_i - x_j = lam (x_i - x_j)
            res = float((t - lam * d).abs().max())
            if best is None or res < best[0]:
                best = (res, j, lam)
        res, j, lam = best
        assert res < 1e-10 and 0.0 <= lam <= 1.0
        assert soft[i, i].item() == pytest.approx(lam, abs=1e-6)
        assert soft[i, j].item() == pytest.approx(1 - lam, abs=1e-6)
        lams.append(lam)
    assert max(lams) - min(lams) < 1e-9  # one lambda per batch


def test_mixup_rejects_uint8():
    with pytest.raises(TypeError, match="floating"):
        mixup(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), 2)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_beta_draws_match_scipy(alpha):
    g = gen(0)
    draws = np.array([_sample_beta(alpha, torch.device("cpu"), g).item() for _ in range(3000)])
    assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_gamma_draws_match_scipy_and_follow_the_generator(alpha):
    draws = _sample_gamma(alpha, 4000, torch.device("cpu"), gen(1))
    assert draws.dtype == torch.float64 and bool((draws > 0).all())
    assert stats.kstest(draws.numpy(), stats.gamma(alpha).cdf).pvalue > 1e-3
    assert torch.equal(draws, _sample_gamma(alpha, 4000, torch.device("cpu"), gen(1)))  # the generator's stream


def test_normalize_matches_manual_formula():
    u8 = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8, generator=gen(0))
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    ref = np.empty((3, 3, 4, 4), dtype=np.float64)
    for c in range(3):
        ref[:, c] = (u8[:, c].numpy() / 255.0 - mean[c]) / std[c]
    out = normalize(u8, mean, std)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(normalize(u8.float() / 255, mean, std), out)


def test_to_soft_targets():
    labels = torch.tensor([2, 0, 1])
    np.testing.assert_array_equal(to_soft_targets(labels, 3).numpy(), np.eye(3)[[2, 0, 1]])
    soft = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    assert to_soft_targets(soft, 2) is soft
    with pytest.raises(ValueError):
        to_soft_targets(torch.zeros(3, 4), 5)


def test_seeded_generator_reproduces_stream():
    images = torch.rand(16, 3, 8, 8)
    a = random_hflip(random_crop(images, 4, gen(7)), 0.5, gen(8))
    b = random_hflip(random_crop(images, 4, gen(7)), 0.5, gen(8))
    c = random_hflip(random_crop(images, 4, gen(9)), 0.5, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
