"""How numbers are written in the report's cells (Markdown)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from kdbias.console import format_duration as duration
from kdbias.report.aggregate import Aggregate
from kdbias.report.engine import decide
from kdbias.report.stats import MIN_DECIDING_IMAGES, Estimate, binomial_interval, finite

__all__ = [
    "PENDING",
    "compact_cells",
    "describe_method",
    "duration",
    "estimate",
    "md",
    "heldout",
    "href",
    "number",
    "once",
    "pct",
    "pp",
    "source_line",
    "table",
    "verdict_text",
]

PENDING = "*pending*"
NOT_MEASURED = "*not measured*"
_CUTMIX_ARCHS = ("resnet18_cifar", "convnextv2")  # runs without a recorded `mix`: the teachers' preset mixes


def number(value: Any) -> str:
    """A method parameter as written in a config: ``4.0`` -> ``"4"``, ``0.5`` -> ``"0.5"``;
    ``None`` (not recorded) -> ``*pending*``."""
    if value is None:
        return PENDING
    x = finite(value)
    return format(x, "g") if x is not None else str(value)


_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|~"} | {"\n": " ", "\r": " "})


def md(text: Any) -> str:
    """Free text from a file, escaped for Markdown: no markup, HTML or table break survives."""
    return str(text).translate(_MARKDOWN)


def _seeds_note(est: Estimate, full: Sequence[Any]) -> str:
    """``"; seeds 0, 1"`` when ``est`` covers other seeds than the experiment's full set."""
    if not full or not est.seeds or set(est.seeds) == set(full):
        return ""
    return "; seeds " + ", ".join(str(s) for s in est.seeds)


def estimate(
    est: Estimate | None,
    scale: float = 1.0,
    digits: int = 2,
    unit: str = "",
    signed: bool = False,
    spec: str | None = None,
    full: Sequence[Any] = (),
    accuracy: bool = False,
    bounds: tuple[float, float] | None = None,
) -> str:
    """``"86.02 ± 0.79 % (n=3; half-widths: seeds 0.41, test set 0.68)"``; n = 1:
    ``"86.02 % (n=1)"`` (or with the test set's half-width for an accuracy); no estimate:
    ``*pending*``. ``full``: the experiment's seeds (others are named); ``accuracy``: say
    how the test-set error entered; ``bounds``: the quantity's range (a fraction's ``(0, 1)``):
    an interval reaching past it is also given clipped to it."""
    if est is None:
        return PENDING

    def fmt(x: float, sign: bool) -> str:
        x *= scale
        if spec is not None:
            return format(x, ("+" if sign else "") + spec)
        return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"

    if _COMPACT.get():
        return _compact(est, fmt, unit, signed, full, bounds, accuracy)
    text = fmt(est.mean, signed)
    notes = [f"n={est.n}"]
    at_bound = bounds is not None and est.mean in bounds and est.half_width is not None and est.half_width <= 1e-12
    if at_bound and est.images:  # every image scored 0 (or 1) in every seed: an exact bound, never ± 0.00
        low, high = binomial_interval(round(est.mean * est.images), est.images)
        notes.append(
            f"95 % CI [{fmt(low, False)}, {fmt(high, False)}]{unit}, Clopper–Pearson on {est.images} images: "
            "every image alike in every seed"
        )
        return f"{text}{unit} ({'; '.join(notes)}{_seeds_note(est, full)})"
    if est.half_width is not None and est.half_width <= 1e-12 * max(1.0, abs(est.mean)) and est.test_kind is None:
        notes.append("no spread over seeds")
    elif est.half_width is not None:
        half = fmt(est.half_width, False)
        if not half.strip("0.") and est.half_width > 0:  # rounds to zero: one significant digit instead
            half = format(est.half_width * scale, ".1g")
        text += f" ± {half}"
    if accuracy:
        if est.test_kind is None:
            notes.append("seeds only: the test-set error was not recorded")
        else:
            parts = []
            if est.seed_half is not None:
                parts.append(f"seeds {fmt(est.seed_half, False)}")
            if est.test_half is not None:
                bound = " (binomial bound)" if est.test_kind == "binomial bound" else ""
                parts.append(f"test set {fmt(est.test_half, False)}{bound}")
            notes.append("half-widths: " + ", ".join(parts) if est.n > 1 else "test set only, one seed")
    if bounds is not None and est.low is not None and est.high is not None:
        low, high = max(est.low, bounds[0]), min(est.high, bounds[1])
        if (low, high) != (est.low, est.high):
            notes.append(f"95 % CI clipped to the range: [{fmt(low, signed)}, {fmt(high, signed)}]{unit}")
    return f"{text}{unit} ({'; '.join(notes)}{_seeds_note(est, full)})"


_COMPACT: ContextVar[bool] = ContextVar("kdbias_compact_cells", default=False)


def is_compact() -> bool:
    """Whether cells are being written in the short form (inside :func:`compact_cells`)."""
    return _COMPACT.get()


@contextmanager
def compact_cells() -> Iterator[None]:
    """Within the block, :func:`estimate` (and :func:`pct`, :func:`pp`, :func:`once`) write the short
    form ``"86.02 % [85.23, 86.81]"`` — the table's note says once how its intervals were built."""
    token = _COMPACT.set(True)
    try:
        yield
    finally:
        _COMPACT.reset(token)


def _compact(est: Estimate, fmt: Any, unit: str, signed: bool, full: Sequence[Any], bounds: Any, accuracy: bool) -> str:
    """``"X unit [low, high]"`` (clipped to ``bounds``), ``"X unit (n=1)"`` or ``"X unit (no spread)"``;
    a proportion at a bound gets its Clopper–Pearson interval; other seeds than ``full`` are named; an
    accuracy-like figure without its test-image term says ``(seeds only)``."""
    text = fmt(est.mean, signed) + unit
    seeds = _seeds_note(est, full).replace("; seeds", " (seeds") + (")" if _seeds_note(est, full) else "")
    if accuracy and est.test_kind is None:
        seeds = " (seeds only)" + seeds
    at_bound = bounds is not None and est.mean in bounds and est.half_width is not None and est.half_width <= 1e-12
    if at_bound and est.images:
        low, high = binomial_interval(round(est.mean * est.images), est.images)
    elif est.n < 2 or est.low is None or est.high is None:
        return f"{text} (n=1){seeds}" if est.n < 2 else f"{text} (no interval){seeds}"
    elif est.half_width is not None and est.half_width <= 1e-12 * max(1.0, abs(est.mean)) and est.test_kind is None:
        return f"{text} (no spread){seeds}"
    else:
        low, high = est.low, est.high
        if bounds is not None:
            low, high = max(low, bounds[0]), min(high, bounds[1])
    return f"{text} [{fmt(low, signed)}, {fmt(high, signed)}]{seeds}"


def pct(est: Estimate | None, full: Sequence[Any] = ()) -> str:
    """An accuracy (fraction) as a percentage cell, with seed and test-set error."""
    return estimate(est, scale=100.0, unit=" %", full=full, accuracy=True, bounds=(0.0, 1.0))


def pp(est: Estimate | None, full: Sequence[Any] = ()) -> str:
    """A paired accuracy difference (fraction) in percentage points, seed and test-set error."""
    return estimate(est, scale=100.0, unit=" pp", signed=True, full=full, accuracy=True)


def heldout(est: Estimate | None, full: Sequence[Any] = ()) -> str:
    """A held-out (validation) accuracy over seeds, seed interval only (the held-out split
    selects checkpoints; its sampling error is not part of any comparison)."""
    return estimate(est, scale=100.0, unit=" %", full=full)


def once(value: Any) -> str:
    """A quantity measured once (:class:`~kdbias.report.aggregate.Once`) with its
    Clopper–Pearson interval: ``"95.50 % (measured once; 95 % CI [93.1, 97.3] %, Clopper–Pearson,
    360 images)"``."""
    if value is None:
        return PENDING
    if _COMPACT.get():
        marks = [m for m, on in (("random-weight", value.random), ("k-NN", value.kind == "k-NN")) if on]
        interval = f" [{value.low * 100:.2f}, {value.high * 100:.2f}]" if value.low is not None else " (no interval)"
        return f"{value.value * 100:.2f} %{interval}" + (f" ({', '.join(marks)})" if marks else "")
    prefix = "k-NN " if value.kind == "k-NN" else ""
    prefix = ("random-weight teacher (smoke): " if value.random else "") + prefix
    text = f"{prefix}{value.value * 100:.2f} % (measured once, n=1"
    if value.low is not None:
        text += f"; 95 % CI [{value.low * 100:.2f}, {value.high * 100:.2f}] %, Clopper–Pearson on {value.images} images"
    else:
        text += "; image count not recorded: no interval"
    if len(value.values) > 1:
        text += "; the runs recorded differing values: " + ", ".join(f"{v * 100:.2f} %" for v in value.values)
    return text + ")"


def verdict_text(
    est: Estimate | None,
    claim: str = ">",
    threshold: float = 0.0,
    scale: float = 1.0,
    unit: str = "",
    digits: int = 2,
    spec: str | None = None,
    accuracy: bool = False,
    full: Sequence[Any] = (),
    missing: str = "no seed has both runs",
) -> str:
    """``"**yes** (Δ = +1.20 pp, 95 % CI [+0.70, +1.70] pp, n=2; ...; exploratory, uncorrected)"``: the
    verdict of :func:`~kdbias.report.engine.decide` and the numbers that decided it. An accuracy Δ
    also states its interval's sources and on how many test images the runs disagree."""
    if est is None:
        return f"**inconclusive** ({PENDING}: {missing})"
    word = decide(est, claim, threshold, accuracy=accuracy).verdict
    if _COMPACT.get():  # the Δ and its interval stand in their own cell
        return f"**{word}** (exploratory, uncorrected{_seeds_note(est, full)})"

    def fmt(x: float) -> str:
        return format(x * scale, "+" + spec) if spec else f"{x * scale:+.{digits}f}"

    text = f"Δ = {fmt(est.mean)}{unit}"
    if est.half_width is None:
        text += f", n={est.n}: no interval"
    else:
        text += f", {est.confidence * 100:.0f} % CI [{fmt(est.low)}, {fmt(est.high)}]{unit}, n={est.n}"  # type: ignore[arg-type]
    if threshold:
        text += f"; threshold {fmt(threshold)}{unit}"
    if accuracy:
        if est.test_kind == "per-image":
            text += (
                f"; interval over seeds and test images; the runs disagree on {est.disagree} of {est.images} "
                f"test images (net {est.net_images:+.1f} images per seed)"
            )
            if word == "inconclusive" and abs(est.net_images or 0.0) < MIN_DECIDING_IMAGES and est.n >= 2:
                text += f": fewer than {MIN_DECIDING_IMAGES} images decide it"
        else:
            text += "; no per-image predictions: the images on which the runs disagree are unknown, no verdict"
    text += _seeds_note(est, full)
    return f"**{word}** ({text}; exploratory, uncorrected)"


def describe_method(method: dict[str, Any], short: bool = False) -> str:
    """The distillation type with the parameters the run recorded (``method``); ``short``: without the
    layer pairs and the teacher's input size (the matrix; the Methods table has them)."""
    loss = method.get("loss")
    if loss == "ce":
        mix = method.get("mix", "cutmix" if str(method.get("arch", "")).startswith(_CUTMIX_ARCHS) else None)
        return {"cutmix": "CE + CutMix", "mixup": "CE + Mixup"}.get(mix, "Vanilla CE")
    if loss == "soft_kl":
        parts = [f"τ={number(method.get('temperature'))}", f"α={number(method.get('alpha'))}"]
        if method.get("distill_token"):
            parts.append("distillation token")
        return f"Soft KL ({', '.join(parts)})"
    if loss == "cka":
        parts = [f"λ_cka={number(method.get('lambda_cka'))}", f"λ_tok={number(method.get('lambda_tok'))}"]
        if method.get("unbiased_cka") is False:
            parts.append("biased CKA")
        pairs = method.get("layer_pairs")
        if short:  # the matrix: the loss and its weights (layers and the teacher's input: the Methods table)
            pairs = None
        elif isinstance(pairs, list) and pairs:
            parts.append(
                "layers "
                + ",".join(":".join(str(i) for i in pair) for pair in pairs if isinstance(pair, (list, tuple)))
            )
        if method.get("teacher_image_size") is not None and not short:
            parts.append(f"teacher {number(method['teacher_image_size'])} px")
        if method.get("cka_representation") not in (None, "image"):
            parts.append(f"{method['cka_representation']}-level CKA")
        tok = finite(method.get("lambda_tok"))
        return f"{'CKA + token' if tok is None or tok > 0 else 'CKA'} ({', '.join(parts)})"
    return PENDING if loss is None else str(loss)


def href(run: dict[str, Any], rel: Any, out_dir: str | Path | None) -> str | None:
    """Link to ``<run_dir>/<rel>`` relative to ``out_dir`` (default: the current directory);
    ``None`` when ``rel`` is not a path or the file is missing."""
    if not isinstance(rel, str) or not rel:
        return None
    target = Path(run["run_dir"]) / rel
    if not target.is_file():
        return None
    base = Path.cwd() if out_dir is None else Path(out_dir)
    try:
        link = os.path.relpath(target.resolve(), base.resolve())
    except ValueError:  # another drive on Windows
        link = str(target.resolve())
    return Path(link).as_posix()


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table (left-aligned)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def source_line(agg: Aggregate) -> str:
    """The provenance line written above every table."""
    if not agg.runs:
        asked = " / ".join(x for x in (agg.dataset, agg.preset) if x is not None)
        return f"Source: no completed runs{f' for {asked}' if asked else ''} — every cell is pending."
    pair = f"{agg.dataset} / {agg.preset}"
    if agg.dataset == "digits":
        return f"Source: {pair} — offline smoke data, NOT a CIFAR result."
    if agg.preset != "paper":
        return f"Source: {pair} — reduced '{agg.preset}' preset, NOT a paper-preset result."
    return f"Source: {pair} — the plan's paper preset."
