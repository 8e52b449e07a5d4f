import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from kdbias.analytics import cell_contrast, depth_matched_cells, diagonal_contrast_split
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
        np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (one @ k @ l @ one)
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


def test_minibatch_cka_float32_ignores_bf16_autocast():
    batches = [_model_feats(30 + b, 16, [5, 12, 20]) for b in range(2)]
    feats = [[f.float().bfloat16().float() for f in fs] for _, fs in batches]

    def run():
        acc = MinibatchCKA(3, 3, dtype=torch.float32)
        for fs in feats:
            acc.update(fs, [f * 1.5 + 0.25 for f in reversed(fs)])
        return acc.compute()

    ref = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


# --- Cell contrasts -------------------------------------------------------------------------------


def _round_half_up_col(i, lx, ly):
    """Column of row i at the same relative depth, with exact rational arithmetic."""
    return math.floor(Fraction(i * (ly - 1), lx - 1) + Fraction(1, 2))


def _mean(values):
    values = list(values)
    return sum(values) / len(values)


def test_depth_matched_cells_written_out():
    assert depth_matched_cells(3, 5) == [(0, 0), (1, 2), (2, 4)]
    assert depth_matched_cells(3, 4) == [(0, 0), (1, 2), (2, 3)]  # 1.5 rounds up to 2
    assert depth_matched_cells(5, 3) == [(0, 0), (1, 1), (2, 1), (3, 2), (4, 2)]  # 0.5 -> 1, 1.5 -> 2
    assert depth_matched_cells(6, 12) == [(0, 0), (1, 2), (2, 4), (3, 7), (4, 9), (5, 11)]
    assert depth_matched_cells(12, 12) == [(i, i) for i in range(12)]
    assert depth_matched_cells(2, 2) == [(0, 0), (1, 1)]


@pytest.mark.parametrize("lx", range(2, 14))
def test_depth_matched_cells_against_rational_rounding(lx):
    for ly in range(2, 26):
        cells = depth_matched_cells(lx, ly)
        assert cells == [(i, _round_half_up_col(i, lx, ly)) for i in range(lx)]
        assert cells[0] == (0, 0) and cells[-1] == (lx - 1, ly - 1)
        cols = [j for _, j in cells]
        assert cols == sorted(cols)
        # Transposition with swapped sizes: from the shallower side, every matched pair is matched back.
        if lx <= ly:
            assert {(j, i) for i, j in cells} <= set(depth_matched_cells(ly, lx))


def test_depth_matched_cells_needs_two_layers():
    with pytest.raises(ValueError, match="at least 2 layers"):
        depth_matched_cells(1, 4)
    with pytest.raises(ValueError, match="at least 2 layers"):
        depth_matched_cells(4, 1)


def test_cell_contrast_hand_written():
    rows = [
        [0.9, 0.1, 0.3, 0.2],
        [0.4, 0.8, 0.0, 0.6],
        [0.5, 0.7, 0.35, 0.95],
    ]
    m = torch.tensor(rows, dtype=torch.float64)
    cells = [(0, 0), (1, 1), (2, 3), (1, 1)]  # duplicate counts once
    exclude = [(1, 1), (2, 0)]
    on_cells, off_cells = [], []
    for i in range(3):
        for j in range(4):
            if (i, j) in exclude:
                continue
            (on_cells if (i, j) in cells else off_cells).append(rows[i][j])
    on, off = _mean(on_cells), _mean(off_cells)
    assert (on, off) == pytest.approx(((0.9 + 0.95) / 2, (0.1 + 0.3 + 0.2 + 0.4 + 0.0 + 0.6 + 0.7 + 0.35) / 8))
    out = cell_contrast(m, cells, exclude=exclude)
    assert out == pytest.approx({"on": on, "off": off, "contrast": on - off, "n_on": 2, "n_off": 8})
    assert type(out["n_on"]) is int and type(out["n_off"]) is int
    # Numpy arrays and nested lists are accepted as well.
    assert cell_contrast(np.array(rows), cells, exclude) == pytest.approx(out)
    assert cell_contrast(rows, cells, exclude) == pytest.approx(out)


def test_cell_contrast_invariants():
    rng = np.random.default_rng(0)
    m = torch.tensor(rng.uniform(-0.2, 1.0, (5, 7)))
    cells, exclude = depth_matched_cells(5, 7), [(1, 1), (4, 6), (0, 3)]
    base = cell_contrast(m, cells, exclude)
    assert cell_contrast(torch.full((5, 7), 0.37), cells, exclude)["contrast"] == pytest.approx(0.0, abs=1e-15)
    shifted = cell_contrast(m + 0.25, cells, exclude)
    assert shifted["contrast"] == pytest.approx(base["contrast"], abs=1e-12)
    assert (shifted["on"], shifted["off"]) == pytest.approx((base["on"] + 0.25, base["off"] + 0.25))
    assert cell_contrast(3.0 * m, cells, exclude)["contrast"] == pytest.approx(3.0 * base["contrast"])
    swapped = cell_contrast(m.T, [(j, i) for i, j in cells], [(j, i) for i, j in exclude])
    assert swapped == pytest.approx(base)
    # Weighted by their cell counts, on and off recover the mean of all kept cells.
    kept = [m[i, j].item() for i in range(5) for j in range(7) if (i, j) not in exclude]
    total = base["on"] * base["n_on"] + base["off"] * base["n_off"]
    assert total / (base["n_on"] + base["n_off"]) == pytest.approx(_mean(kept))


def test_cell_contrast_errors():
    m = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"outside the \[3, 4\] matrix"):
        cell_contrast(m, [(3, 0)])
    with pytest.raises(ValueError, match="outside"):
        cell_contrast(m, [(0, -1)])
    with pytest.raises(ValueError, match="exclude cell"):
        cell_contrast(m, [(0, 0)], exclude=[(0, 4)])
    with pytest.raises(ValueError, match="cells is empty"):
        cell_contrast(m, [])
    with pytest.raises(ValueError, match="also in exclude"):
        cell_contrast(m, [(0, 0), (1, 1)], exclude=[(1, 1), (0, 0)])
    with pytest.raises(ValueError, match="whole matrix"):
        cell_contrast(m, [(i, j) for i in range(3) for j in range(4)])
    with pytest.raises(ValueError, match="whole matrix"):
        cell_contrast(m, [(0, 0)], exclude=[(i, j) for i in range(3) for j in range(4) if (i, j) != (0, 0)])
    with pytest.raises(ValueError, match="integer pairs"):
        cell_contrast(m, [(0, 0, 1)])
    with pytest.raises(ValueError, match="integer pairs"):
        cell_contrast(m, [(0.5, 1)])
    with pytest.raises(ValueError, match="2-D"):
        cell_contrast(torch.zeros(3), [(0, 0)])


@pytest.mark.parametrize(("lx", "ly"), [(2, 2), (4, 4), (3, 7), (7, 3), (6, 12), (12, 6), (12, 12)])
def test_diagonal_alignment_against_explicit_loops(lx, ly):
    m = np.random.default_rng(lx * 100 + ly).uniform(0, 1, (lx, ly))
    diag_cells = {(i, _round_half_up_col(i, lx, ly)) for i in range(lx)}
    diag = _mean(m[i, j] for i in range(lx) for j in range(ly) if (i, j) in diag_cells)
    off = _mean(m[i, j] for i in range(lx) for j in range(ly) if (i, j) not in diag_cells)
    out = diagonal_alignment(torch.tensor(m))
    assert out == pytest.approx({"diag": diag, "off_diag": off, "contrast": diag - off}, rel=1e-12)
    if lx == ly:
        assert diagonal_alignment(torch.tensor(m.T)) == pytest.approx(out, rel=1e-12)
    assert diagonal_alignment(torch.full((lx, ly), 0.6))["contrast"] == pytest.approx(0.0, abs=1e-15)
    assert diagonal_alignment(torch.tensor(m - 0.3))["contrast"] == pytest.approx(out["contrast"], abs=1e-12)


EXP3_PAIRS = [(3, 3), (6, 6), (9, 9), (11, 11)]


def test_diagonal_contrast_split_12x12_exp3_pairs():
    m = np.random.default_rng(7).uniform(0.0, 0.6, (12, 12))
    trained = [m[i, j] for i, j in EXP3_PAIRS]
    untrained_diag = [m[i, i] for i in range(12) if (i, i) not in EXP3_PAIRS]
    off = [m[i, j] for i in range(12) for j in range(12) if i != j]
    out = diagonal_contrast_split(torch.tensor(m), EXP3_PAIRS)
    expected = {
        "trained": _mean(trained),
        "untrained_diag": _mean(untrained_diag),
        "off_diag": _mean(off),
        "untrained_contrast": _mean(untrained_diag) - _mean(off),
        "n_trained": 4,
        "n_untrained_diag": 8,
        "n_off": 132,
    }
    assert out == pytest.approx(expected, rel=1e-12)
    assert diagonal_contrast_split(torch.tensor(m), list(reversed(EXP3_PAIRS)) + [(3, 3)]) == pytest.approx(out)


def test_diagonal_contrast_split_separates_trained_cells():
    # Background 0.2, diagonal 0.5, the four trained cells 0.9: only the trained cells were raised.
    m = torch.full((12, 12), 0.2, dtype=torch.float64)
    m.fill_diagonal_(0.5)
    for i, j in EXP3_PAIRS:
        m[i, j] = 0.9
    out = diagonal_contrast_split(m, EXP3_PAIRS)
    assert out["trained"] == pytest.approx(0.9)
    assert out["untrained_diag"] == pytest.approx(0.5)
    assert out["untrained_contrast"] == pytest.approx(0.3)
    # The plain diagonal contrast mixes the trained cells in: (8 * 0.5 + 4 * 0.9) / 12 - 0.2.
    assert diagonal_alignment(m)["contrast"] == pytest.approx((8 * 0.5 + 4 * 0.9) / 12 - 0.2)
    # Raising the trained cells further changes only "trained".
    m2 = m.clone()
    for i, j in EXP3_PAIRS:
        m2[i, j] = 1.0
    out2 = diagonal_contrast_split(m2, EXP3_PAIRS)
    assert out2["trained"] == pytest.approx(1.0)
    assert {k: v for k, v in out2.items() if k != "trained"} == pytest.approx(
        {k: v for k, v in out.items() if k != "trained"}
    )


def test_diagonal_contrast_split_other_depth_and_off_diagonal_trained_pair():
    # 6 student layers (rows) against a 12-layer teacher: diagonal (0,0),(1,2),(2,4),(3,7),(4,9),(5,11).
    m = np.random.default_rng(3).uniform(0.0, 1.0, (6, 12))
    diag_cells = [(0, 0), (1, 2), (2, 4), (3, 7), (4, 9), (5, 11)]
    pairs = [(2, 4), (3, 3)]  # one on the depth-matched diagonal, one off it
    untrained_diag = [m[i, j] for i, j in diag_cells if (i, j) not in pairs]
    off = [m[i, j] for i in range(6) for j in range(12) if (i, j) not in diag_cells and (i, j) not in pairs]
    out = diagonal_contrast_split(torch.tensor(m), pairs)
    assert out == pytest.approx(
        {
            "trained": (m[2, 4] + m[3, 3]) / 2,
            "untrained_diag": _mean(untrained_diag),
            "off_diag": _mean(off),
            "untrained_contrast": _mean(untrained_diag) - _mean(off),
            "n_trained": 2,
            "n_untrained_diag": 5,
            "n_off": 65,
        },
        rel=1e-12,
    )


def test_diagonal_contrast_split_errors():
    m = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="trained_pairs is empty"):
        diagonal_contrast_split(m, [])
    with pytest.raises(ValueError, match="trained_pairs cell"):
        diagonal_contrast_split(m, [(4, 4)])
    with pytest.raises(ValueError, match="no untrained diagonal cell"):
        diagonal_contrast_split(m, [(i, i) for i in range(4)])
    with pytest.raises(ValueError, match="Lx, Ly >= 2"):
        diagonal_contrast_split(torch.zeros(1, 4), [(0, 0)])


def test_permutation_floor_matches_numpy_on_manually_repaired_batches():
    """Floor cell (i, j) = sum_b HSIC(x_i, y_j re-paired) / sqrt(sum_b HSIC(x_i, x_i) sum_b HSIC(y_j, y_j)),
    each batch re-paired by successive draws of unpaired_order from one generator seeded floor_seed."""
    from kdbias.losses import unpaired_order

    acc = MinibatchCKA(2, 3, floor_seed=5)
    gen = torch.Generator().manual_seed(5)
    xy, xx, yy = np.zeros((2, 3)), np.zeros(2), np.zeros(3)
    for b in range(3):
        base, fx = _model_feats(10 + b, 20, [4, 11])
        _, fy = _model_feats(20 + b, 20, [3, 6, 9], base=base)
        acc.update(fx, fy)
        order = unpaired_order(20, gen).numpy()
        x_np, y_np = [f.numpy() for f in fx], [f.numpy()[order] for f in fy]  # teacher examples re-paired
        xy += [[_np_unbiased_hsic(a, c) for c in y_np] for a in x_np]
        xx += [_np_unbiased_hsic(a, a) for a in x_np]
        yy += [_np_unbiased_hsic(c, c) for c in y_np]
    floor = acc.compute_floor()
    np.testing.assert_allclose(floor.numpy(), xy / np.sqrt(np.outer(xx, yy)), rtol=1e-9, atol=1e-12)
    paired = acc.compute()
    assert floor.abs().mean() < paired.mean() - 0.2  # the pairing is what made it high
    acc.reset()  # the generator restarts: the same batches give the same floor
    for b in range(3):
        base, fx = _model_feats(10 + b, 20, [4, 11])
        acc.update(fx, _model_feats(20 + b, 20, [3, 6, 9], base=base)[1])
    torch.testing.assert_close(acc.compute_floor(), floor)


def test_floor_needs_floor_seed():
    acc = MinibatchCKA(1, 1)
    _, f = _model_feats(0, 8, [3])
    acc.update(f, f)
    with pytest.raises(RuntimeError, match="floor_seed"):
        acc.compute_floor()
    with pytest.raises(RuntimeError, match="before any update"):
        MinibatchCKA(1, 1, floor_seed=0).compute_floor()
