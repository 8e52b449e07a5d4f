import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdbias.analytics import (
    EigenEstimate,
    TraceEstimate,
    hessian_top_eigenvalue_estimate,
    hessian_trace_estimate,
)
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
    assert hessian_trace(loss_fn, params, max_iter=300, tol=0.0) == pytest.approx(exact.trace().item(), rel=0.05)
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


# --- Estimates with uncertainty -------------------------------------------------------------------

MLP_SHAPES = [(4, 2), (4,), (4,), (1,)]  # W1, b1, w2, b2: 17 parameters


@pytest.fixture(scope="module")
def tiny_mlp():
    """Mean squared error of a 2-4-1 tanh MLP on 12 random points, its params and exact Hessian."""
    g = _gen(0)
    x = torch.randn(12, 2, generator=g, dtype=DT)
    y = torch.randn(12, generator=g, dtype=DT)
    params = [(0.8 * torch.randn(s, generator=g, dtype=DT)).requires_grad_() for s in MLP_SHAPES]

    def loss(w1, b1, w2, b2):
        return ((torch.tanh(x @ w1.T + b1) @ w2 + b2 - y) ** 2).mean()

    sizes = [math.prod(s) for s in MLP_SHAPES]

    def flat_loss(theta):
        parts = torch.split(theta, sizes)
        return loss(*(p.reshape(s) for p, s in zip(parts, MLP_SHAPES)))

    theta = torch.cat([p.detach().reshape(-1) for p in params])
    exact = torch.autograd.functional.hessian(flat_loss, theta).numpy()
    return (lambda: loss(*params)), params, exact


def _rademacher_probe_values(hess, params, n, seed):
    """z^T H z for the probes hessian_trace draws: one randint per param, in order, per probe."""
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(n):
        z = torch.cat([(torch.randint(0, 2, p.shape, generator=gen).to(DT) * 2 - 1).reshape(-1) for p in params])
        z = z.numpy()
        values.append(z @ hess @ z)
    return np.array(values)


def _settled(prev, cur, tol):
    """PyHessian's rule, written out: relative change of the running value below tol."""
    return abs(cur - prev) / (abs(prev) + 1e-6) < tol


def _written_out_stop(values, tol):
    """Running mean of the probe values and the probe count at which the rule stops."""
    means = np.cumsum(values) / np.arange(1, len(values) + 1)
    for t in range(2, len(values) + 1):
        if _settled(means[t - 2], means[t - 1], tol):
            return means[t - 1], t
    return means[-1], len(values)


def _rayleigh_quotients(hess, params, steps, seed):
    """The Rayleigh quotient of each written-out power-iteration step (same start as below)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.cat([torch.randn(p.shape, generator=gen, dtype=DT).reshape(-1) for p in params]).numpy()
    v = v / np.linalg.norm(v)
    out = []
    for _ in range(steps):
        hv = hess @ v
        out.append(v @ hv)
        v = hv / np.linalg.norm(hv)
    return out


def _power_iteration(hess, params, steps, seed):
    """Written-out power iteration from the Gaussian start hessian_top_eigenvalue draws.

    Returns the Rayleigh quotient of the last vector and ||H v - lambda v|| / |lambda|.
    """
    gen = torch.Generator().manual_seed(seed)
    v = torch.cat([torch.randn(p.shape, generator=gen, dtype=DT).reshape(-1) for p in params]).numpy()
    v = v / np.linalg.norm(v)
    for step in range(steps):
        hv = hess @ v
        lam = v @ hv
        if step < steps - 1:
            v = hv / np.linalg.norm(hv)
    return lam, np.linalg.norm(hv - lam * v) / abs(lam)


def test_trace_estimate_reproduces_written_out_probe_statistics(tiny_mlp):
    loss_fn, params, exact = tiny_mlp
    values = _rademacher_probe_values(exact, params, 40, seed=5)
    est = hessian_trace_estimate(loss_fn, params, max_iter=40, tol=0.0, seed=5)
    assert isinstance(est, TraceEstimate) and est.num_probes == 40
    assert est.trace == pytest.approx(values.mean(), rel=1e-10)
    assert est.stderr == pytest.approx(values.std(ddof=1) / math.sqrt(40), rel=1e-8)
    assert est.stderr > 0


def test_trace_estimate_many_probes_brackets_exact_trace(tiny_mlp):
    loss_fn, params, exact = tiny_mlp
    est = hessian_trace_estimate(loss_fn, params, max_iter=2000, tol=0.0)
    assert est.num_probes == 2000
    assert abs(est.trace - np.trace(exact)) < 4 * est.stderr
    # The error bar is of the size the probe variance predicts, not vanishing.
    assert 0.01 < est.stderr < 1.0


def test_trace_estimate_variance_matches_rademacher_closed_form():
    # For Rademacher z and symmetric A: Var(z^T A z) = 2 * sum_{i != j} A_ij^2.
    a = _spd(20)
    loss_fn, params = _quadratic(a)
    an = a.numpy()
    an = (an + an.T) / 2
    var = 2 * ((an**2).sum() - (np.diag(an) ** 2).sum())
    est = hessian_trace_estimate(loss_fn, params, max_iter=2000, tol=0.0)
    assert est.stderr**2 * est.num_probes == pytest.approx(var, rel=0.15)
    assert abs(est.trace - np.trace(an)) < 4 * est.stderr


def test_trace_estimate_diagonal_hessian_has_zero_stderr():
    diag = torch.linspace(-1.0, 5.0, 30, dtype=DT)
    loss_fn, params = _quadratic(torch.diag(diag))
    est = hessian_trace_estimate(loss_fn, params, max_iter=10, tol=0.0)
    assert est.trace == pytest.approx(diag.sum().item(), rel=1e-12)
    assert est.stderr == pytest.approx(0.0, abs=1e-12)


def test_trace_estimate_single_probe_has_nan_stderr(tiny_mlp):
    loss_fn, params, exact = tiny_mlp
    est = hessian_trace_estimate(loss_fn, params, max_iter=1, seed=2)
    assert est.num_probes == 1 and math.isnan(est.stderr)
    assert est.trace == pytest.approx(_rademacher_probe_values(exact, params, 1, seed=2)[0], rel=1e-10)


@pytest.mark.parametrize(("max_iter", "tol", "seed"), [(1, 0.0, 0), (7, 0.0, 1), (1000, 1e-2, 0), (50, 1e9, 3)])
def test_hessian_trace_is_the_mean_of_its_probes_on_the_exact_hessian(max_iter, tol, seed, monkeypatch):
    """``hessian_trace`` against the exact Hessian: the mean of ``z^T A z`` over the probes it
    draws, with ``A`` written out (one Hessian-vector product per probe; ``tol=0``: ``max_iter``)."""
    a = _spd(20)
    loss_fn, params = _quadratic(a)
    calls = _count_hvps(monkeypatch)
    est = hessian_trace_estimate(loss_fn, params, max_iter=max_iter, tol=tol, seed=seed)
    assert est.num_probes == len(calls)
    # against the exact Hessian (A) with the stopping rule written out, not against the estimator
    values = _rademacher_probe_values(_spd(20).numpy(), params, max_iter, seed)
    mean, stop = _written_out_stop(values, tol)
    assert est.num_probes == stop and est.trace == pytest.approx(mean, rel=1e-10)
    assert hessian_trace(loss_fn, params, max_iter=max_iter, tol=tol, seed=seed) == pytest.approx(mean, rel=1e-10)
    if tol == 0.0:
        assert est.num_probes == max_iter


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_eigen_estimate_matches_written_out_power_iteration(steps, tiny_mlp):
    loss_fn, params, exact = tiny_mlp
    lam, residual = _power_iteration(exact, params, steps, seed=4)
    est = hessian_top_eigenvalue_estimate(loss_fn, params, max_iter=steps, tol=0.0, seed=4)
    assert isinstance(est, EigenEstimate) and est.num_iterations == steps
    assert est.eigenvalue == pytest.approx(lam, rel=1e-10)
    assert est.residual == pytest.approx(residual, rel=1e-8)


def test_eigen_residual_bounds_distance_to_spectrum(tiny_mlp):
    loss_fn, params, exact = tiny_mlp
    spectrum = np.linalg.eigvalsh(exact)
    for steps in range(1, 8):
        for seed in range(3):
            est = hessian_top_eigenvalue_estimate(loss_fn, params, max_iter=steps, tol=0.0, seed=seed)
            gap = np.abs(spectrum - est.eigenvalue).min()
            assert gap <= est.residual * abs(est.eigenvalue) * (1 + 1e-9) + 1e-12


def test_eigen_estimate_converged_on_well_separated_spectrum():
    mu = np.array([10.0, 4.0, 3.0, 2.0, 1.0, 0.5, -1.0, -2.5])
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((8, 8)))
    loss_fn, params = _quadratic(torch.tensor(q @ np.diag(mu) @ q.T))
    est = hessian_top_eigenvalue_estimate(loss_fn, params, max_iter=80, tol=0.0)
    top = np.linalg.eigh(q @ np.diag(mu) @ q.T)[0][-1]
    assert est.residual < 1e-10
    assert abs(est.eigenvalue - top) <= est.residual * abs(est.eigenvalue) + 1e-12
    assert est.eigenvalue == pytest.approx(10.0, rel=1e-12)
    # Early on the residual is large and still bounds the error.
    early = hessian_top_eigenvalue_estimate(loss_fn, params, max_iter=2, tol=0.0)
    assert early.residual > 1e-3
    assert abs(early.eigenvalue - top) <= early.residual * abs(early.eigenvalue)


def test_eigen_estimate_converges_on_mlp(tiny_mlp):
    loss_fn, params, exact = tiny_mlp
    spectrum = np.linalg.eigvalsh(exact)
    dominant = spectrum[np.abs(spectrum).argmax()]
    est = hessian_top_eigenvalue_estimate(loss_fn, params, max_iter=300, tol=0.0)
    assert est.residual < 1e-8
    assert est.eigenvalue == pytest.approx(dominant, rel=1e-10)


@pytest.mark.parametrize(("max_iter", "tol", "seed"), [(1, 0.0, 0), (6, 0.0, 2), (1000, 1e-6, 0), (50, 1e9, 3)])
def test_hessian_top_eigenvalue_is_power_iteration_on_the_exact_hessian(max_iter, tol, seed, monkeypatch):
    """``hessian_top_eigenvalue`` against a written-out power iteration on the exact Hessian
    ``A`` from the same start, for as many steps as it took (one product per step)."""
    a = _spd(20)
    loss_fn, params = _quadratic(a)
    calls = _count_hvps(monkeypatch)
    est = hessian_top_eigenvalue_estimate(loss_fn, params, max_iter=max_iter, tol=tol, seed=seed)
    # The residual reuses the last product: one Hessian-vector product per iteration.
    assert est.num_iterations == len(calls)
    # against power iteration on the exact Hessian (A), its stopping rule written out
    rayleigh = _rayleigh_quotients(_spd(20).numpy(), params, max_iter, seed)
    stop = next((t for t in range(2, max_iter + 1) if _settled(rayleigh[t - 2], rayleigh[t - 1], tol)), max_iter)
    assert est.num_iterations == stop and est.eigenvalue == pytest.approx(rayleigh[stop - 1], rel=1e-10)
    got = hessian_top_eigenvalue(loss_fn, params, max_iter=max_iter, tol=tol, seed=seed)
    assert got == pytest.approx(rayleigh[stop - 1], rel=1e-10)
    if tol == 0.0:
        assert est.num_iterations == max_iter


def test_eigen_estimate_zero_hessian_is_exact():
    lin = torch.randn(3, dtype=DT, requires_grad=True)
    est = hessian_top_eigenvalue_estimate(lambda: lin.sum(), [lin], max_iter=4, tol=0.0)
    assert est == EigenEstimate(eigenvalue=0.0, residual=0.0, num_iterations=4)


def test_estimates_are_frozen_and_typed(tiny_mlp):
    loss_fn, params, _ = tiny_mlp
    tr = hessian_trace_estimate(loss_fn, params, max_iter=3)
    eig = hessian_top_eigenvalue_estimate(loss_fn, params, max_iter=3)
    assert type(tr.trace) is float and type(tr.stderr) is float and type(tr.num_probes) is int
    assert type(eig.eigenvalue) is float and type(eig.residual) is float and type(eig.num_iterations) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        tr.trace = 0.0
    assert all(p.grad is None for p in params)


# --- Honest error bars: coverage at the presets' settings, Lanczos top eigenvalue -----------------


def _preset_probes() -> dict[str, int]:
    """The probe counts runs use: ``analytics.hessian.max_iter`` of the paper and smoke presets,
    else ``HessianCallback``'s own default (the signature owns the plan's numbers)."""
    import inspect

    import yaml

    from kdbias.callbacks import HessianCallback

    default = inspect.signature(HessianCallback).parameters["max_iter"].default
    from kdbias.study import SHIPPED_CONFIGS as root

    out = {}
    for name, path in (("paper", root / "analytics.yaml"), ("smoke", root / "smoke" / "analytics.yaml")):
        section = (yaml.safe_load(path.read_text())["analytics"] or {}).get("hessian") or {}
        out[name] = int(section.get("max_iter", default))
    return out


@pytest.fixture(scope="module")
def softmax_200():
    """Mean CE of a 10-class linear model on 64 random 20-d points: 200 parameters, exact Hessian."""
    g = _gen(3)
    x = torch.randn(64, 20, generator=g, dtype=DT)
    y = torch.randint(0, 10, (64,), generator=g)
    w = (0.3 * torch.randn(20, 10, generator=g, dtype=DT)).requires_grad_()

    def loss(weight):
        return F.cross_entropy(x @ weight, y)

    exact = torch.autograd.functional.hessian(loss, w.detach()).reshape(200, 200).numpy()
    return (lambda: loss(w)), [w], exact


@pytest.mark.parametrize(
    ("preset", "model"),
    [
        ("smoke", "tiny_mlp"),
        ("paper", "tiny_mlp"),
        ("smoke", "softmax_200"),
        pytest.param("paper", "softmax_200", marks=pytest.mark.slow),  # ~30 s on a busy CPU
    ],
)
def test_trace_interval_covers_the_exact_trace(preset, model, request):
    """trace ± t(0.975, P-1) · stderr with the preset's fixed P probes (tol=0, as HessianCallback
    runs it) contains the exact trace in >= 93 % of 200 independent starts (nominal 95 %)."""
    from scipy import stats

    loss_fn, params, exact = request.getfixturevalue(model)
    probes = _preset_probes()[preset]
    truth = float(np.trace(exact))
    t = stats.t.ppf(0.975, probes - 1)
    starts = 200
    hits = 0
    for seed in range(starts):
        est = hessian_trace_estimate(loss_fn, params, max_iter=probes, tol=0.0, seed=1000 + seed)
        assert est.num_probes == probes
        hits += abs(est.trace - truth) <= t * est.stderr
    print(f"coverage {preset} ({probes} probes) on {model}: {hits / starts:.1%}")
    assert hits / starts >= 0.93, f"{preset} ({probes} probes) on {model}: coverage {hits / starts:.1%}"


def test_lanczos_certificate_is_about_the_top_eigenvalue(softmax_200):
    """Over 100 starts, the callback's default budget (50 steps, tol 1e-3) converges and the
    exact largest eigenvalue lies within the residual bound of the estimate."""
    from kdbias.analytics.lanczos import hessian_top_eigenvalue_lanczos

    loss_fn, params, exact = softmax_200
    top = float(np.linalg.eigvalsh(exact)[-1])
    inside = 0
    for seed in range(100):
        est = hessian_top_eigenvalue_lanczos(loss_fn, params, max_iter=50, tol=1e-3, seed=seed)
        assert est.converged and est.num_iterations < 50
        assert est.eigenvalue <= top * (1 + 1e-9)  # Ritz values interlace: never above the top
        inside += top - est.eigenvalue <= est.residual * abs(est.eigenvalue) + 1e-12
    assert inside >= 95


def test_lanczos_exact_on_small_and_zero_hessians(tiny_mlp):
    from kdbias.analytics.lanczos import hessian_top_eigenvalue_lanczos

    loss_fn, params, exact = tiny_mlp
    est = hessian_top_eigenvalue_lanczos(loss_fn, params, max_iter=40, tol=0.0, seed=1)
    assert est.eigenvalue == pytest.approx(np.linalg.eigvalsh(exact)[-1], rel=1e-9)
    assert est.num_iterations <= 17 and est.converged  # 17 parameters: the Krylov space is exhausted
    diag = torch.tensor([1.0, -7.0, 3.0], dtype=DT, requires_grad=True)
    quad = hessian_top_eigenvalue_lanczos(lambda: 0.5 * (torch.tensor([1.0, -7.0, 3.0], dtype=DT) * diag**2).sum(),
                                          [diag], max_iter=10, tol=0.0)  # fmt: skip
    assert quad.eigenvalue == pytest.approx(3.0, rel=1e-12)  # the largest, not the largest in magnitude
    lin = torch.randn(3, dtype=DT, requires_grad=True)
    zero = hessian_top_eigenvalue_lanczos(lambda: lin.sum(), [lin], max_iter=4, tol=0.0)
    assert zero.eigenvalue == 0.0 and zero.residual == 0.0 and zero.converged
