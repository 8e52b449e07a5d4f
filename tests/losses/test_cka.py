import numpy as np
import pytest
import torch

from kdbias.losses import biased_hsic, cka_loss, gram_linear, linear_cka, unbiased_hsic

# Reference: Kornblith et al. 2019's numpy implementation (Gram form), written out.


def _np_centre_gram(gram, unbiased):
    gram = gram.copy()
    n = gram.shape[0]
    if unbiased:
        np.fill_diagonal(gram, 0)
        means = gram.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = gram.mean(0)
        means -= means.mean() / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def _np_cka(x, y, unbiased=False):
    x, y = np.asarray(x, np.float64).reshape(len(x), -1), np.asarray(y, np.float64).reshape(len(y), -1)
    k, l = _np_centre_gram(x @ x.T, unbiased), _np_centre_gram(y @ y.T, unbiased)
    return (k * l).sum() / np.sqrt((k * k).sum() * (l * l).sum())


def _demo():
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    return torch.tensor(x), torch.tensor(y)


def _randn(seed, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("form", ["auto", "gram", "feature"])
def test_kornblith_demo_values(form):
    x, y = _demo()
    assert linear_cka(x, y, form=form).item() == pytest.approx(0.55761, abs=1e-4)
    assert linear_cka(x, y, True, form=form).item() == pytest.approx(0.51346, abs=1e-4)
    assert linear_cka(x.float(), y.float(), True, form=form).item() == pytest.approx(0.51346, abs=1e-4)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize(("n", "d"), [(50, 8), (12, 30)])
def test_matches_numpy_reference_and_forms_agree(unbiased, n, d):
    x, y = _randn(0, n, d), _randn(1, n, d + 3) + _randn(2, n, d) @ _randn(3, d, d + 3)
    ref = _np_cka(x.numpy(), y.numpy(), unbiased)
    gram = linear_cka(x, y, unbiased, form="gram").item()
    feature = linear_cka(x, y, unbiased, form="feature").item()
    assert gram == pytest.approx(ref, abs=1e-10)
    assert feature == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_self_similarity_is_one(unbiased):
    x = _randn(4, 20, 7)
    for form in ("gram", "feature"):
        assert linear_cka(x, x, unbiased, form=form).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("unbiased", [False, True])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(unbiased):
    x, y = _demo()
    q, _ = torch.linalg.qr(_randn(5, 10, 10))
    base = linear_cka(x, y, unbiased)
    torch.testing.assert_close(linear_cka(x @ q, y, unbiased), base)
    torch.testing.assert_close(linear_cka(x, 7.5 * y, unbiased), base)
    torch.testing.assert_close(linear_cka(1e-3 * x @ q, y @ q.T, unbiased), base)


def test_not_invariant_to_badly_conditioned_linear_map():
    x, y = _demo()
    a = torch.diag(torch.logspace(0, 3, 10, dtype=torch.float64)) @ torch.linalg.qr(_randn(6, 10, 10))[0]
    assert abs(linear_cka(x @ a, y).item() - linear_cka(x, y).item()) > 0.05


def test_independent_gaussians_debiased_near_zero_biased_near_d_over_d_plus_n():
    # For independent Gaussians with n examples and width d, biased CKA ~ d / (d + n).
    n, d = 32, 64
    biased, debiased = [], []
    for seed in range(8):
        x, y = _randn(2 * seed, n, d), _randn(2 * seed + 1, n, d)
        biased.append(linear_cka(x, y).item())
        debiased.append(linear_cka(x, y, True).item())
    assert abs(np.mean(debiased)) < 0.1
    assert np.mean(biased) == pytest.approx(d / (d + n), abs=0.03)


def test_unbiased_needs_four_examples():
    x = _randn(7, 3, 5)
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(x, x, unbiased=True)
    with pytest.raises(ValueError, match="at least 4"):
        unbiased_hsic(gram_linear(x), gram_linear(x))
    assert linear_cka(x, x).item() == pytest.approx(1.0)


def test_mismatched_n_raises():
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(_randn(0, 5, 3), _randn(1, 6, 3))


def test_trailing_dims_flattened():
    x, y = _randn(8, 16, 4, 5), _randn(9, 16, 3, 2, 2)
    for unbiased in (False, True):
        flat = linear_cka(x.reshape(16, 20), y.reshape(16, 12), unbiased)
        torch.testing.assert_close(linear_cka(x, y, unbiased), flat)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("form", ["gram", "feature"])
def test_float32_stable_on_large_magnitudes(unbiased, form):
    x = 1e4 * _randn(10, 64, 16, dtype=torch.float32)
    y = x @ _randn(11, 16, 24, dtype=torch.float32) + 1e4 * _randn(12, 64, 24, dtype=torch.float32)
    y = y + 3e4  # large common offset on top of large values
    ref = _np_cka(x.double().numpy(), y.double().numpy(), unbiased)
    out = linear_cka(x, y, unbiased, form=form)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref, abs=1e-4)


def test_bf16_inputs_accepted():
    x, y = _demo()
    xb, yb = x.bfloat16(), y.bfloat16()
    out = linear_cka(xb, yb, True)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(_np_cka(xb.double().numpy(), yb.double().numpy(), True), abs=1e-4)


def test_hsic_estimators_against_written_out_formulas():
    x, y = _randn(13, 9, 4), _randn(14, 9, 6)
    k, l = gram_linear(x), gram_linear(y)
    kn, ln, n = k.numpy(), l.numpy(), 9
    h = np.eye(n) - np.ones((n, n)) / n
    assert biased_hsic(k, l).item() == pytest.approx(np.trace(kn @ h @ ln @ h) / (n - 1) ** 2, rel=1e-10)
    kt, lt = kn - np.diag(np.diag(kn)), ln - np.diag(np.diag(ln))
    one = np.ones(n)
    song = (
        np.trace(kt @ lt) + one @ kt @ one * (one @ lt @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ kt @ lt @ one
    ) / (n * (n - 3))
    assert unbiased_hsic(k, l).item() == pytest.approx(song, rel=1e-10)
    # The unbiased estimator does not depend on the features' mean.
    assert unbiased_hsic(gram_linear(x + 5.0), gram_linear(y - 2.0)).item() == pytest.approx(song, rel=1e-8)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("form", ["gram", "feature"])
def test_differentiable(unbiased, form):
    x = _randn(15, 8, 3).requires_grad_(True)
    y = _randn(16, 8, 5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: linear_cka(a, b, unbiased, form=form), (x, y))


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("form", ["gram", "feature"])
def test_cka_loss_finite_gradient_for_constant_representation(unbiased, form):
    y = _randn(17, 16, 6, dtype=torch.float32)
    row = _randn(18, 1, 6, dtype=torch.float32)
    for x in (row.expand(16, 6).clone(), torch.full((16, 6), 0.1), torch.zeros(16, 6)):
        x.requires_grad_(True)
        yy = y.clone().requires_grad_(True)
        loss = cka_loss(x, yy, unbiased, form=form)
        loss.backward()
        assert loss.item() == pytest.approx(1.0)
        assert torch.isfinite(x.grad).all() and torch.isfinite(yy.grad).all()
        both = x.detach().clone().requires_grad_(True)
        cka_loss(both, both.detach() * 2, unbiased, form=form).backward()
        assert torch.isfinite(both.grad).all()
    assert torch.isnan(linear_cka(torch.zeros(16, 6), y))


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize(("n", "dx", "dy"), [(64, 8, 12), (256, 512, 384)])
def test_cka_loss_equals_one_minus_cka(unbiased, n, dx, dy):
    x = _randn(19, n, dx, dtype=torch.float32)
    y = x[:, :1].expand(n, dy) * 0.3 + _randn(20, n, dy, dtype=torch.float32)
    expected = 1.0 - linear_cka(x, y, unbiased)
    assert abs(cka_loss(x, y, unbiased).item() - expected.item()) < 1e-6
