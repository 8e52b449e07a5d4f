import numpy as np
import pytest
import torch

from kdbias.losses import (
    biased_hsic,
    cka_loss,
    gram_linear,
    linear_cka,
    permutation_floor,
    unbiased_hsic,
    unpaired_order,
)

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


# --- The default loss separates aligned from independent features at the paper's batch and widths ----

PAPER_BATCH, STUDENT_WIDTH = 512, 64 * 192  # EXP-3: 512 images, 64 student tokens x 192 channels


@pytest.fixture(scope="module")
def paper_features():
    """float32 features at EXP-3's batch: a student side (12,288 wide) and teacher sides 8,192 and
    24,576 wide, independent isotropic, or linear maps of one shared rank-32 latent plus noise."""
    g = torch.Generator().manual_seed(0)
    n = PAPER_BATCH
    latent = torch.randn(n, 32, generator=g)

    def side(width, shared):
        noise = torch.randn(n, width, generator=g)
        return latent @ torch.randn(32, width, generator=g) + noise if shared else noise

    return {(width, shared): side(width, shared) for width in (STUDENT_WIDTH, 8192, 24576) for shared in (False, True)}


@pytest.mark.parametrize("teacher_width", [8192, 24576])
def test_default_loss_separates_independent_from_low_rank_shared_features(paper_features, teacher_width):
    student = paper_features[STUDENT_WIDTH, False]
    independent = cka_loss(student, paper_features[teacher_width, False])
    shared = cka_loss(paper_features[STUDENT_WIDTH, True], paper_features[teacher_width, True])
    assert independent.item() >= 0.8, "independent features must leave the loss high"
    assert shared.item() <= 0.2, "features sharing a rank-32 latent must bring the loss low"
    # the biased estimator (the flag) cannot tell independent features from aligned ones here
    biased = cka_loss(student, paper_features[teacher_width, False], unbiased=False)
    assert biased.item() <= 0.1


def test_default_loss_is_one_minus_the_debiased_cka_written_out():
    x, y = _demo()
    assert cka_loss(x, y).item() == pytest.approx(1.0 - _np_cka(x.numpy(), y.numpy(), unbiased=True), abs=1e-10)


def test_unpaired_order_pairs_no_example_with_itself():
    for n in (2, 3, 5, 64):
        for seed in range(5):
            perm = unpaired_order(n, torch.Generator().manual_seed(seed))
            assert sorted(perm.tolist()) == list(range(n))  # a permutation
            assert (perm != torch.arange(n)).all()  # with no fixed point
    draws = {tuple(unpaired_order(5, torch.Generator().manual_seed(s)).tolist()) for s in range(200)}
    assert len(draws) == 24  # every 5-cycle (4! of them) is drawn: a random cycle, not one fixed shift
    with pytest.raises(ValueError, match="at least 2"):
        unpaired_order(1)


@pytest.mark.parametrize("unbiased", [True, False])
def test_permutation_floor_is_cka_of_the_manually_repaired_examples(unbiased):
    n = 24
    x = _randn(30, n, 6)
    y = x @ _randn(31, 6, 9) + 0.1 * _randn(32, n, 9)  # strongly paired
    perm = unpaired_order(n, torch.Generator().manual_seed(3))
    y_np, order = y.numpy(), perm.numpy()
    repaired = np.stack([y_np[order[i]] for i in range(n)])  # example i now meets example order[i]'s y
    expected = _np_cka(x.numpy(), repaired, unbiased)
    floor = permutation_floor(x.requires_grad_(), y, perm, unbiased)
    assert floor.item() == pytest.approx(expected, abs=1e-10)
    assert not floor.requires_grad
    paired = linear_cka(x, y, unbiased).item()
    assert paired > 0.7 and floor.item() < paired - 0.5  # the pairing is what made it high
