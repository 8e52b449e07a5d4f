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


def test_per_image_fidelity_against_the_formula_and_the_file_round_trip(tmp_path):
    """Per image: agreement of the arg-max classes and KL(p_t || p_s) written out with numpy;
    the file keeps them (merging keys measured later) and refuses pickled arrays."""
    import numpy as np

    from kdbias.analytics.fidelity import per_image_fidelity
    from kdbias.callbacks.fidelity import FIDELITY_FILE, _write_fidelity_images, read_fidelity_images
    from kdbias.schema import UnreadableFile

    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    agree, kl = per_image_fidelity(student, teacher)
    s, t = student.double().numpy(), teacher.double().numpy()
    p = np.exp(t) / np.exp(t).sum(1, keepdims=True)
    q = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    np.testing.assert_allclose(kl.numpy(), (p * np.log(p / q)).sum(1), rtol=1e-12)
    np.testing.assert_array_equal(agree.numpy(), s.argmax(1) == t.argmax(1))
    _write_fidelity_images(tmp_path / FIDELITY_FILE, {"a": (agree, kl)})
    _write_fidelity_images(tmp_path / FIDELITY_FILE, {"b": (~agree, kl * 2)})
    back = read_fidelity_images(tmp_path / FIDELITY_FILE)
    assert sorted(back) == ["a", "b"]
    np.testing.assert_array_equal(back["b"]["agreement"], ~agree.numpy())
    np.testing.assert_allclose(back["a"]["kl"], kl.numpy())
    np.savez(tmp_path / "bad.npz", **{"kl.a": np.array([object()], dtype=object), "agreement.a": np.array([True])})
    with pytest.raises(UnreadableFile):
        read_fidelity_images(tmp_path / "bad.npz")
