import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdbias.losses import hard_distillation_loss, soft_kl_loss


def _logits(seed, b=8, c=10, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g) * scale, torch.randn(b, c, generator=g) * scale


def _np_soft_kl(s, t, tau):
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_ps, log_pt = log_softmax(s / tau), log_softmax(t / tau)
    return tau**2 * np.mean(np.sum(np.exp(log_pt) * (log_pt - log_ps), axis=1))


@pytest.mark.parametrize("tau", [1.0, 4.0, 10.0])
def test_matches_numpy_formula(tau):
    s, t = _logits(0)
    expected = _np_soft_kl(s.double().numpy(), t.double().numpy(), tau)
    assert soft_kl_loss(s, t, tau).item() == pytest.approx(expected, rel=1e-5)


def test_matches_kl_div_batchmean():
    s, t, tau = *_logits(1), 4.0
    ref = F.kl_div(F.log_softmax(s / tau, 1), F.log_softmax(t / tau, 1), reduction="batchmean", log_target=True)
    torch.testing.assert_close(soft_kl_loss(s, t, tau), ref * tau**2)


def test_deit_reduction_is_one_over_num_classes():
    s, t, tau = *_logits(2, c=10), 3.0
    deit = F.kl_div(F.log_softmax(s / tau, 1), F.log_softmax(t / tau, 1), reduction="sum", log_target=True)
    deit = deit * tau**2 / s.numel()
    torch.testing.assert_close(soft_kl_loss(s, t, tau) / 10, deit)


def test_zero_for_equal_logits():
    s, _ = _logits(3)
    assert soft_kl_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_two_class_by_hand():
    # tau = 2, teacher logits [2 ln 3, 0] -> p_t = [3/4, 1/4]; student [0, 0] -> p_s = [1/2, 1/2].
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.130812036; times tau^2 = 0.523248144.
    t = torch.tensor([[2 * math.log(3.0), 0.0]])
    s = torch.zeros(1, 2)
    assert soft_kl_loss(s, t, temperature=2.0).item() == pytest.approx(0.523248144, abs=1e-6)


@pytest.mark.parametrize("tau", [1.0, 8.0])
def test_gradient_is_tau_times_probability_gap(tau):
    s, t = _logits(4, b=5)
    s.requires_grad_(True)
    soft_kl_loss(s, t, tau).backward()
    expected = tau * (torch.softmax(s.detach() / tau, 1) - torch.softmax(t / tau, 1)) / s.shape[0]
    torch.testing.assert_close(s.grad, expected, atol=1e-6, rtol=1e-5)


def test_bf16_inputs_computed_in_float32():
    s, t = _logits(5)
    out = soft_kl_loss(s.bfloat16(), t.bfloat16())
    assert out.dtype == torch.float32
    ref = soft_kl_loss(s.bfloat16().float(), t.bfloat16().float())
    torch.testing.assert_close(out, ref)


def test_rejects_mismatched_shapes_and_bad_temperature():
    with pytest.raises(ValueError, match="same C"):
        soft_kl_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        soft_kl_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)


def test_hard_distillation_is_ce_on_teacher_argmax():
    s, t = _logits(6)
    labels = t.numpy().argmax(1)
    z = s.double().numpy()
    log_p = z - z.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    expected = -log_p[np.arange(len(labels)), labels].mean()
    assert hard_distillation_loss(s, t).item() == pytest.approx(expected, rel=1e-5)
