"""2 x 2 main effects and interaction against a hand computation."""

import math

import pytest

from kdbias.report.effects import factorial_effects, per_seed_effects

# seed -> accuracy of each cell (teacher, loss)
CELLS = {
    ("resnet", "kl"): {0: 0.80, 1: 0.82, 2: 0.81},
    ("resnet", "cka"): {0: 0.78, 1: 0.79, 2: 0.80},
    ("dino", "kl"): {0: 0.83, 1: 0.84, 2: 0.82},
    ("dino", "cka"): {0: 0.86, 1: 0.88, 2: 0.85, 3: 0.9},  # seed 3 is in one cell only
}


def test_per_seed_effects_by_hand():
    effects = per_seed_effects(CELLS, ("resnet", "dino"), ("kl", "cka"))
    # seed 0: loss ((0.78-0.80) + (0.86-0.83)) / 2 = 0.005; teacher ((0.83-0.80) + (0.86-0.78)) / 2 = 0.055
    # interaction 0.86 - 0.83 - 0.78 + 0.80 = 0.05
    assert effects["loss"][0] == pytest.approx(0.005)
    assert effects["teacher"][0] == pytest.approx(0.055)
    assert effects["interaction"][0] == pytest.approx(0.05)
    # seed 1: loss ((0.79-0.82) + (0.88-0.84)) / 2 = 0.005; teacher (0.02 + 0.09) / 2 = 0.055; inter 0.07
    assert effects["interaction"][1] == pytest.approx(0.07)
    # seed 2: loss ((0.80-0.81) + (0.85-0.82)) / 2 = 0.01; teacher (0.01 + 0.05) / 2 = 0.03; inter 0.04
    assert effects["teacher"][2] == pytest.approx(0.03)
    assert set(effects["loss"]) == {0, 1, 2}


def test_factorial_effects_are_paired_t_estimates():
    est = factorial_effects(CELLS, ("resnet", "dino"), ("kl", "cka"))["interaction"]
    values = [0.05, 0.07, 0.04]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert est.mean == pytest.approx(mean)
    assert est.sd == pytest.approx(sd)
    assert est.half_width == pytest.approx(4.302652729911275 * sd / math.sqrt(3))  # t_{0.975, 2}
    assert est.seeds == (0, 1, 2)


def test_missing_cell_and_no_shared_seed():
    with pytest.raises(ValueError, match="missing"):
        factorial_effects({k: v for k, v in CELLS.items() if k != ("dino", "kl")}, ("resnet", "dino"), ("kl", "cka"))
    lonely = {**CELLS, ("dino", "kl"): {9: 0.5}}
    assert factorial_effects(lonely, ("resnet", "dino"), ("kl", "cka")) == {
        "loss": None,
        "teacher": None,
        "interaction": None,
    }
