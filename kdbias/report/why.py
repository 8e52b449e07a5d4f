"""The report's "Why" section: the rows beyond the plan (registry group ``"why"``) and what they isolate.

Every Δ is a declared hypothesis decided once by the comparison engine (:mod:`kdbias.report.answers`):
the 2 × 2's main effects and interaction image by image, the controls, each with the smallest
difference its design could detect (:mod:`kdbias.report.power`), stated and never used to change a
verdict. A comparison without runs reads "not measured".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kdbias import registry
from kdbias.report.aggregate import Aggregate
from kdbias.report.answers import Answer
from kdbias.report.cells import compact_cells, estimate, once, source_line, table
from kdbias.report.front import comparison_text, delta_text, detectable_text, p_text
from kdbias.report.stats import Estimate

__all__ = ["CELLS", "NOT_MEASURED", "why_section"]

NOT_MEASURED = "not measured"
TEACHERS_2X2 = ("ResNet-18", "DINOv2-S/14")
LOSSES_2X2 = ("soft KL", "CKA + token")
#: The 2 x 2 {teacher} x {loss}: the experiment in each cell.
CELLS = {
    ("ResNet-18", "soft KL"): "exp1",
    ("ResNet-18", "CKA + token"): "exp1_cka",
    ("DINOv2-S/14", "soft KL"): "exp3_kl",
    ("DINOv2-S/14", "CKA + token"): "exp3",
}
ROW_TEACHER = {"ResNet-18": "teacher_resnet18", "DINOv2-S/14": "teacher_dinov2_probe"}
RANDOM_KEY = "random_teacher"
EFFECT_TITLES = {
    "loss": ("Loss: CKA − soft KL, averaged over both teachers", "CKA + token beats soft KL"),
    "teacher": ("Teacher: DINOv2 − ResNet-18, averaged over both losses", "DINOv2 is the better teacher"),
    "interaction": (
        "Interaction: (DINOv2, CKA) − (DINOv2, KL) − (ResNet, CKA) + (ResNet, KL)",
        "CKA gains more (or loses less) from DINOv2 than from ResNet-18",
    ),
}


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


def _two_by_two(agg: Aggregate, decided: list[Answer]) -> list[str]:
    rows = []
    for teacher in TEACHERS_2X2:
        trained_once = agg.once(ROW_TEACHER[teacher])
        row = [teacher, once(trained_once) if trained_once is not None else _pct(agg.acc(ROW_TEACHER[teacher]))]
        for loss in LOSSES_2X2:
            name = CELLS[teacher, loss]
            row.append(f"{_label(name)}: {_pct(agg.acc(name))}")
        rows.append(row)
    pairs = {name: agg.method(name).get("layer_pairs") for name in ("exp1_cka", "exp3")}
    pair_text = "; ".join(
        f"{_label(n)}: {', '.join(f'{s}→{t}' for s, t in p) if isinstance(p, list) else NOT_MEASURED}"
        for n, p in pairs.items()
    )
    batches = {name: agg.method(name).get("global_batch_size") for name in ("exp1", "exp3")}
    return [
        "### Teacher × loss (2 × 2)\n",
        "Test accuracy (selected checkpoint, official test split), mean ± 95 % CI over seeds and test images. "
        "Teacher Acc: the teacher run's test accuracy, measured once (DINOv2: its linear probe on the frozen "
        "backbone).\n",
        table(["Teacher", "Teacher Acc", "Soft KL (τ, α of EXP-1)", "CKA + token (λs of EXP-3)"], rows) + "\n",
        f"Layer pairs (student block → teacher block; ResNet-18 by relative depth): {pair_text}.\n",
        "Main effects and interaction, each computed image by image over the seeds present in all four cells:\n",
        table(HEADER, _rows(decided, ("loss_effect", "teacher_effect", "interaction"))) + "\n",
        "Confounded within the 2 × 2: the CKA cells train at EXP-3's batch "
        f"({batches['exp3'] if batches['exp3'] is not None else NOT_MEASURED}) and the KL cells at EXP-1's "
        f"({batches['exp1'] if batches['exp1'] is not None else NOT_MEASURED}), so the loss effect includes the "
        "batch change; alone it is:\n",
        table(HEADER, _rows(decided, ("batch_effect",))) + "\n",
        "The DINOv2 row also differs from the ResNet row in architecture, pretraining data and accuracy together: "
        "the teacher effect does not name which.\n",
    ]


def _controls(agg: Aggregate, decided: list[Answer]) -> list[str]:
    keys = ("bias_at_matched_accuracy", "random_teacher_floor", "knowledge_over_random", "exp2_over_exp1")
    matched = next((a for a in decided if a.hypothesis.matched is not None), None)
    matching = (
        f"Teachers' held-out accuracy (the matching): {_pp(matched.matched_estimate)}; "
        f"**{matched.matched.verdict}** ({matched.matched.reason})."
        if matched is not None and matched.matched is not None and matched.matched_estimate is not None
        else f"Teachers' held-out accuracy (the matching): {NOT_MEASURED}."
    )
    teachers = [
        [
            _label("exp1_matched"),
            f"ResNet-18 snapshot `{_source_name(agg, 'exp1_matched')}`",
            _teacher_acc(agg, "exp1_matched", None),
        ],
        [_label("exp_vit_kl"), "DeiT-S", _teacher_acc(agg, "exp_vit_kl", "teacher_deit")],
        [_label("exp1"), "ResNet-18 (selected)", _teacher_acc(agg, "exp1", "teacher_resnet18")],
        [_label("exp2"), "ConvNeXt V2 (selected)", _teacher_acc(agg, "exp2", "teacher_convnextv2")],
        [_label("exp_random_teacher"), "untrained ResNet-18", _teacher_acc(agg, "exp_random_teacher", None)],
    ]
    return [
        "### Controls: matched accuracy, random teacher, ConvNeXt vs ResNet\n",
        table(HEADER, _rows(decided, keys)) + "\n",
        matching + " A comparison at matched accuracy gives a verdict only where the two teachers' held-out "
        "accuracies are shown equivalent (two one-sided tests within the margin).\n",
        "Teachers' test accuracy, as the student runs recorded it (the matched snapshot is chosen on the held-out "
        "split only):\n",
        table(["Student", "Teacher", "Teacher Acc"], teachers) + "\n",
        "EXP-2 − EXP-1 changes the teacher's design *and* its accuracy and pretraining (ConvNeXt V2 starts from "
        "ImageNet weights): it is not an inductive-bias effect by itself.\n",
    ]


def _hypotheses(agg: Aggregate) -> list[str]:
    lines = [
        "**EXP-1 (CNN biases conflict with ViT attention → negative transfer).** Answered by: inductive bias at "
        "matched accuracy (EXP-1 matched − ViT KL), read against the random-teacher floor. Cannot answer "
        "(confounded): EXP-1 − Baseline (bias and knowledge together), EXP-1 vs EXP-3 (architecture, training, "
        "loss, batch and teacher accuracy all change).",
        "**EXP-2 (ConvNeXt's Transformer-like design transfers better).** Answered by: nothing in this matrix "
        "alone. EXP-2 − EXP-1 is confounded with teacher accuracy and ImageNet pretraining (both teachers' "
        "accuracies are shown beside it); only an accuracy-matched ConvNeXt would isolate the design.",
        "**EXP-3 (structural CKA transfers without imposing conflicting biases).** Answered by: the interaction "
        "of the 2 × 2 (does CKA gain more from DINOv2 than from ResNet-18?) and the loss effect. Cannot answer "
        "(confounded): EXP-3 − EXP-1 and EXP-3 − EXP-2 (teacher and loss together), EXP-3 − Baseline (b512) "
        "(teacher and loss together; it controls the batch only).",
        "**Fidelity (did the student absorb its teacher?).** Answered by: agreement and KL to the teacher next "
        "to the Baseline's against the same teacher (below); fidelity is not accuracy.",
    ]
    return ["### What the matrix can and cannot say\n", "\n".join(f"- {line}" for line in lines) + "\n"]


def _fidelity(agg: Aggregate) -> list[str]:
    with compact_cells():  # mean [95 % interval]; the note above the table says how
        rows = _fidelity_rows(agg)
    return _fidelity_parts(rows)


def _fidelity_rows(agg: Aggregate) -> list[list[str]]:
    students = [*registry.STUDENTS, *(e.name for e in registry.WHY_EXPERIMENTS.values() if e.role == "student")]
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
            same = name != "baseline" and not matched
            control = _agreement(agg.fidelity("baseline", key, "agreement")) if same else "—"
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
    return [
        "### Fidelity to the teacher\n",
        "Top-1 agreement and KL(teacher ‖ student) at τ = 1 (nats, mean over images), measured once on the "
        "official test split with the selected checkpoint; the Baseline against every teacher is the control. "
        "Cells: mean [95 % interval]: seeds and test images (per-image values, as for accuracy), or seeds only "
        "where a run kept no per-image values; a fraction's interval is clipped to its range.\n",
        table(
            ["Student", "Test Acc", "Against", "Agreement", "KL (teacher ‖ student)", "Baseline's agreement (control)"],
            rows,
        )
        + "\n",
    ]


def why_section(agg: Aggregate, decided: list[Answer]) -> list[str]:
    """The "Why" section (Markdown parts): the 2 × 2 and its effects, the controls, what each plan
    hypothesis can be answered by, fidelity; every Δ decided by the one engine (``decided``)."""
    return [
        "## Why: controls beyond the plan\n",
        source_line(agg) + "\n",
        "Rows beyond the research plan (registry group `why`; `run_all.py --groups plan,why`). Each Δ is the "
        "Answers table's (same estimate, interval and verdict); the detectable difference is stated, never used "
        "to change a verdict.\n",
        *_two_by_two(agg, decided),
        *_controls(agg, decided),
        *_hypotheses(agg),
        *_fidelity(agg),
    ]
