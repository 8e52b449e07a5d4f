"""The forest plot of a study's comparisons: every Δ with its interval, one panel per unit.

A pure figure function (matplotlib through an Agg canvas, no pyplot state; no Lightning or
timm): the report builds the rows from its comparisons and writes ``comparisons.png`` beside
``RESULTS.md``.

Layout: one panel per unit (``"pp"``, ``"px"``, ``""``, ...), so quantities of different units
never share an axis; inside a panel the confirmatory rows come first, then the exploratory
ones, each group under its label, in the caller's order. Per row: the estimate as a marker
whose style is the verdict (:data:`VERDICT_STYLES`), its interval as a horizontal bar, the
hypothesis threshold as a short dashed tick, and the numbers at the right. A vertical line
marks Δ = 0. The legend sits under the panels, outside the data.

Rows without an interval (``low`` and ``high`` both ``None``) are drawn as a point, their
number reading "no interval". Rows whose estimate is not finite cannot be placed: they are
left out of the panels and listed under the figure ("not drawn: ...").
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FAMILIES", "VERDICT_STYLES", "ForestRow", "decimals", "forest_figure", "forest_plot"]

#: Families of comparisons, drawn in this order.
FAMILIES = ("confirmatory", "exploratory")

#: Marker of each verdict: (marker, filled, colour, legend text). Okabe & Ito colours.
VERDICT_STYLES: dict[str, tuple[str, bool, str, str]] = {
    "yes": ("o", True, "#009E73", "yes (hypothesis supported)"),
    "no": ("X", True, "#D55E00", "no (contradicted)"),
    "inconclusive": ("o", False, "#555555", "inconclusive"),
    "equivalent": ("D", True, "#0072B2", "equivalent (within the margin)"),
    "not matched": ("s", False, "#CC79A7", "not matched"),
}

_AXIS = {"pp": "Δ (percentage points)", "px": "Δ (pixels)", "": "Δ (no unit)"}
_ROW_IN = 0.34  # figure height per row, inches
_LABEL_WIDTH = 46  # characters per line of a row label


@dataclass(frozen=True)
class ForestRow:
    """One comparison: ``estimate`` (Δ) in ``unit`` with its interval ``[low, high]`` (both
    ``None``: no interval), the hypothesis ``threshold`` (``None``: none) in the same unit,
    ``family`` in :data:`FAMILIES` and ``verdict`` a key of :data:`VERDICT_STYLES`."""

    label: str
    family: str
    unit: str
    estimate: float
    low: float | None
    high: float | None
    threshold: float | None
    verdict: str

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"ForestRow {self.label!r}: family must be one of {FAMILIES}, got {self.family!r}")
        if self.verdict not in VERDICT_STYLES:
            raise ValueError(
                f"ForestRow {self.label!r}: verdict must be one of {tuple(VERDICT_STYLES)}, got {self.verdict!r}"
            )
        if (self.low is None) != (self.high is None):
            raise ValueError(
                f"ForestRow {self.label!r}: give both interval ends or neither, got {self.low}, {self.high}"
            )
        if self.low is not None and not self.low <= self.high:  # type: ignore[operator]
            raise ValueError(f"ForestRow {self.label!r}: interval low {self.low} is above high {self.high}")

    @property
    def drawable(self) -> bool:
        """Whether the estimate is a finite number (else the row is listed, not drawn)."""
        return self.estimate is not None and math.isfinite(self.estimate)

    def numbers(self, decimals: int = 2) -> str:
        """``"+1.20 [+0.70, +1.70] pp"``, or ``"+1.20 pp, no interval"``."""
        unit = f" {self.unit}" if self.unit else ""
        if self.low is None:
            return f"{self.estimate:+.{decimals}f}{unit}, no interval"
        return f"{self.estimate:+.{decimals}f} [{self.low:+.{decimals}f}, {self.high:+.{decimals}f}]{unit}"


def decimals(rows: Sequence[ForestRow]) -> int:
    """Decimals that show the largest finite number of ``rows`` (estimate or interval end) with
    at least two significant digits: 2 for 0.1 and above, 3 below it, ..., at most 6."""
    values = [abs(v) for r in rows for v in (r.estimate, r.low, r.high) if v is not None and math.isfinite(v)]
    largest = max(values, default=0.0)
    return 2 if largest == 0 else min(6, max(2, 1 - math.floor(math.log10(largest))))


def _groups(rows: Sequence[ForestRow]) -> list[tuple[str, list[tuple[str, list[ForestRow]]]]]:
    """``[(unit, [(family, rows)])]`` in first-appearance order of units, families in order."""
    units: dict[str, list[ForestRow]] = {}
    for row in rows:
        units.setdefault(row.unit, []).append(row)
    return [
        (unit, [(family, [r for r in members if r.family == family]) for family in FAMILIES])
        for unit, members in units.items()
    ]


def _lines(grouped: list[tuple[str, list[ForestRow]]]) -> int:
    """Rows of a panel, counting one line per family label."""
    return sum(1 + len(members) for _, members in grouped if members)


def forest_plot(rows: Sequence[ForestRow], title: str, path: str | Path, interval: str = "95 % CI") -> Path:
    """Draw ``rows`` (:func:`forest_figure`) and save the figure as a PNG at ``path``
    (parents created); return ``path``."""
    path = Path(path)
    fig = forest_figure(rows, title, interval)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def forest_figure(rows: Sequence[ForestRow], title: str, interval: str = "95 % CI"):
    """The forest plot of ``rows`` as a matplotlib ``Figure`` (Agg canvas, no pyplot).

    ``title`` names what is compared and the data source (e.g. "digits smoke, random-weight
    teachers"); ``interval`` says what the bars are (legend). One axes per unit, in the order
    the units first appear; the height grows with the number of rows. ``ValueError`` when no
    row has a finite estimate.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    drawn = [r for r in rows if r.drawable]
    skipped = [r for r in rows if not r.drawable]
    if not drawn:
        raise ValueError("forest_plot: no row has a finite estimate, nothing to draw")
    panels = _groups(drawn)
    heights = [_lines(grouped) for _, grouped in panels]
    fig = Figure(figsize=(11.0, 1.9 + _ROW_IN * sum(heights) + 0.7 * len(panels)), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (unit, grouped) in zip(axes, panels):
        _panel(ax, unit, grouped)
    handles = [
        Line2D([], [], linestyle="none", marker=m, markersize=8, color=c, markerfacecolor=c if f else "white", label=t)
        for verdict, (m, f, c, t) in VERDICT_STYLES.items()
        if any(r.verdict == verdict for r in drawn)
    ]
    handles += [
        Line2D([], [], color="#333333", linewidth=1.6, label=interval),
        Line2D([], [], color="#333333", linewidth=1.4, linestyle="--", label="hypothesis threshold"),
        Line2D([], [], color="grey", linewidth=0.9, label="Δ = 0"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize="small", frameon=False)
    fig.suptitle(title, fontsize="medium")
    if skipped:
        note = "not drawn (no estimate): " + "; ".join(r.label for r in skipped)
        fig.supxlabel("\n".join(textwrap.wrap(note, 150)), fontsize="x-small", ha="left", x=0.01)
    return fig


def _panel(ax, unit: str, grouped: list[tuple[str, list[ForestRow]]]) -> None:
    """One unit's rows on ``ax``, top to bottom, a label line above each family."""
    y = _lines(grouped) - 1
    ticks, labels = [], []
    digits = decimals([row for _, members in grouped for row in members])
    for family, members in grouped:
        if not members:
            continue
        ax.text(0.0, y, f"{family.capitalize()} ({len(members)})", transform=ax.get_yaxis_transform(),
                ha="right", va="center", fontweight="bold", fontsize="small")  # fmt: skip
        y -= 1
        for row in members:
            marker, filled, colour, _ = VERDICT_STYLES[row.verdict]
            if row.low is not None:
                ax.plot([row.low, row.high], [y, y], color="#333333", linewidth=1.6, solid_capstyle="butt")
            if row.threshold is not None:
                ax.plot([row.threshold] * 2, [y - 0.38, y + 0.38], color="#333333", linewidth=1.4, linestyle="--")
            ax.plot([row.estimate], [y], linestyle="none", marker=marker, markersize=8, color=colour,
                    markerfacecolor=colour if filled else "white", markeredgewidth=1.5, zorder=3)  # fmt: skip
            ax.text(1.01, y, row.numbers(digits), transform=ax.get_yaxis_transform(), va="center", fontsize="x-small")
            ticks.append(y)
            labels.append("\n".join(textwrap.wrap(row.label, _LABEL_WIDTH)) or " ")
            y -= 1
    ax.axvline(0.0, color="grey", linewidth=0.9, zorder=1)
    ax.set_yticks(ticks, labels, fontsize="small")
    ax.set_ylim(-0.7, _lines(grouped) - 0.3)
    ax.margins(x=0.08)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel(_AXIS.get(unit, f"Δ ({unit})"), fontsize="small")
