"""The losses compute in float32 (float64 for float64 inputs) whatever the autocast state.

CPU autocast with bf16 re-casts the float32 operands of matmul-like ops to bf16,
even after an explicit ``.float()``. The checks: under autocast the result is
float32 and equal (to float32 precision) to the result outside autocast; no op
inside a loss produces a bf16/fp16 tensor; gradients flow.
"""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from kdbias.losses import cka_loss, hard_distillation_loss, linear_cka, soft_kl_loss, token_loss

LOW = (torch.bfloat16, torch.float16)


class _OutputDtypes(TorchFunctionMode):
    """Records ``(function name, output dtype)`` of every torch call that returns tensors.

    A TorchFunctionMode sees the arguments *before* autocast re-casts them (autocast
    acts further down, in the dispatcher), so the output dtype is what reveals an op
    that autocast ran in bf16.
    """

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        name = getattr(func, "__name__", repr(func))
        self.calls.extend((name, o.dtype) for o in outs if isinstance(o, torch.Tensor))
        return out


def _bf16_exact(seed, *shape, scale=1.0):
    """float32 values that bf16 represents exactly."""
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g)).bfloat16().float()


def _logits(seed):
    return _bf16_exact(seed, 8, 10, scale=3.0), _bf16_exact(seed + 1, 8, 10, scale=3.0)


def _features(seed, n, dx, dy):
    x = _bf16_exact(seed, n, dx)
    y = (x[:, :1] * 0.8 + _bf16_exact(seed + 1, n, dy)).bfloat16().float()
    return x, y


def _tokens(seed):
    s = _bf16_exact(seed, 2, 16, 8)
    return s, (0.5 * s + _bf16_exact(seed + 1, 2, 16, 8)).bfloat16().float()


# name -> (loss of two tensors, input factory, whether matmul-like ops are expected inside)
CASES = {
    "soft_kl": (lambda a, b: soft_kl_loss(a, b, 4.0), lambda: _logits(0), False),
    "hard_distillation": (hard_distillation_loss, lambda: _logits(2), False),
    "cka_biased_feature": (lambda a, b: linear_cka(a, b, form="feature"), lambda: _features(4, 64, 12, 20), True),
    "cka_biased_gram": (lambda a, b: linear_cka(a, b, form="gram"), lambda: _features(6, 24, 40, 48), True),
    "cka_unbiased_feature": (
        lambda a, b: linear_cka(a, b, True, form="feature"),
        lambda: _features(8, 64, 12, 20),
        True,
    ),
    "cka_unbiased_gram": (lambda a, b: linear_cka(a, b, True, form="gram"), lambda: _features(10, 24, 40, 48), True),
    "cka_loss_auto": (cka_loss, lambda: _features(12, 32, 16, 24), True),
    "token": (token_loss, lambda: _tokens(14), False),
}
MATMULS = {"matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "mv", "dot", "einsum", "linear", "addmm"}


def test_recorder_sees_bf16_matmul_under_autocast():
    # Without the fix a loss runs exactly this: a float32 matmul that autocast turns to bf16.
    a = _bf16_exact(0, 4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16), _OutputDtypes() as rec:
        _ = a @ a.T
        _ = torch.mm(a.float(), a.T.float())
    assert [d for _, d in rec.calls if d in LOW]


@pytest.mark.parametrize("name", list(CASES))
def test_float32_under_bf16_autocast_equals_outside(name):
    fn, make, _ = CASES[name]
    a, b = make()
    ref = fn(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(a, b)
    assert ref.dtype == torch.float32 and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(CASES))
def test_no_op_runs_in_bf16_under_autocast(name):
    fn, make, has_matmul = CASES[name]
    a, b = make()
    with torch.autocast("cpu", dtype=torch.bfloat16), _OutputDtypes() as rec:
        fn(a, b)
    assert rec.calls
    assert [(f, d) for f, d in rec.calls if d in LOW] == []
    matmuls = [d for f, d in rec.calls if f in MATMULS]
    if has_matmul:
        assert matmuls and set(matmuls) == {torch.float32}


@pytest.mark.parametrize("name", list(CASES))
def test_bf16_inputs_under_autocast_match_float32_reference(name):
    fn, make, _ = CASES[name]
    a, b = make()  # bf16-exact, so the bf16 copies hold the same numbers
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(a.bfloat16(), b.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fn(a, b), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(CASES))
def test_float64_stays_float64_under_autocast(name):
    fn, make, _ = CASES[name]
    a, b = (t.double() for t in make())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(a, b)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, fn(a, b), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_under_autocast_equal_outside(name):
    fn, make, _ = CASES[name]
    a, b = make()
    grads = []
    for enabled in (False, True):
        x, y = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            loss = fn(x, y)
        loss.backward()
        assert x.grad is not None and x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
        grads.append(x.grad)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_cka_of_autocast_activations_trains_the_layer():
    # A bf16 activation from an autocast Linear: the loss casts it up and the weight gets a float32 gradient.
    x, y = _features(16, 32, 12, 20)
    layer = torch.nn.Linear(12, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = layer(x)
        assert feats.dtype == torch.bfloat16
        loss = cka_loss(feats, y) + soft_kl_loss(feats[:, :10], y[:, :10]) + token_loss(feats[None], y[None, :, :16])
    assert loss.dtype == torch.float32
    loss.backward()
    assert layer.weight.grad.dtype == torch.float32
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().max() > 0
    ref = cka_loss(feats.detach().float(), y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cka_loss(feats.detach(), y).item() == pytest.approx(ref.item(), rel=1e-6)
