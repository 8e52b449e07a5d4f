"""Fidelity (agreement, KL(teacher || student)) against formulas written out here."""

import math

import pytest
import torch

from kdbias.analytics.fidelity import fidelity, predictive_kl, top1_agreement


def softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def reference_kl(student, teacher):
    total = 0.0
    for s, t in zip(student, teacher):
        p, q = softmax(t), softmax(s)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return total / len(student)


def test_agreement_and_kl_match_the_formulas():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(37, 5, generator=g), torch.randn(37, 5, generator=g) * 3
    agree = (
        sum(
            max(range(5), key=lambda c: s[c]) == max(range(5), key=lambda c: t[c])
            for s, t in zip(student.tolist(), teacher.tolist())
        )
        / 37
    )
    assert top1_agreement(student, teacher) == pytest.approx(agree)
    assert predictive_kl(student, teacher) == pytest.approx(reference_kl(student.tolist(), teacher.tolist()), rel=1e-9)
    assert fidelity(student, teacher) == {
        "agreement": pytest.approx(agree),
        "kl": pytest.approx(reference_kl(student.tolist(), teacher.tolist()), rel=1e-9),
    }


def test_invariants():
    x = torch.randn(20, 4)
    assert top1_agreement(x, x) == 1.0
    assert predictive_kl(x, x) == pytest.approx(0.0, abs=1e-12)
    assert predictive_kl(x + 7.0, x) == pytest.approx(0.0, abs=1e-12)  # softmax ignores a shift
    y = torch.randn(20, 4)
    assert predictive_kl(x, y) > 0
    assert predictive_kl(x, y) != pytest.approx(predictive_kl(y, x))  # KL is not symmetric
    assert top1_agreement(-x, x) == 0.0


def test_temperature_and_shape_errors():
    x, y = torch.randn(8, 3), torch.randn(8, 3)
    assert predictive_kl(x, y, 2.0) == pytest.approx(predictive_kl(x / 2, y / 2))
    with pytest.raises(ValueError, match="equal shapes"):
        fidelity(x, torch.randn(8, 4))
