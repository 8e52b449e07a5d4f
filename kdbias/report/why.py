"""The study's declared report sections (:mod:`kdbias.report.declarations`): for the shipped
study, "Why: controls beyond the plan" (the why rows: a 2 × 2, controls, what each plan hypothesis
can be answered by, fidelity).

Every Δ is a declared hypothesis decided once by the comparison engine (:mod:`kdbias.report.answers`),
with the smallest difference its design could detect (:mod:`kdbias.report.power`), stated and never
used to change a verdict. A comparison without runs reads "not measured". A study that declares no
part has no such section.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kdbias import registry
from kdbias.report.aggregate import Aggregate
from kdbias.report.answers import Answer, groups_run
from kdbias.report.cells import compact_cells, estimate, once, source_line, table
from kdbias.report.declarations import PLACEHOLDER, Block, Grid, Part, declarations
from kdbias.report.front import comparison_text, delta_text, detectable_text, p_text
from kdbias.report.stats import Estimate

__all__ = ["NOT_MEASURED", "RANDOM_KEY", "why_section"]

NOT_MEASURED = "not measured"
RANDOM_KEY = "random_teacher"


def _label(name: str) -> str:
    try:
        return registry.get(name).label
    except ValueError:
        return "random ResNet-18" if name == RANDOM_KEY else name


def _cell(est: Estimate | None, **kwargs: Any) -> str:
    return NOT_MEASURED if est is None else estimate(est, **kwargs)


def _pct(est: Estimate | None) -> str:
    return _cell(est, scale=100.0, unit=" %")


def _agreement(est: Estimate | None) -> str:
    """A top-1 agreement (fraction) in %, saying how the test images' error entered."""
    return _cell(est, scale=100.0, unit=" %", accuracy=True, bounds=(0.0, 1.0))


def _pp(est: Estimate | None) -> str:
    return _cell(est, scale=100.0, unit=" pp", signed=True)


def _rows(decided: list[Answer], keys: tuple[str, ...]) -> list[list[str]]:
    """One row per declared hypothesis ``keys`` (those the study decided): the same numbers as the
    Answers table (one engine), with the comparison written out."""
    by_key = {a.hypothesis.key: a for a in decided}
    rows = []
    for key in keys:
        a = by_key.get(key)
        if a is None:
            continue
        verdict = f"**{a.decision.verdict}**" + (f": {a.decision.reason}" if a.decision.reason else "")
        rows.append([comparison_text(a.hypothesis.contrast), delta_text(a), f"{verdict} ({a.family}; p {p_text(a)})",
                     detectable_text(a)])  # fmt: skip
    return rows


HEADER = ["Comparison", "Δ test acc [95 % CI]", "Verdict", "Detectable (80 % power)"]


def _teacher_acc(agg: Aggregate, student: str, teacher_run: str | None) -> str:
    """Teacher accuracy on the test split: as the student runs recorded it, else the teacher run's."""
    measured = agg.teacher_acc(student)  # one checkpoint's accuracy, measured once (binomial interval)
    if measured is not None and measured.kind == "test":
        return once(measured)
    if teacher_run is not None and agg.has(teacher_run):
        return _pct(agg.acc(teacher_run)) + f" ({_label(teacher_run)} run)"
    return NOT_MEASURED


def _source_name(agg: Aggregate, name: str) -> str:
    run = agg.newest(name)
    source = ((run or {}).get("teacher") or {}).get("source")
    return Path(source).name if isinstance(source, str) and source else NOT_MEASURED


def _value(value: Any) -> str:
    """A recorded method value in text: a list of pairs as ``3→2, 6→4``; missing: not measured."""
    if value is None:
        return NOT_MEASURED
    if isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        return ", ".join(f"{s}→{t}" for s, t in value)
    return str(value)


def _text(agg: Aggregate, text: str) -> str:
    """Declared text with ``{row}`` as the row's label and ``{row:key}`` as its recorded ``method[key]``."""
    return PLACEHOLDER.sub(
        lambda m: _value(agg.method(m[1]).get(m[2])) if m[2] else _label(m[1]),
        text,
    )


def _grid(agg: Aggregate, grid: Grid) -> str:
    """Rows × columns of test accuracies, each row with its teacher's accuracy measured once."""
    rows = []
    for entry in grid.rows:
        if entry.teacher is None:
            teacher = "—"
        else:
            trained_once = agg.once(entry.teacher)
            teacher = once(trained_once) if trained_once is not None else _pct(agg.acc(entry.teacher))
        rows.append([entry.label, teacher, *(f"{_label(n)}: {_pct(agg.acc(n))}" for n in entry.cells)])
    return table([grid.row_header, "Teacher Acc", *grid.columns], rows)


def _matching(decided: list[Answer], key: str) -> str:
    """The teachers' held-out matching of hypothesis ``key`` (TOST) and what it gates."""
    a = next((a for a in decided if a.hypothesis.key == key), None)
    matching = (
        f"Teachers' held-out accuracy (the matching): {_pp(a.matched_estimate)}; **{a.matched.verdict}** "
        f"({a.matched.reason})."
        if a is not None and a.matched is not None and a.matched_estimate is not None
        else f"Teachers' held-out accuracy (the matching): {NOT_MEASURED}."
    )
    return matching + (
        " A comparison at matched accuracy gives a verdict only where the two teachers' held-out "
        "accuracies are shown equivalent (two one-sided tests within the margin)."
    )


def _teachers(agg: Aggregate, entries: tuple[tuple[str, str], ...]) -> str:
    """Each student's teacher accuracy as its runs recorded it; a matched snapshot names its file."""
    rows = []
    for student, words in entries:
        row = registry.get(student)
        snapshot = row.teacher_matched_to is not None
        teacher = f"{words} `{_source_name(agg, student)}`" if snapshot else words
        rows.append([_label(student), teacher, _teacher_acc(agg, student, None if snapshot else row.teacher)])
    return table(["Student", "Teacher", "Teacher Acc"], rows)


def _block(agg: Aggregate, decided: list[Answer], block: Block) -> str:
    if block.kind == "text":
        return _text(agg, block.value)
    if block.kind == "hypotheses":
        return table(HEADER, _rows(decided, block.value))
    if block.kind == "grid":
        return _grid(agg, block.value)
    if block.kind == "matched":
        return _matching(decided, block.value)
    if block.kind == "teachers":
        return _teachers(agg, block.value)
    return "\n".join(f"- {_text(agg, line)}" for line in block.value)  # bullets


def _part(agg: Aggregate, decided: list[Answer], part: Part) -> list[str]:
    parts = [f"## {part.title}\n", source_line(agg) + "\n"]
    parts += [_text(agg, part.intro) + "\n"] if part.intro else []
    for section in part.sections:
        parts.append(f"### {_text(agg, section.title)}\n")
        parts += [_block(agg, decided, block) + "\n" for block in section.blocks]
    return parts + (_fidelity(agg) if part.fidelity else [])


def _fidelity(agg: Aggregate) -> list[str]:
    with compact_cells():  # mean [95 % interval]; the note above the table says how
        rows = _fidelity_rows(agg)
    return _fidelity_parts(rows)


def _fidelity_rows(agg: Aggregate) -> list[list[str]]:
    students = [e.name for e in registry.ALL_EXPERIMENTS.values() if e.role == "student"]
    reference = registry.reference()
    rows = []
    for name in students:
        keys: list[str] = []
        for run in agg.runs.get(name, []):
            keys += [k for k in run.get("fidelity") or {} if k not in keys]
        if not keys:
            rows.append([_label(name), _pct(agg.acc(name)), "—", NOT_MEASURED, NOT_MEASURED, "—"])
        for key in keys:
            agreement, kl = agg.fidelity(name, key, "agreement"), agg.fidelity(name, key, "kl")
            matched = registry.get(name).teacher_matched_to is not None  # a snapshot, not the baseline's checkpoint
            same = reference is not None and name != reference and not matched
            control = _agreement(agg.fidelity(reference, key, "agreement")) if same else "—"
            rows.append(
                [
                    _label(name),
                    _pct(agg.acc(name)),
                    f"{_label(key)} (matched snapshot)" if matched else _label(key),
                    _agreement(agreement),
                    _cell(kl, digits=3, unit=" nats", accuracy=True, bounds=(0.0, math.inf)),
                    control,
                ]
            )
    return rows


def _fidelity_parts(rows: list[list[str]]) -> list[str]:
    reference = registry.reference()
    control = _label(reference) if reference is not None else "reference student"
    return [
        "### Fidelity to the teacher\n",
        "Top-1 agreement and KL(teacher ‖ student) at τ = 1 (nats, mean over images), measured once on the "
        f"official test split with the selected checkpoint; the {control} against every teacher is the control. "
        "Cells: mean [95 % interval]: seeds and test images (per-image values, as for accuracy), or seeds only "
        "where a run kept no per-image values; a fraction's interval is clipped to its range.\n",
        table(
            [
                "Student",
                "Test Acc",
                "Against",
                "Agreement",
                "KL (teacher ‖ student)",
                f"{control}'s agreement (control)",
            ],
            rows,
        )
        + "\n",
    ]


def _shown(agg: Aggregate, part: Part, run_groups: tuple[str, ...]) -> bool:
    """A declared part is shown when a student of its group has runs (without a group: any row it names)."""
    return part.group in run_groups if part.group is not None else any(agg.has(n) for n in part.rows)


def why_section(agg: Aggregate, decided: list[Answer]) -> list[str]:
    """The study's declared parts (Markdown), each where its rows have runs: for the shipped study
    the "Why" section (the 2 × 2 and its effects, the controls, what each plan hypothesis can be
    answered by, fidelity); every Δ decided by the one engine (``decided``). None declared: ``[]``."""
    run_groups = groups_run(agg)
    out: list[str] = []
    for part in declarations(registry.active()).parts:
        if _shown(agg, part, run_groups):
            out += _part(agg, decided, part)
    return out
