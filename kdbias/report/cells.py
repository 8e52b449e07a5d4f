"""How numbers are written in the report's cells (Markdown)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kdbias.callbacks.progress import format_duration as duration
from kdbias.report.aggregate import Aggregate
from kdbias.report.stats import Estimate, finite, verdict

__all__ = [
    "PENDING",
    "describe_method",
    "duration",
    "estimate",
    "href",
    "number",
    "pct",
    "pp",
    "source_line",
    "table",
    "verdict_text",
]

PENDING = "*pending*"


def number(value: Any) -> str:
    """A method parameter as written in a config: ``4.0`` -> ``"4"``, ``0.5`` -> ``"0.5"``;
    ``None`` (not recorded) -> ``*pending*``."""
    if value is None:
        return PENDING
    x = finite(value)
    return format(x, "g") if x is not None else str(value)


def estimate(
    est: Estimate | None,
    scale: float = 1.0,
    digits: int = 2,
    unit: str = "",
    signed: bool = False,
    spec: str | None = None,
) -> str:
    """``"86.02 ± 0.41 % (n=3)"``; n = 1: ``"86.02 % (n=1)"``; no estimate: ``*pending*``."""
    if est is None:
        return PENDING

    def fmt(x: float, sign: bool) -> str:
        x *= scale
        if spec is not None:
            return format(x, ("+" if sign else "") + spec)
        return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"

    text = fmt(est.mean, signed)
    if est.half_width is not None:
        text += f" ± {fmt(est.half_width, False)}"
    return f"{text}{unit} (n={est.n})"


def pct(est: Estimate | None) -> str:
    """An accuracy (fraction) as a percentage cell."""
    return estimate(est, scale=100.0, unit=" %")


def pp(est: Estimate | None) -> str:
    """A paired accuracy difference (fraction) in percentage points."""
    return estimate(est, scale=100.0, unit=" pp", signed=True)


def verdict_text(
    est: Estimate | None,
    claim: str = ">",
    threshold: float = 0.0,
    scale: float = 1.0,
    unit: str = "",
    digits: int = 2,
    spec: str | None = None,
) -> str:
    """``"**yes** (Δ = +1.20 pp, 95 % CI [+0.70, +1.70] pp, n=2)"``: the verdict of
    :func:`~kdbias.report.stats.verdict` and the numbers that decided it."""
    word = verdict(est, claim, threshold)
    if est is None:
        return f"**{word}** ({PENDING}: no seed has both runs)"

    def fmt(x: float) -> str:
        return format(x * scale, "+" + spec) if spec else f"{x * scale:+.{digits}f}"

    text = f"Δ = {fmt(est.mean)}{unit}"
    if est.half_width is None:
        text += f", n={est.n}: no interval"
    else:
        text += f", {est.confidence * 100:.0f} % CI [{fmt(est.low)}, {fmt(est.high)}]{unit}, n={est.n}"  # type: ignore[arg-type]
    if threshold:
        text += f"; threshold {fmt(threshold)}{unit}"
    return f"**{word}** ({text})"


def describe_method(method: dict[str, Any]) -> str:
    """The distillation type with the parameters the run recorded (``method``)."""
    loss = method.get("loss")
    if loss == "ce":
        return "Vanilla CE"
    if loss == "soft_kl":
        parts = [f"τ={number(method.get('temperature'))}", f"α={number(method.get('alpha'))}"]
        if method.get("distill_token"):
            parts.append("distillation token")
        return f"Soft KL ({', '.join(parts)})"
    if loss == "cka":
        parts = [f"λ_cka={number(method.get('lambda_cka'))}", f"λ_tok={number(method.get('lambda_tok'))}"]
        pairs = method.get("layer_pairs")
        if isinstance(pairs, list) and pairs:
            parts.append(
                "layers "
                + ",".join(":".join(str(i) for i in pair) for pair in pairs if isinstance(pair, (list, tuple)))
            )
        if method.get("teacher_image_size") is not None:
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
