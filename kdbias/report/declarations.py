"""The report's declared parts of a study: its ``report:`` mappings, parsed and checked (pure).

A study file may declare what its rows can say beyond the Answers table (:mod:`kdbias.study`).
Two keys are read; everything else in ``report:`` is refused::

    report:
      analytics:                       # the study's expectations on the analytics (Key Findings)
        - metric: attention_distance   # or hessian_trace
          contrast: {kd: 1, ce: -1}    # a pair of rows: Δ = first − second, paired by seed
          claim: '<'                   # Δ <claim> 0 (">", ">=", "<", "<=")
          words: more locally          # attention only: "<kd's label> attends more locally than <ce's>"
      part:                            # a report section of its own (one ## heading)
        group: mine                    # shown when a student of this row group has runs (default: any row named)
        title: What the rows can say
        intro: one paragraph
        fidelity: true                 # end with the fidelity table (every student against its teachers)
        sections:                      # ### subsections, each a title and blocks in order
          - title: Teacher × loss
            body:
              - a paragraph; {kd} is a row's label, {kd:global_batch_size} its recorded method value
              - hypotheses: [loss_effect, interaction]         # the Answers table's numbers for these keys
              - grid:                                          # rows × columns of cells (test accuracy)
                  row_header: Teacher
                  columns: [Soft KL, CKA]
                  rows: [{label: CNN, teacher: cnn_teacher, cells: [kd, kd_cka]}]
              - matched: at_matched_accuracy                   # the teachers' held-out matching of a hypothesis
              - teachers: [{student: kd, teacher: the CNN}]    # each student's recorded teacher accuracy
              - bullets: [a line, another line]

The shipped ``why.yaml`` declares the "Why" section this way and ``plan.yaml`` the plan's analytics.
Every row and hypothesis a declaration names must be the study's; a bad declaration is a
:class:`~kdbias.study.StudyError` naming the file and the key. No declaration: no such section.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kdbias.study import CLAIMS, Study, StudyError

__all__ = [
    "METRICS",
    "PLACEHOLDER",
    "AnalyticClaim",
    "Block",
    "Declarations",
    "Grid",
    "GridRow",
    "Part",
    "Section",
    "declarations",
]

#: Analytics a declared expectation can be about.
METRICS = ("attention_distance", "hessian_trace")
#: ``{row}`` (its label) or ``{row:key}`` (its newest run's ``method[key]``) inside declared text.
PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)(?::([A-Za-z_][A-Za-z0-9_]*))?\}")
_REPORT_KEYS = {"analytics", "part"}
_CLAIM_KEYS = {"metric", "contrast", "claim", "words"}
_PART_KEYS = {"group", "title", "intro", "fidelity", "sections"}
_SECTION_KEYS = {"title", "body"}
_BLOCKS = ("hypotheses", "grid", "matched", "teachers", "bullets")
_GRID_KEYS = {"row_header", "columns", "rows"}
_GRID_ROW_KEYS = {"label", "teacher", "cells"}
_TEACHER_KEYS = {"student", "teacher"}


@dataclass(frozen=True)
class AnalyticClaim:
    """An expectation on an analytic: ``metric(a) − metric(b) <claim> 0``, paired by seed."""

    metric: str
    a: str
    b: str
    claim: str
    words: str = ""


@dataclass(frozen=True)
class GridRow:
    """One row of a grid: its label, its teacher row (``None``: no Teacher Acc) and a row per column."""

    label: str
    teacher: str | None
    cells: tuple[str, ...]


@dataclass(frozen=True)
class Grid:
    """A table of rows × columns whose cells are rows' test accuracies (a factorial design)."""

    row_header: str
    columns: tuple[str, ...]
    rows: tuple[GridRow, ...]


@dataclass(frozen=True)
class Block:
    """One block of a section: ``kind`` is ``"text"`` (``value``: str), ``"hypotheses"`` (keys),
    ``"grid"`` (:class:`Grid`), ``"matched"`` (a hypothesis key), ``"teachers"`` (``((student,
    teacher words), ...)``) or ``"bullets"`` (lines)."""

    kind: str
    value: Any


@dataclass(frozen=True)
class Section:
    """A ``###`` subsection: its title and blocks, in order."""

    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Part:
    """A declared ``##`` section of the report (one study file's ``report.part``)."""

    source: str
    group: str | None
    title: str
    intro: str
    sections: tuple[Section, ...]
    fidelity: bool
    rows: tuple[str, ...]  # every row it names (when it is shown without a group)


@dataclass(frozen=True)
class Declarations:
    """Every declaration of a study, in include order."""

    analytics: tuple[AnalyticClaim, ...] = ()
    parts: tuple[Part, ...] = ()

    def attention(self, reference: str | None) -> dict[str, tuple[str, str]]:
        """``{row: (claim, words)}`` of the attention expectations against ``reference``."""
        return {
            c.a: (c.claim, c.words) for c in self.analytics if c.metric == "attention_distance" and c.b == reference
        }


class _Checker:
    """Parses one file's ``report:`` mapping against the study's rows and hypotheses."""

    def __init__(self, study: Study, source: str):
        self.source = source
        self.rows = {row.name for row in study.rows}
        self.groups = set(study.groups)
        self.hypotheses = {h.key: h for h in study.hypotheses}
        self.named: list[str] = []

    def fail(self, where: str, message: str) -> StudyError:
        return StudyError(f"study file {self.source}: report{'.' + where if where else ''}: {message}")

    def mapping(self, value: Any, where: str, keys: set[str], required: tuple[str, ...] = ()) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"must be a mapping with {', '.join(sorted(keys))}, got {value!r}")
        unknown = sorted(set(value) - keys)
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(map(str, unknown))}; valid: {', '.join(sorted(keys))}")
        missing = [k for k in required if value.get(k) is None]
        if missing:
            raise self.fail(where, f"needs {', '.join(missing)}")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"must be text, got {value!r}")
        for row, _ in PLACEHOLDER.findall(value):
            self.row(row, where)
        return value

    def texts(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, f"must be a non-empty list, got {value!r}")
        return tuple(self.text(v, f"{where}[{i}]") for i, v in enumerate(value))

    def row(self, name: Any, where: str) -> str:
        if name not in self.rows:
            valid = ", ".join(sorted(self.rows))
            raise self.fail(where, f"names {name!r}, which no row of the study declares; valid: {valid}")
        self.named.append(name)
        return name

    def hypothesis(self, key: Any, where: str) -> str:
        if key not in self.hypotheses:
            raise self.fail(where, f"names hypothesis {key!r}, which the study does not declare; valid: "
                            f"{', '.join(self.hypotheses)}")  # fmt: skip
        self.named.extend(self.hypotheses[key].experiments)
        return key

    def claim(self, entry: Any, where: str) -> AnalyticClaim:
        entry = self.mapping(entry, where, _CLAIM_KEYS, ("metric", "contrast", "claim"))
        if entry["metric"] not in METRICS:
            raise self.fail(f"{where}.metric", f"{entry['metric']!r} must be one of {', '.join(METRICS)}")
        contrast = entry["contrast"]
        if not isinstance(contrast, Mapping) or sorted(contrast.values()) != [-1, 1]:
            raise self.fail(f"{where}.contrast", f"must be a pair {{a: 1, b: -1}}, got {contrast!r}")
        a, b = (self.row(n, f"{where}.contrast") for n in sorted(contrast, key=lambda n: -contrast[n]))
        if entry["claim"] not in CLAIMS:
            raise self.fail(f"{where}.claim", f"{entry['claim']!r} must be one of {' '.join(CLAIMS)}")
        words = self.text(entry.get("words", ""), f"{where}.words")
        return AnalyticClaim(entry["metric"], a, b, entry["claim"], words)

    def grid(self, value: Any, where: str) -> Grid:
        value = self.mapping(value, where, _GRID_KEYS, ("columns", "rows"))
        columns = self.texts(value["columns"], f"{where}.columns")
        rows = []
        for i, entry in enumerate(value["rows"] if isinstance(value["rows"], list) else [None]):
            at = f"{where}.rows[{i}]"
            entry = self.mapping(entry, at, _GRID_ROW_KEYS, ("label", "cells"))
            cells = entry["cells"]
            if not isinstance(cells, list) or len(cells) != len(columns):
                raise self.fail(f"{at}.cells", f"must name one row per column ({len(columns)}), got {cells!r}")
            teacher = None if entry.get("teacher") is None else self.row(entry["teacher"], f"{at}.teacher")
            label = self.text(entry["label"], f"{at}.label")
            rows.append(GridRow(label, teacher, tuple(self.row(c, f"{at}.cells") for c in cells)))
        return Grid(self.text(value.get("row_header", "Teacher"), f"{where}.row_header"), columns, tuple(rows))

    def block(self, value: Any, where: str) -> Block:
        if isinstance(value, str):
            return Block("text", self.text(value, where))
        if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in _BLOCKS:
            raise self.fail(where, f"must be text or a mapping with one of {', '.join(_BLOCKS)}, got {value!r}")
        kind, content = next(iter(value.items()))
        at = f"{where}.{kind}"
        if kind == "hypotheses":
            if not isinstance(content, list) or not content:
                raise self.fail(at, f"must list hypothesis keys, got {content!r}")
            return Block(kind, tuple(self.hypothesis(k, at) for k in content))
        if kind == "grid":
            return Block(kind, self.grid(content, at))
        if kind == "matched":
            key = self.hypothesis(content, at)
            if self.hypotheses[key].matched is None:
                raise self.fail(at, f"hypothesis {key} declares no matched teachers (matched: [a, b])")
            return Block(kind, key)
        if kind == "teachers":
            if not isinstance(content, list) or not content:
                raise self.fail(at, f"must list {{student, teacher}} entries, got {content!r}")
            keys = ("student", "teacher")
            entries = [self.mapping(e, f"{at}[{i}]", _TEACHER_KEYS, keys) for i, e in enumerate(content)]
            return Block(kind, tuple((self.row(e["student"], at), self.text(e["teacher"], at)) for e in entries))
        return Block(kind, self.texts(content, at))

    def part(self, value: Any, where: str) -> Part:
        value = self.mapping(value, where, _PART_KEYS, ("title", "sections"))
        group = value.get("group")
        if group is not None and group not in self.groups:
            valid = ", ".join(sorted(self.groups))
            raise self.fail(f"{where}.group", f"{group!r} is not a row group of the study; valid: {valid}")
        sections = value["sections"]
        if not isinstance(sections, list) or not sections:
            raise self.fail(f"{where}.sections", "must be a non-empty list of {title, body}")
        parsed = []
        for i, entry in enumerate(sections):
            at = f"{where}.sections[{i}]"
            entry = self.mapping(entry, at, _SECTION_KEYS, ("title", "body"))
            body = entry["body"]
            if not isinstance(body, list) or not body:
                raise self.fail(f"{at}.body", "must be a non-empty list of blocks")
            blocks = tuple(self.block(b, f"{at}.body[{j}]") for j, b in enumerate(body))
            parsed.append(Section(self.text(entry["title"], f"{at}.title"), blocks))
        if not isinstance(value.get("fidelity", False), bool):
            raise self.fail(f"{where}.fidelity", f"must be true or false, got {value['fidelity']!r}")
        return Part(
            source=self.source,
            group=group,
            title=self.text(value["title"], f"{where}.title"),
            intro=self.text(value.get("intro", ""), f"{where}.intro"),
            sections=tuple(parsed),
            fidelity=bool(value.get("fidelity", False)),
            rows=tuple(dict.fromkeys(self.named)),
        )


def declarations(study: Study) -> Declarations:
    """Every ``report:`` declaration of ``study`` (its included files' first), parsed and checked."""
    claims: list[AnalyticClaim] = []
    parts: list[Part] = []
    for source, report in study.report:
        check = _Checker(study, source)
        report = check.mapping(report, "", _REPORT_KEYS)  # a file's report: mapping
        analytics = report.get("analytics", [])
        if not isinstance(analytics, list):
            raise check.fail("analytics", f"must be a list of {{metric, contrast, claim}}, got {analytics!r}")
        claims += [check.claim(entry, f"analytics[{i}]") for i, entry in enumerate(analytics)]
        if report.get("part") is not None:
            check.named.clear()
            parts.append(check.part(report["part"], "part"))
    return Declarations(tuple(claims), tuple(parts))
