import pytest
import torch
import torch.nn.functional as F

from kdbias.analytics import hessian as hessian_mod
from kdbias.analytics.hessian import (
    clone_for_autograd,
    hessian_top_eigenvalue,
    hessian_trace,
    hessian_vector_product,
)

DT = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _quadratic(a):
    """0.5 w^T A w, whose Hessian is (A + A^T) / 2 = A for symmetric A."""
    w = torch.randn(a.shape[0], generator=_gen(1), dtype=DT, requires_grad=True)
    return (lambda: 0.5 * w @ a @ w), [w]


def _spd(n=50, seed=0):
    m = torch.randn(n, n, generator=_gen(seed), dtype=DT)
    return m @ m.T / n + torch.eye(n, dtype=DT)


@pytest.fixture(scope="module")
def softmax_regression():
    """Mean cross-entropy of a 3-class linear model on 40 random 5-d points."""
    g = _gen(0)
    x = torch.randn(40, 5, generator=g, dtype=DT)
    y = torch.randint(0, 3, (40,), generator=g)
    w = (0.5 * torch.randn(5, 3, generator=g, dtype=DT)).requires_grad_()

    def loss(weight):
        return F.cross_entropy(x @ weight, y)

    exact = torch.autograd.functional.hessian(loss, w.detach()).reshape(15, 15)
    return (lambda: loss(w)), [w], exact


def test_diagonal_quadratic_trace_is_exact():
    diag = torch.linspace(-1.0, 5.0, 30, dtype=DT)
    loss_fn, params = _quadratic(torch.diag(diag))
    # Rademacher z: z^T A z = sum_i A_ii z_i^2 = tr(A) for every probe.
    assert hessian_trace(loss_fn, params) == pytest.approx(diag.sum().item(), rel=1e-12)


def test_random_spd_trace():
    a = _spd()
    loss_fn, params = _quadratic(a)
    est = hessian_trace(loss_fn, params, max_iter=200, tol=0.0)
    assert est == pytest.approx(a.trace().item(), rel=0.05)


def test_softmax_regression_trace_and_top_eigenvalue(softmax_regression):
    loss_fn, params, exact = softmax_regression
    assert hessian_trace(loss_fn, params, max_iter=300, tol=0.0) == pytest.approx(
        exact.trace().item(), rel=0.05
    )
    top = torch.linalg.eigvalsh(exact)[-1].item()
    assert hessian_top_eigenvalue(loss_fn, params, tol=1e-5) == pytest.approx(top, rel=0.01)


def test_top_eigenvalue_of_diagonal_quadratic():
    loss_fn, params = _quadratic(torch.diag(torch.tensor([1.0, 2.0, 10.0, 3.0], dtype=DT)))
    assert hessian_top_eigenvalue(loss_fn, params, tol=1e-10) == pytest.approx(10.0, rel=1e-8)


def test_hvp_matches_exact_hessian(softmax_regression):
    loss_fn, params, exact = softmax_regression
    v = torch.randn(5, 3, generator=_gen(3), dtype=DT)
    (hv,) = hessian_vector_product(loss_fn, params, [v])
    torch.testing.assert_close(hv.reshape(-1), exact @ v.reshape(-1))


def test_hvp_unused_and_linear_params_give_zero():
    w = torch.randn(4, dtype=DT, requires_grad=True)
    lin = torch.randn(3, dtype=DT, requires_grad=True)
    unused = torch.randn(2, dtype=DT, requires_grad=True)
    ones = [torch.ones_like(p) for p in (w, lin, unused)]
    hv = hessian_vector_product(lambda: (w**2).sum() + lin.sum(), [w, lin, unused], ones)
    torch.testing.assert_close(hv[0], torch.full((4,), 2.0, dtype=DT))
    assert torch.all(hv[1] == 0) and torch.all(hv[2] == 0)
    assert hessian_trace(lambda: lin.sum(), [lin]) == 0.0


def _count_hvps(monkeypatch):
    calls = []
    real = hessian_mod._hvp

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hessian_mod, "_hvp", counting)
    return calls


@pytest.mark.parametrize("fn", [hessian_trace, hessian_top_eigenvalue])
def test_stopping_rule(fn, monkeypatch):
    loss_fn, params = _quadratic(_spd(20))
    calls = _count_hvps(monkeypatch)
    # A huge tol stops at the first comparison, i.e. after the second product.
    early = fn(loss_fn, params, tol=1e9)
    assert len(calls) == 2
    assert early == fn(loss_fn, params, max_iter=2, tol=0.0)
    assert early != fn(loss_fn, params, max_iter=3, tol=0.0)
    calls.clear()
    fn(loss_fn, params, max_iter=7, tol=0.0)
    assert len(calls) == 7


def test_trace_stops_when_running_mean_settles(monkeypatch):
    loss_fn, params = _quadratic(_spd(20))
    calls = _count_hvps(monkeypatch)
    est = hessian_trace(loss_fn, params, max_iter=1000, tol=1e-2)
    n = len(calls)
    assert 2 <= n < 1000
    # Reproduce the running means and check the rule fires first at probe n.
    means = [hessian_trace(loss_fn, params, max_iter=t, tol=0.0) for t in range(1, n + 1)]
    assert est == means[-1]
    rel = [abs(b - a) / (abs(a) + 1e-6) for a, b in zip(means, means[1:])]
    assert all(r >= 1e-2 for r in rel[:-1]) and rel[-1] < 1e-2


@pytest.mark.parametrize("fn", [hessian_trace, hessian_top_eigenvalue])
def test_builds_the_graph_once(fn):
    loss_fn, params = _quadratic(_spd(10))
    calls = []

    def counted():
        calls.append(1)
        return loss_fn()

    fn(counted, params, max_iter=5, tol=0.0)
    assert len(calls) == 1


@pytest.mark.parametrize("fn", [hessian_trace, hessian_top_eigenvalue])
def test_seed_reproducibility(fn):
    loss_fn, params = _quadratic(_spd(20))
    kwargs = dict(max_iter=5, tol=0.0)
    assert fn(loss_fn, params, seed=3, **kwargs) == fn(loss_fn, params, seed=3, **kwargs)
    assert fn(loss_fn, params, seed=3, **kwargs) != fn(loss_fn, params, seed=4, **kwargs)


@pytest.mark.parametrize("context", [torch.inference_mode, torch.no_grad])
def test_works_inside_inference_mode(context):
    model = torch.nn.Linear(5, 3).double()
    x = torch.randn(40, 5, generator=_gen(0), dtype=DT)
    y = torch.randint(0, 3, (40,), generator=_gen(1))
    params = list(model.parameters())

    def make_loss(xs, ys):
        return lambda: F.cross_entropy(model(xs), ys)

    ref_tr = hessian_trace(make_loss(x, y), params)
    ref_eig = hessian_top_eigenvalue(make_loss(x, y), params)
    with context():
        xi, yi = x.clone(), y.clone()  # inference tensors under inference_mode
        xc, yc = clone_for_autograd(xi, yi)
        assert not xc.is_inference()
        assert hessian_trace(make_loss(xc, yc), params) == ref_tr
        assert hessian_top_eigenvalue(make_loss(xc, yc), params) == ref_eig
        if context is torch.inference_mode:
            assert xi.is_inference()
            with pytest.raises(RuntimeError, match="clone_for_autograd"):
                hessian_trace(make_loss(xi, yi), params)
    assert ref_tr > 0 and ref_eig > 0
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("fn", [hessian_trace, hessian_top_eigenvalue])
def test_grads_untouched_and_float_returned(fn, softmax_regression):
    loss_fn, params, _ = softmax_regression
    out = fn(loss_fn, params, max_iter=3)
    assert type(out) is float
    assert params[0].grad is None


def test_argument_errors():
    w = torch.randn(3, dtype=DT, requires_grad=True)
    frozen = torch.randn(3, dtype=DT)
    with pytest.raises(ValueError, match="does not require grad"):
        hessian_trace(lambda: (w**2).sum(), [frozen])
    with pytest.raises(ValueError, match="empty"):
        hessian_trace(lambda: (w**2).sum(), [])
    with pytest.raises(ValueError, match="scalar"):
        hessian_trace(lambda: w**2, [w])
    with pytest.raises(ValueError, match="max_iter"):
        hessian_top_eigenvalue(lambda: (w**2).sum(), [w], max_iter=0)
    with pytest.raises(ValueError, match="one per param"):
        hessian_vector_product(lambda: (w**2).sum(), [w], [])
