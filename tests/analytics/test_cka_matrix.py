import numpy as np
import pytest
import torch

from kdbias.analytics.cka_matrix import MinibatchCKA, cka_matrix, diagonal_alignment
from kdbias.losses import linear_cka


def _np_unbiased_hsic(x, y):
    """Song et al. 2012, Eq. 5, written out with explicit sums over off-diagonal entries."""
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    n = len(x)
    k, l = x @ x.T, y @ y.T
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    return (
        np.trace(k @ l)
        + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ k @ l @ one)
    ) / (n * (n - 3))


def _model_feats(seed, n, widths, base=None):
    """Per-layer features of one batch: a shared random signal mixed into each layer."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 6, generator=g, dtype=torch.float64) if base is None else base
    feats = []
    for i, w in enumerate(widths):
        mix = torch.randn(6, w, generator=g, dtype=torch.float64)
        feats.append(base @ mix * (i + 1) + torch.randn(n, w, generator=g, dtype=torch.float64) * i)
    return base, feats


def test_single_batch_equals_pairwise_debiased_cka():
    base, fx = _model_feats(0, 24, [5, 9, 30])
    _, fy = _model_feats(1, 24, [7, 4], base=base)
    fy[1] = fy[1].reshape(24, 2, 2)
    m = cka_matrix([fx], [fy])
    assert m.shape == (3, 2)
    for i, a in enumerate(fx):
        for j, b in enumerate(fy):
            assert m[i, j].item() == pytest.approx(linear_cka(a, b, unbiased=True).item(), abs=1e-10)


def test_model_against_itself_has_unit_diagonal():
    acc = MinibatchCKA(4, 4)
    for seed in range(3):
        _, f = _model_feats(seed, 16, [3, 8, 8, 20])
        acc.update(f, f)
    m = acc.compute()
    torch.testing.assert_close(m.diagonal(), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(m, m.T)


def test_three_batch_accumulation_matches_numpy_reference():
    batches_x, batches_y = [], []
    for b in range(3):
        base, fx = _model_feats(10 + b, 12, [4, 10])
        _, fy = _model_feats(20 + b, 12, [6, 3, 15], base=base)
        batches_x.append(fx)
        batches_y.append(fy)
    xy = np.zeros((2, 3))
    xx, yy = np.zeros(2), np.zeros(3)
    for fx, fy in zip(batches_x, batches_y):
        for i, a in enumerate(fx):
            xx[i] += _np_unbiased_hsic(a.numpy(), a.numpy())
            for j, b in enumerate(fy):
                xy[i, j] += _np_unbiased_hsic(a.numpy(), b.numpy())
        for j, b in enumerate(fy):
            yy[j] += _np_unbiased_hsic(b.numpy(), b.numpy())
    ref = xy / np.sqrt(np.outer(xx, yy))
    np.testing.assert_allclose(cka_matrix(batches_x, batches_y).numpy(), ref, rtol=1e-9, atol=1e-12)
    # Not the mean of per-batch CKA matrices.
    per_batch = np.mean([cka_matrix([fx], [fy]).numpy() for fx, fy in zip(batches_x, batches_y)], axis=0)
    assert np.abs(per_batch - ref).max() > 1e-4


def test_float32_features_and_reset():
    _, f = _model_feats(3, 10, [5, 5])
    acc = MinibatchCKA(2, 2)
    acc.update([t.float() for t in f], [t.float() for t in f])
    acc.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        acc.compute()
    acc.update(f, f)
    assert acc.num_batches == 1


def test_batch_size_errors():
    acc = MinibatchCKA(1, 1)
    acc.update([torch.randn(8, 3)], [torch.randn(8, 2)])
    with pytest.raises(ValueError, match="equal batch sizes"):
        acc.update([torch.randn(7, 3)], [torch.randn(7, 2)])
    with pytest.raises(ValueError, match="same examples"):
        MinibatchCKA(1, 1).update([torch.randn(8, 3)], [torch.randn(9, 2)])
    with pytest.raises(ValueError, match="at least 4"):
        MinibatchCKA(1, 1).update([torch.randn(3, 3)], [torch.randn(3, 2)])
    with pytest.raises(ValueError, match="x-layers"):
        MinibatchCKA(2, 1).update([torch.randn(8, 3)], [torch.randn(8, 2)])


def test_diagonal_alignment_square():
    m = torch.tensor([[1.0, 0.2, 0.1], [0.3, 0.9, 0.5], [0.0, 0.4, 0.8]])
    out = diagonal_alignment(m)
    assert out["diag"] == pytest.approx(0.9)
    assert out["off_diag"] == pytest.approx(1.5 / 6)
    assert out["contrast"] == pytest.approx(0.9 - 0.25)


def test_diagonal_alignment_relative_depth():
    # Lx = 3, Ly = 5: rows 0, 1, 2 map to columns round(0), round(2), round(4) = 0, 2, 4.
    m = torch.arange(15, dtype=torch.float64).reshape(3, 5)
    out = diagonal_alignment(m)
    diag = (0 + 7 + 14) / 3
    assert out["diag"] == pytest.approx(diag)
    assert out["off_diag"] == pytest.approx((105 - 21) / 12)
    # Lx = 3, Ly = 4: i * 3 / 2 = 0, 1.5, 3 -> columns 0, 2 (half rounded up), 3.
    m = torch.zeros(3, 4)
    m[0, 0] = m[1, 2] = m[2, 3] = 1.0
    assert diagonal_alignment(m) == pytest.approx({"diag": 1.0, "off_diag": 0.0, "contrast": 1.0})
    with pytest.raises(ValueError, match="Lx, Ly >= 2"):
        diagonal_alignment(torch.zeros(1, 4))
