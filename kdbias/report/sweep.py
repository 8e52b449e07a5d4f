"""Sweeps as tables: one per experiment swept with ``run_all --sweep KEY=V1,V2``.

``run_all`` records each sweep in ``<runs_dir>/sweeps.json`` (:data:`SWEEPS_FILE`)::

    {"format": "kdbias sweeps", "sweeps": [{"experiment": "EXPERIMENT", "dataset": "digits",
      "preset": "smoke", "keys": ["model.temperature"], "reference": {"model.temperature": 4.0}}]}

``reference``: the preset's value of each swept key (the configuration a run without
``--sweep`` gets). :func:`sweep_section` reads every complete run of a swept experiment on
that dataset and preset, groups them by the values of the swept keys in their
``config.yaml``, keeps the runs whose configuration differs from the reference runs' only
in the swept keys (seeds and run-local keys aside), and writes one row per value: the row
is named by key and value (``τ = 1``), with the test accuracy over seeds, the Δ against the
preset's value paired by seed (:func:`~kdbias.report.stats.paired_accuracy_delta`, image by
image; without per-image data the binomial bound, never a verdict), its verdict on Δ > 0,
the fidelity to each teacher the runs measured, and the analytics that ran. Within a value,
the newest run of each seed counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kdbias import runs as run_layout
from kdbias.report.aggregate import fidelity_estimate
from kdbias.report.cells import estimate, md, number, pct, pp, table, verdict_text
from kdbias.report.stats import (
    Estimate,
    accuracy_estimate,
    accuracy_estimate_binomial,
    finite,
    paired_accuracy_delta,
    paired_delta_binomial,
    summarize,
)

__all__ = ["SWEEPS_FILE", "read_sweeps", "sweep_rows", "sweep_section", "value_label"]

SWEEPS_FILE = "sweeps.json"
MAX_SWEEPS_BYTES = 1 << 20
#: How a swept key's last part is written in a row name (others: the last part itself).
SYMBOLS = {"temperature": "τ", "alpha": "α", "lambda_cka": "λ_cka", "lambda_tok": "λ_tok", "lr": "lr"}
#: Analytics columns: summary field -> (column, scale, unit).
ANALYTICS = {
    "hessian_trace": ("Hessian trace", 1.0, ""),
    "hessian_top_eig": ("top Hessian eigenvalue", 1.0, ""),
    "gen_gap_acc": ("generalisation gap", 100.0, " pp"),
}


def read_sweeps(runs_dir: str | Path) -> list[dict[str, Any]]:
    """The sweeps recorded under ``runs_dir`` (module docstring); ``[]`` when there is no
    usable file (a malformed entry is left out)."""
    path = Path(runs_dir) / SWEEPS_FILE
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_SWEEPS_BYTES:
            return []
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    entries = data.get("sweeps") if isinstance(data, dict) else None
    out = []
    for entry in entries if isinstance(entries, list) else []:
        if (
            isinstance(entry, dict)
            and all(isinstance(entry.get(k), str) for k in ("experiment", "dataset", "preset"))
            and isinstance(entry.get("keys"), list)
            and entry["keys"]
            and all(isinstance(k, str) for k in entry["keys"])
            and isinstance(entry.get("reference"), dict)
        ):
            out.append(entry)
    return out


def value_label(values: Mapping[str, Any]) -> str:
    """A row name from swept values: ``{"model.temperature": 1.0}`` -> ``"τ = 1"`` (grids
    joined with ``", "``); the key's last part names it (:data:`SYMBOLS`)."""
    parts = []
    for key, value in values.items():
        name = SYMBOLS.get(key.rsplit(".", 1)[-1], key.rsplit(".", 1)[-1])
        parts.append(f"{name} = {number(value) if finite(value) is not None else md(value)}")
    return ", ".join(parts)


def _plain(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str)


def sweep_rows(
    runs: Sequence[dict[str, Any]], sweep: Mapping[str, Any]
) -> tuple[list[tuple[dict[str, Any], list[dict[str, Any]]]], list[str]]:
    """``(rows, notes)``: per swept value (in value order), ``(values, runs)`` with the newest
    run of each seed; ``notes``: runs left out and why. ``runs``: :func:`load_runs` output."""
    keys = list(sweep["keys"])
    mine = [
        r
        for r in runs
        if r["experiment"] == sweep["experiment"]
        and r["dataset"] == sweep["dataset"]
        and r["preset"] == sweep["preset"]
    ]
    configs = {r["run_dir"]: run_layout.read_config(r["run_dir"]) for r in mine}
    groups: dict[str, tuple[dict[str, Any], dict[int, dict[str, Any]]]] = {}
    for run in sorted(mine, key=lambda r: r["version"]):
        values = {k: run_layout.config_value(configs[run["run_dir"]], k) for k in keys}
        group = groups.setdefault(_plain(values), (values, {}))
        group[1][run["seed"]] = run  # newest version last
    reference = {k: sweep["reference"].get(k) for k in keys}
    ref_group = groups.get(_plain(reference))
    base = configs[next(iter(ref_group[1].values()))["run_dir"]] if ref_group else None
    rows, notes = [], []
    for values, by_seed in groups.values():
        kept = []
        for _, run in sorted(by_seed.items()):
            other = set(run_layout.config_differences(configs[run["run_dir"]], base)) - set(keys) if base else set()
            if other:
                notes.append(f"{run['run_dir']}: differs from the preset's runs in {', '.join(sorted(other)[:4])}")
            else:
                kept.append(run)
        if kept:
            rows.append((values, kept))
    rows.sort(key=lambda row: [(finite(row[0][k]) is None, finite(row[0][k]) or 0, str(row[0][k])) for k in keys])
    return rows, notes


def _correct(runs: list[dict[str, Any]]) -> dict[int, Any] | None:
    out = {r["seed"]: r["predictions"].correct for r in runs if r.get("predictions") is not None}
    return out if len(out) == len(runs) and len({len(v) for v in out.values()}) == 1 else None


def _accuracy(runs: list[dict[str, Any]]) -> Estimate | None:
    correct = _correct(runs)
    if correct is not None:
        return accuracy_estimate(correct)
    images = runs[0].get("test_images")
    accs = {r["seed"]: r.get("test_acc") for r in runs}
    return accuracy_estimate_binomial(accs, images) if isinstance(images, int) else summarize(accs.values(), seeds=accs)


def _delta(runs: list[dict[str, Any]], ref: list[dict[str, Any]]) -> Estimate | None:
    a, b = _correct(runs), _correct(ref)
    if a is not None and b is not None and len(next(iter(a.values()))) == len(next(iter(b.values()))):
        return paired_accuracy_delta(a, b)
    images = runs[0].get("test_images")
    accs = lambda rs: {r["seed"]: r.get("test_acc") for r in rs}  # noqa: E731
    return paired_delta_binomial(accs(runs), accs(ref), images if isinstance(images, int) else 0)


def _by_seed(runs: list[dict[str, Any]], path: Sequence[str]) -> dict[int, float]:
    out = {}
    for run in runs:
        value: Any = run
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if finite(value) is not None:
            out[run["seed"]] = float(value)
    return out


def _columns(rows: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[tuple[str, tuple[str, ...], float, str]]:
    """``(header, summary path, scale, unit)`` of each fidelity and analytics column some run has."""
    every = [r for _, runs in rows for r in runs]
    cols = []
    for key in sorted({k for r in every for k in (r.get("fidelity") or {})}):
        cols.append((f"agreement with {md(key)}", ("fidelity", key, "agreement"), 100.0, " %"))
    for field, (header, scale, unit) in ANALYTICS.items():
        if any(finite(r.get(field)) is not None for r in every):
            cols.append((header, (field,), scale, unit))
    layers = sorted({k for r in every for k in (r.get("attn_dist") or {})}, key=lambda k: (len(k), k))
    if layers:
        cols.append((f"attention distance, layer {layers[-1]} (px)", ("attn_dist", layers[-1]), 1.0, ""))
    for key in sorted({k for r in every for k in (r.get("cka") or {})}):
        cols.append((f"CKA contrast, {md(key)}'s teacher", ("cka", key, "contrast"), 1.0, ""))
    return cols


def sweep_section(
    runs: Sequence[dict[str, Any]],
    sweeps: Sequence[Mapping[str, Any]],
    dataset: str | None = None,
    preset: str | None = None,
    heading: str = "##",
) -> list[str]:
    """Markdown lines: one table per recorded sweep (of ``dataset`` / ``preset`` when given) with
    complete runs (module docstring); ``[]`` when there is none. ``runs``: :func:`load_runs`
    output; ``sweeps``: :func:`read_sweeps` output."""
    lines: list[str] = []
    for sweep in sweeps:
        if (dataset is not None and sweep["dataset"] != dataset) or (preset is not None and sweep["preset"] != preset):
            continue
        rows, notes = sweep_rows(runs, sweep)
        if not rows:
            continue
        keys = list(sweep["keys"])
        reference = {k: sweep["reference"].get(k) for k in keys}
        ref_runs = next((r for v, r in rows if _plain(v) == _plain(reference)), None)
        ref_name = value_label(reference)
        cols = _columns(rows)
        header = [", ".join(keys), "seeds", "test accuracy", f"Δ vs the preset's {ref_name}", "Δ > 0?"]
        header += [c[0] for c in cols]
        body = []
        for values, group in rows:
            is_ref = _plain(values) == _plain(reference)
            delta = None if ref_runs is None or is_ref else _delta(group, ref_runs)
            cells = [
                value_label(values) + (" (preset)" if is_ref else ""),
                ", ".join(str(r["seed"]) for r in group),
                pct(_accuracy(group)),
                "reference" if is_ref else pp(delta) if ref_runs is not None else "*no run of the preset's value*",
                "—" if is_ref or ref_runs is None else verdict_text(delta, scale=100.0, unit=" pp", accuracy=True),
            ]
            for _, path, scale, unit in cols:
                values_by_seed = _by_seed(group, path)
                if path[0] == "fidelity":  # per-image values where every run kept them: seeds and test images
                    est = fidelity_estimate(group, path[1], path[2])
                else:
                    est = summarize(values_by_seed.values(), seeds=values_by_seed) if values_by_seed else None
                bounds = (0.0, 1.0) if path[0] == "fidelity" else None  # a fraction: its interval clipped to [0, 1]
                cells.append(estimate(est, scale=scale, unit=unit, bounds=bounds) if est else "*not measured*")
            body.append(cells)
        lines += [
            f"{heading} Sweep: {md(sweep['experiment'])} over {', '.join(md(k) for k in keys)}",
            "",
            f"Source: {md(sweep['dataset'])} / {md(sweep['preset'])}; one row per swept value, named by key and "
            "value; Δ paired by seed against the preset's value, image by image (95 % CI over seeds and test "
            "images); agreement over seeds and test images where every run kept its per-image values, the "
            "analytics over seeds. Exploratory: a sweep is not a declared hypothesis.",
            "",
            *table(header, body).split("\n"),
            "",
        ]
        lines += [f"- left out: {md(note)}" for note in notes] + ([""] if notes else [])
    return lines
