"""Reading and checking a study file (format: :mod:`kdbias.study`): bounded like a ``--config``
file (:mod:`kdbias.config_files`), included studies first, every name checked against the rows
before anything is imported; a bad file is one :class:`~kdbias.study.StudyError` naming it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from kdbias.config_files import TRUSTED_PREFIXES, ConfigFileError, load_yaml, read_config_file
from kdbias.study import (
    CLAIMS,
    DEFAULT_STUDY,
    EVERY_TEACHER,
    NAME_PATTERN,
    ROLES,
    SHIPPED,
    SHIPPED_CONFIGS,
    Experiment,
    Hypothesis,
    Study,
    StudyError,
    study_path,
)

__all__ = ["load_study"]

_STUDY_KEYS = {"study", "description", "group", "include", "rows", "hypotheses", "fidelity", "report"}
_ROW_KEYS = {
    "name", "label", "module", "pieces", "overrides", "role", "description", "teacher", "teacher_family",
    "control_of", "depends_on", "group", "teacher_matched_to", "target", "reference", "fidelity_against",
    "compared_with",
}  # fmt: skip
_HYPOTHESIS_KEYS = {"key", "question", "contrast", "claim", "threshold", "confirmatory", "group", "matched"}


def _fail(source: Path, message: str) -> StudyError:
    return StudyError(f"study file {source}: {message}")


def _names(value: Any, source: Path, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, f"{where} must be a list of names, got {value!r}")
    return tuple(value)


def _row(entry: Any, source: Path, group: str, dirs: tuple[Path, ...]) -> Experiment:
    if not isinstance(entry, dict):
        raise _fail(source, f"each row must be a mapping, got {entry!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise _fail(source, f"row name {name!r} must be lower-case letters, digits and _ (a folder name)")
    unknown = sorted(set(entry) - _ROW_KEYS)
    if unknown:
        raise _fail(source, f"row {name}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_ROW_KEYS))}")
    module = entry.get("module")
    if not isinstance(module, str) or not module.startswith(TRUSTED_PREFIXES) or "." not in module:
        raise _fail(source, f"row {name}: module {module!r} must be a class path under {' or '.join(TRUSTED_PREFIXES)} "
                    "(e.g. kdbias.modules.KLDistillModule)")  # fmt: skip
    role = entry.get("role", "student")
    if role not in ROLES:
        raise _fail(source, f"row {name}: role {role!r} must be one of {', '.join(ROLES)}")
    overrides = entry.get("overrides") or {}
    if not isinstance(overrides, dict) or not all(isinstance(k, str) and k for k in overrides):
        raise _fail(source, f"row {name}: overrides must map dotted keys to values (model.temperature: 4.0)")
    target = entry.get("target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1):
        raise _fail(source, f"row {name}: target {target!r} must be a fraction in (0, 1]")
    for key in ("label", "description", "teacher", "teacher_family", "control_of", "teacher_matched_to",
                "group"):  # fmt: skip
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise _fail(source, f"row {name}: {key} must be a string, got {entry[key]!r}")
    return Experiment(
        name=name,
        label=entry.get("label") or name,
        module_path=module,
        pieces=_names(entry.get("pieces"), source, f"row {name}: pieces"),
        role=role,
        description=entry.get("description") or name,
        teacher=entry.get("teacher"),
        teacher_family=entry.get("teacher_family"),
        control_of=entry.get("control_of"),
        depends_on=_names(entry.get("depends_on"), source, f"row {name}: depends_on"),
        group=entry.get("group") or group,
        teacher_matched_to=entry.get("teacher_matched_to"),
        overrides=tuple(overrides.items()),
        target=None if target is None else float(target),
        reference=bool(entry.get("reference", False)),
        fidelity_against=_names(entry.get("fidelity_against"), source, f"row {name}: fidelity_against"),
        compared_with=_names(entry.get("compared_with"), source, f"row {name}: compared_with"),
        configs_dirs=dirs,
    )


def _hypothesis(entry: Any, source: Path, group: str) -> Hypothesis:
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        raise _fail(source, f"each hypothesis must be a mapping with a key, got {entry!r}")
    key = entry["key"]
    unknown = sorted(set(entry) - _HYPOTHESIS_KEYS)
    if unknown:
        raise _fail(source, f"hypothesis {key}: unknown key(s) {', '.join(unknown)}; "
                    f"valid: {', '.join(sorted(_HYPOTHESIS_KEYS))}")  # fmt: skip
    contrast = entry.get("contrast")
    if (
        not isinstance(contrast, dict)
        or len(contrast) < 2
        or not all(
            isinstance(k, str) and isinstance(w, (int, float)) and not isinstance(w, bool) and w != 0
            for k, w in contrast.items()
        )
    ):
        raise _fail(source, f"hypothesis {key}: contrast must map two or more rows to non-zero weights "
                    "({exp1: 1, baseline: -1})")  # fmt: skip
    if abs(sum(contrast.values())) > 1e-9:
        raise _fail(source, f"hypothesis {key}: the contrast's weights must sum to 0 (a difference), got "
                    f"{sum(contrast.values()):g}")  # fmt: skip
    claim = entry.get("claim", ">")
    if claim not in CLAIMS:
        raise _fail(source, f"hypothesis {key}: claim {claim!r} must be one of {' '.join(CLAIMS)}")
    threshold = entry.get("threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 < threshold < 1:
        raise _fail(source, f"hypothesis {key}: threshold {threshold!r} must be a fraction in (-1, 1) (0.03 = 3 pp)")
    matched = entry.get("matched")
    if matched is not None and (not isinstance(matched, list) or len(matched) != 2):
        raise _fail(source, f"hypothesis {key}: matched must name two rows, got {matched!r}")
    return Hypothesis(
        key=key,
        question=str(entry.get("question") or key),
        contrast=tuple((k, float(w)) for k, w in contrast.items()),
        claim=claim,
        threshold=float(threshold),
        confirmatory=bool(entry.get("confirmatory", False)),
        group=str(entry.get("group") or group),
        matched=None if matched is None else (str(matched[0]), str(matched[1])),
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(read_config_file(path), str(path))
    except FileNotFoundError:
        raise StudyError(f"study file {path} does not exist; name a YAML file or a shipped study "
                         f"({', '.join(sorted(p.stem for p in SHIPPED.glob('*.yaml')))})") from None  # fmt: skip
    except (ConfigFileError, OSError) as error:
        raise StudyError(f"study file {path}: {error}") from None
    if not isinstance(data, dict):
        raise _fail(path, "must be a mapping with rows: and hypotheses:")
    unknown = sorted(set(data) - _STUDY_KEYS)
    if unknown:
        raise _fail(path, f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_STUDY_KEYS))}")
    return data


def _collect(path: Path, seen: tuple[Path, ...], out: dict[str, Any]) -> None:
    """Rows, hypotheses and report declarations of ``path`` and what it includes (first)."""
    path = path.resolve()
    if path in seen:
        raise _fail(path, f"includes itself ({' → '.join(p.name for p in (*seen, path))})")
    if path in out["files"]:
        return
    data = _read(path)
    for name in _names(data.get("include"), path, "include"):
        _collect(study_path(name, path.parent), (*seen, path), out)
    out["files"].append(path)
    group = data.get("group") or data.get("study") or path.stem
    if not isinstance(group, str) or not NAME_PATTERN.fullmatch(group):
        raise _fail(path, f"group {group!r} must be lower-case letters, digits and _")
    dirs = tuple(dict.fromkeys((path.parent / "configs", SHIPPED_CONFIGS)))
    rows = data.get("rows") or []
    hypotheses = data.get("hypotheses") or []
    if not isinstance(rows, list) or not isinstance(hypotheses, list):
        raise _fail(path, "rows and hypotheses must be lists")
    out["rows"] += [_row(entry, path, group, dirs) for entry in rows]
    out["hypotheses"] += [_hypothesis(entry, path, group) for entry in hypotheses]
    fidelity = data.get("fidelity") or {}
    if not isinstance(fidelity, dict):
        raise _fail(path, "fidelity must map rows to the teacher rows they are also measured against")
    for name, against in fidelity.items():
        out["fidelity"].setdefault(name, []).extend(_names(against, path, f"fidelity: {name}"))
    report = data.get("report")
    if report is not None and not isinstance(report, dict):
        raise _fail(path, "report must be a mapping of section declarations")
    if report:
        out["report"].append((str(path), report))
    out["meta"] = data
    out["own_groups"] = tuple(dict.fromkeys(row.group for row in out["rows"][len(out["rows"]) - len(rows) :]))


def _check(study: Study, source: Path) -> None:
    names = [row.name for row in study.rows]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise _fail(source, f"row(s) {', '.join(duplicated)} declared twice; give each row one name")
    known = set(names)
    teachers = {row.name for row in study.rows if row.role == "teacher"}
    for row in study.rows:
        refs = {
            "teacher": (row.teacher,) if row.teacher else (),
            "control_of": (row.control_of,) if row.control_of else (),
            "depends_on": row.depends_on,
            "teacher_matched_to": (row.teacher_matched_to,) if row.teacher_matched_to else (),
            "compared_with": row.compared_with,
        }
        for key, values in refs.items():
            missing = [v for v in values if v not in known]
            if missing:
                raise _fail(source, f"row {row.name}: {key} names {', '.join(missing)}, which no row declares")
        if row.teacher and row.teacher not in teachers:
            raise _fail(source, f"row {row.name}: teacher {row.teacher} is not a teacher row (role: teacher)")
        against = set(row.fidelity_against) - teachers - {EVERY_TEACHER, "random_teacher"}
        if against:
            raise _fail(
                source, f"row {row.name}: fidelity_against names {', '.join(sorted(against))}, not a teacher row"
            )
    keys = [h.key for h in study.hypotheses]
    if len(set(keys)) != len(keys):
        raise _fail(source, "two hypotheses share a key; give each its own")
    for h in study.hypotheses:
        missing = [n for n in (*h.experiments, *(h.matched or ())) if n not in known]
        if missing:
            raise _fail(source, f"hypothesis {h.key}: names {', '.join(missing)}, which no row declares")
    order = {name: i for i, name in enumerate(names)}
    for row in study.rows:  # run order: a row after everything it needs (no cycle possible then)
        late = [d for d in (*row.depends_on, *([row.teacher] if row.teacher else [])) if order[d] > order[row.name]]
        if late and study.row(late[0]).role != "teacher":
            raise _fail(source, f"row {row.name} needs {', '.join(late)}, declared after it; declare it first")


def load_study(name: str | Path = DEFAULT_STUDY) -> Study:
    """The study in file ``name`` (a shipped study's name or a path), with its includes, checked
    whole (:class:`StudyError` naming the file and the fix). Nothing is imported."""
    path = study_path(name)
    out: dict[str, Any] = {"files": [], "rows": [], "hypotheses": [], "report": [], "meta": {}, "fidelity": {}}
    _collect(path, (), out)
    unknown = sorted(set(out["fidelity"]) - {row.name for row in out["rows"]})
    if unknown:
        raise _fail(path, f"fidelity names {', '.join(unknown)}, which no row declares")
    out["rows"] = [
        replace(row, fidelity_against=(*row.fidelity_against, *out["fidelity"].get(row.name, ())))
        for row in out["rows"]
    ]
    meta = out["meta"]
    groups = tuple(dict.fromkeys(row.group for row in out["rows"]))
    study = Study(
        name=str(meta.get("study") or path.stem),
        description=str(meta.get("description") or ""),
        rows=tuple(out["rows"]),
        hypotheses=tuple(out["hypotheses"]),
        groups=groups,
        own_groups=out["own_groups"],
        report=tuple(out["report"]),
        source=path.resolve(),
    )
    _check(study, path)
    return study
