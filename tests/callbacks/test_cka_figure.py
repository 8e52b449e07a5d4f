"""The CKA heatmap figure: marked cells, readable numbers, a title that names the comparison."""

import numpy as np
import torch
from matplotlib.patches import Rectangle

from kdbias.callbacks.cka_heatmap import ANNOTATE_MAX_CELLS, plot_cka_heatmap


def _outlines(fig, colour):
    ax = fig.axes[0]
    return {
        (round(p.get_x()), round(p.get_y()))
        for p in ax.patches
        if isinstance(p, Rectangle) and not p.get_fill() and np.allclose(p.get_edgecolor()[:3], colour)
    }


def test_trained_and_depth_matched_cells_are_outlined_at_their_positions():
    matrix = torch.rand(4, 6)
    fig = plot_cka_heatmap(matrix, [0, 1, 2, 3], list(range(6)), title="t", trained_cells=[(1, 2), (3, 5)])
    rows = 4  # row r of the matrix is drawn at y = rows - 1 - r (first block at the bottom)
    assert _outlines(fig, (0.0, 1.0, 1.0)) == {(2, rows - 1 - 1), (5, rows - 1 - 3)}
    # depth matching of 4 rows onto 6 columns: j(i) = round(i * 5 / 3), halves up -> 0, 2, 3, 5
    assert _outlines(fig, (1.0, 1.0, 1.0)) == {(0, 3), (2, 2), (3, 1), (5, 0)}
    assert "depth-matched" in fig.axes[0].get_xlabel() and "loss trains" in fig.axes[0].get_xlabel()


def test_cell_numbers_only_on_grids_small_enough_to_read():
    small = plot_cka_heatmap(torch.rand(12, 12), list(range(12)), list(range(12)))
    texts = [t for t in small.axes[0].texts if t.get_text()]
    assert len(texts) == 144 and all(t.get_fontsize() >= 8 for t in texts)
    large = plot_cka_heatmap(torch.rand(12, 13), list(range(12)), list(range(13)))
    assert 12 * 13 > ANNOTATE_MAX_CELLS and not [t for t in large.axes[0].texts if t.get_text()]


def test_titles_say_own_teacher_or_which_experiments_teacher_is_the_control():
    from types import SimpleNamespace

    from kdbias.callbacks import CKAHeatmapCallback

    teacher = SimpleNamespace(name="convnextv2_tiny_cifar")
    own = CKAHeatmapCallback(key="exp2")
    control = CKAHeatmapCallback(key="exp2", teacher=teacher)
    assert own.comparison(teacher) == "student vs its own teacher convnextv2_tiny_cifar"
    assert control.comparison(teacher) == (
        "student vs the EXP-2 teacher convnextv2_tiny_cifar (control, measurement only)"
    )


def test_colour_scale_comes_from_the_data_and_the_colour_bar_says_so():
    matrix = np.array([[0.962, 0.981, 0.990], [0.975, 0.999, 0.968]])
    fig = plot_cka_heatmap(matrix, [0, 1], [0, 1, 2])
    mesh = fig.axes[0].collections[0]
    assert mesh.get_clim() == (0.962, 0.999)  # the matrix's min and max, not 0-1
    colourbar = fig.axes[1]
    assert "0.962 to 0.999" in colourbar.get_ylabel() and "from this matrix" in colourbar.get_ylabel()
    # a range of 0.037 in about ten steps needs three decimals; drawn top row first = last student block
    texts = [t.get_text() for t in fig.axes[0].texts if t.get_text()]
    assert texts == [f"{v:.3f}" for v in matrix[::-1].ravel()]
    shared = plot_cka_heatmap(matrix, [0, 1], [0, 1, 2], scale=(0.0, 1.0))
    assert shared.axes[0].collections[0].get_clim() == (0.0, 1.0) and "shared" in shared.axes[1].get_ylabel()
    assert [t.get_text() for t in shared.axes[0].texts if t.get_text()][0] == "0.97"  # two decimals on 0-1


def test_colour_scale_of_a_constant_matrix_is_widened():
    from kdbias.callbacks.cka_heatmap import colour_scale

    low, high, decimals = colour_scale(np.full((3, 3), 0.5))
    assert (round(low, 6), round(high, 6), decimals) == (0.495, 0.505, 3)


def test_smoke_data_and_random_teachers_are_marked_in_the_title():
    from types import SimpleNamespace

    from kdbias.callbacks.cka_heatmap import _source_mark

    module = SimpleNamespace(hparams={"dataset": "cifar10"})
    smoke = SimpleNamespace(datamodule=SimpleNamespace(dataset="digits"))
    cifar = SimpleNamespace(datamodule=None)
    assert _source_mark(smoke, module, SimpleNamespace(source="random")) == (
        "SMOKE: offline digits data, not CIFAR; teacher with random weights"
    )
    assert _source_mark(cifar, module, SimpleNamespace(source="hub")) == ""
    assert _source_mark(cifar, module, SimpleNamespace(source="random")) == "teacher with random weights"
    fig = plot_cka_heatmap(torch.rand(2, 2), [0, 1], [0, 1], title="student vs its own teacher", source="SMOKE: x")
    assert fig.axes[0].get_title() == "student vs its own teacher\nSMOKE: x"
