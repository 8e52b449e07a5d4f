import numpy as np
import pytest
import torch

from kdbias.losses import pool_tokens_to_grid, token_loss


def _tokens(seed, shape=(2, 16, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_identical_orthogonal_opposite():
    t = _tokens(0)
    assert token_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert token_loss(-t, t).item() == pytest.approx(2.0, abs=1e-6)
    e0 = torch.zeros(2, 3, 4)
    e0[..., 0] = 1.0
    e1 = torch.zeros(2, 3, 4)
    e1[..., 1] = 5.0
    assert token_loss(e0, e1).item() == pytest.approx(1.0, abs=1e-6)


def test_scale_invariant_and_matches_numpy_mean():
    s, t = _tokens(1), _tokens(2)
    a, b = s.double().numpy(), t.double().numpy()
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    assert token_loss(s, t).item() == pytest.approx(np.mean(1 - cos), rel=1e-5)
    torch.testing.assert_close(token_loss(3.0 * s, 0.5 * t), token_loss(s, t))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="project the student"):
        token_loss(torch.zeros(2, 16, 8), torch.zeros(2, 16, 4))


def test_pool_16_to_8_is_block_mean():
    x = _tokens(3, (2, 256, 5))
    ref = x.numpy().reshape(2, 8, 2, 8, 2, 5).mean(axis=(2, 4)).reshape(2, 64, 5)
    out = pool_tokens_to_grid(x, 8)
    assert out.shape == (2, 64, 5)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-6)


def test_pool_identity_and_errors():
    x = _tokens(4, (1, 64, 3))
    assert pool_tokens_to_grid(x, 8) is x
    with pytest.raises(ValueError, match="square"):
        pool_tokens_to_grid(torch.zeros(1, 65, 3), 8)
    with pytest.raises(ValueError, match="coarser"):
        pool_tokens_to_grid(x, 16)
