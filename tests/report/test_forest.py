"""The forest plot: one panel per unit, families in order, verdict markers, rows without an
interval drawn as a point, rows without an estimate listed under the figure."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from kdbias.report.forest import VERDICT_STYLES, ForestRow, forest_figure, forest_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rows() -> list[ForestRow]:
    return [
        ForestRow("EXP-2 > EXP-1", "exploratory", "pp", 4.0, 1.2, 6.8, 0.0, "yes"),
        ForestRow("EXP-3 ≥ +3 pp vs Baseline (b512)", "confirmatory", "pp", 1.1, -2.0, 4.2, 3.0, "inconclusive"),
        ForestRow("attention distance, layer 3", "exploratory", "px", -2.5, -4.4, -0.6, 0.0, "no"),
        ForestRow("teachers matched", "exploratory", "pp", 0.4, None, None, None, "not matched"),
        ForestRow("CKA contrast", "confirmatory", "", 0.05, 0.01, 0.09, None, "equivalent"),
    ]


def _markers(ax):
    """``{y: (x, marker, filled)}`` of the estimate markers on ``ax``."""
    out = {}
    for line in ax.lines:
        if line.get_marker() in ("None", None, ""):
            continue
        (x,), (y,) = line.get_xdata(), line.get_ydata()
        out[y] = (x, line.get_marker(), line.get_markerfacecolor() != "white")
    return out


def _tick_rows(ax):
    return {label.get_text().replace("\n", " "): y for y, label in zip(ax.get_yticks(), ax.get_yticklabels())}


def test_writes_a_png_whose_height_grows_with_the_rows(tmp_path):
    few = forest_plot(rows()[:2], "digits smoke, random-weight teachers", tmp_path / "a" / "few.png")
    assert few == tmp_path / "a" / "few.png"
    assert few.read_bytes()[:8] == PNG_SIGNATURE
    many_rows = [ForestRow(f"row {i}", "exploratory", "pp", float(i), i - 1.0, i + 1.0, None, "yes") for i in range(20)]
    many = forest_plot(many_rows, "many", tmp_path / "many.png")
    with Image.open(few) as a, Image.open(many) as b:
        assert a.format == b.format == "PNG"
        assert b.height > a.height + 20 * 30  # about 0.34 in (41 px at 120 dpi) per extra row


def test_one_panel_per_unit_with_its_own_axis_and_families_in_order():
    fig = forest_figure(rows(), "digits smoke, random-weight teachers")
    axes = fig.axes
    assert [ax.get_xlabel() for ax in axes] == ["Δ (percentage points)", "Δ (pixels)", "Δ (no unit)"]
    pp = axes[0]
    ticks = _tick_rows(pp)
    assert set(ticks) == {"EXP-2 > EXP-1", "EXP-3 ≥ +3 pp vs Baseline (b512)", "teachers matched"}
    # confirmatory above exploratory (y grows upwards); each family under its label
    assert ticks["EXP-3 ≥ +3 pp vs Baseline (b512)"] > ticks["EXP-2 > EXP-1"] > ticks["teachers matched"]
    family_labels = {t.get_text(): t.get_position()[1] for t in pp.texts if t.get_text().endswith(")")}
    assert family_labels["Confirmatory (1)"] > ticks["EXP-3 ≥ +3 pp vs Baseline (b512)"]
    assert ticks["EXP-3 ≥ +3 pp vs Baseline (b512)"] > family_labels["Exploratory (2)"] > ticks["EXP-2 > EXP-1"]
    assert "digits smoke, random-weight teachers" in fig._suptitle.get_text()


def test_markers_sit_at_the_estimates_styled_by_verdict_with_intervals_and_thresholds():
    fig = forest_figure(rows(), "t")
    pp = fig.axes[0]
    ticks, markers = _tick_rows(pp), _markers(pp)
    x, marker, filled = markers[ticks["EXP-2 > EXP-1"]]
    assert (x, marker, filled) == (4.0, "o", True)  # yes: filled circle
    x, marker, filled = markers[ticks["EXP-3 ≥ +3 pp vs Baseline (b512)"]]
    assert (x, marker, filled) == (1.1, "o", False)  # inconclusive: hollow circle
    y = ticks["EXP-3 ≥ +3 pp vs Baseline (b512)"]
    solid = [list(l.get_xdata()) for l in pp.lines if l.get_linestyle() == "-" and list(l.get_ydata()) == [y, y]]
    dashed = [l for l in pp.lines if l.get_linestyle() == "--"]
    assert solid == [[-2.0, 4.2]]  # the interval
    thresholds = {tuple(l.get_xdata()): tuple(l.get_ydata()) for l in dashed}
    assert set(thresholds) == {(3.0, 3.0), (0.0, 0.0)}  # one tick per row with a threshold
    low, high = thresholds[(3.0, 3.0)]
    assert low < y < high  # on the row it belongs to
    zero = [l for l in pp.lines if list(l.get_xdata()) == [0, 0] and l.get_linestyle() == "-"]
    assert zero, "a vertical line at Δ = 0"
    px = fig.axes[1]
    assert [(x, m) for x, m, _ in _markers(px).values()] == [(-2.5, "X")]  # no: a cross
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    for verdict in ("yes", "no", "inconclusive", "equivalent", "not matched"):
        assert VERDICT_STYLES[verdict][3] in legend
    assert {"95 % CI", "hypothesis threshold", "Δ = 0"} <= set(legend)


def test_a_row_without_interval_is_a_point_that_says_so():
    fig = forest_figure(rows(), "t")
    pp = fig.axes[0]
    y = _tick_rows(pp)["teachers matched"]
    assert _markers(pp)[y][0] == 0.4
    assert not [l for l in pp.lines if len(l.get_xdata()) == 2 and list(l.get_ydata()) == [y, y]]  # no bar
    numbers = {t.get_text() for t in pp.texts}
    assert "+0.40 pp, no interval" in numbers and "+4.00 [+1.20, +6.80] pp" in numbers


def test_a_row_without_estimate_is_listed_not_drawn():
    nan = ForestRow("hessian, not measured", "exploratory", "", math.nan, None, None, None, "inconclusive")
    fig = forest_figure([*rows(), nan], "t")
    assert "not drawn (no estimate): hessian, not measured" in fig._supxlabel.get_text()
    assert all("hessian" not in label for ax in fig.axes for label in _tick_rows(ax))
    with pytest.raises(ValueError, match="no row has a finite estimate"):
        forest_figure([nan], "t")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(family="primary"), "family must be one of"),
        (dict(verdict="significant"), "verdict must be one of"),
        (dict(low=1.0, high=None), "both interval ends or neither"),
        (dict(low=2.0, high=1.0), "is above high"),
    ],
)
def test_rows_refuse_what_cannot_be_drawn(kwargs, message):
    base = dict(label="r", family="exploratory", unit="pp", estimate=1.5, low=1.0, high=2.0, threshold=None)
    with pytest.raises(ValueError, match=message):
        ForestRow(**{**base, "verdict": "yes", **kwargs})


def test_numbers_keep_two_significant_digits_of_the_panels_largest_value():
    from kdbias.report.forest import decimals

    def row(estimate, low=None, high=None):
        return ForestRow("r", "exploratory", "", estimate, low, high, None, "yes")

    assert decimals([row(0.5), row(12.0, 10.0, 14.0)]) == 2
    assert decimals([row(0.05, 0.01, 0.09)]) == 3  # 0.09 -> "0.090"
    assert decimals([row(0.004, -0.009, 0.002)]) == 4  # 0.009 -> "0.0090"
    assert decimals([row(1e-12)]) == 6 and decimals([row(0.0)]) == 2
    fig = forest_figure([row(0.05, 0.01, 0.09)], "t")
    assert "+0.050 [+0.010, +0.090]" in {t.get_text() for t in fig.axes[0].texts}
