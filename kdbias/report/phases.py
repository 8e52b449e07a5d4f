"""The experimental matrix, the methods as recorded, Phase 1 (teachers) and Phase 2 (distillation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdbias import registry
from kdbias.report.aggregate import PLAN_LAYERS, Aggregate, controls_of, label, value_at
from kdbias.report.analytics import attention_cell, gen_gap_cell, hessian_cell
from kdbias.report.cells import (
    NOT_MEASURED,
    PENDING,
    compact_cells,
    describe_method,
    duration,
    estimate,
    heldout,
    md,
    number,
    once,
    pct,
    pp,
    source_line,
    table,
)
from kdbias.report.engine import decide
from kdbias.report.stats import finite

__all__ = [
    "matrix_section",
    "methods_section",
    "phase1_section",
    "phase2_section",
    "teacher_accuracy_cell",
]

LAYERS = ", ".join(str(i) for i in PLAN_LAYERS)


def methods_section(agg: Aggregate) -> list[str]:
    rows = []
    for experiment in registry.EXPERIMENTS.values():
        name = experiment.name
        if not agg.has(name):
            rows.append([label(name)] + [PENDING] * 8)
            continue
        method = agg.method(name)
        selection = agg.newest(name).get("selection")  # type: ignore[union-attr]
        seeds = ", ".join(str(r["seed"]) for r in agg.runs[name])
        rows.append(
            [
                label(name),
                describe_method(method),
                number(method.get("ce_weight", PENDING)),
                ", ".join(agg.teacher_names(name)) or "None",
                number(method.get("global_batch_size", PENDING)),
                number(method.get("epochs", PENDING)),
                _holdout_cell(agg, name),
                selection if isinstance(selection, str) else PENDING,
                f"`{agg.signature[name]}` (seeds {seeds})",
            ]
        )
    notes = [
        "",
        "CE weight: the weight of the cross-entropy term in each method's loss (`method.ce_weight`: "
        "1 for CE and CKA students, 1 − α for soft KL). Batch: global batch size per optimiser step.",
    ]
    no_holdout = [label(n) for n in agg.runs if finite(agg.method(n).get("holdout")) == 0]
    if no_holdout:
        notes.append(f"No held-out split (the last epoch is used, not a selected checkpoint): {', '.join(no_holdout)}.")
    return [
        "## Methods (as recorded by the runs)\n",
        source_line(agg) + "\n",
        table(
            [
                "Experiment",
                "Method",
                "CE weight",
                "Teacher",
                "Batch",
                "Epochs",
                "Held-out images",
                "Checkpoint selection",
                "Configuration",
            ],
            rows,
        )
        + "\n"
        + "\n".join(notes)
        + "\n",
    ]


def _holdout_cell(agg: Aggregate, name: str) -> str:
    """The held-out images each run actually validated on (``val_images``), else the
    configured ``method.holdout``; several values are listed with their seeds."""
    counts: dict[str, list[int]] = {}
    for run in agg.runs.get(name, []):
        method = run.get("method") or {}
        measured = run.get("val_images")
        if isinstance(measured, int) and measured > 0:
            text = str(measured)
        elif finite(method.get("holdout")) == 0:
            text = "0 (no held-out split)"
        elif method.get("holdout") is not None:
            text = f"{number(method['holdout'])} (configured; evaluated count not recorded)"
        else:
            text = PENDING
        counts.setdefault(text, []).append(run["seed"])
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{text} (seeds {', '.join(map(str, seeds))})" for text, seeds in counts.items())


def _teacher_cell(agg: Aggregate, name: str) -> str:
    if not agg.has(name):
        return PENDING
    names = agg.teacher_names(name)
    return ", ".join(names) if names else "None"


def _teacher_acc_cell(agg: Aggregate, name: str) -> str:
    if not agg.has(name):
        return PENDING
    value = agg.teacher_acc(name)
    if value is None:
        return "N/A" if not agg.teacher_names(name) else NOT_MEASURED
    return once(value)


def _delta_cell(agg: Aggregate, name: str, reference: str | None) -> str:
    if reference is None or name == reference:
        return "—"
    note = " †" if controls_of(name) and agg.has(name) else ""  # the note under the table says what differs
    return pp(agg.delta(name, reference), agg.seed_set()) + note


def matrix_section(agg: Aggregate) -> list[str]:
    with compact_cells():  # the details (each interval's parts, n) are in Phase 2; the note says how
        rows = _matrix_rows(agg)
    seeds = ", ".join(str(s) for s in agg.seed_set()) or "none"
    notes = [
        "",
        "Cells: mean [95 % interval] over the seeds " + seeds + " (another set is named in the cell; (n=1): one seed, "
        "no interval). Student Acc and Δ: seeds and test images together, Δ image by image on the same test images "
        "and paired by seed (each part of the interval: Phase 2); a fraction's interval is clipped to [0, 100] %. "
        "Student Acc: official test split; checkpoints selected on a held-out split of the training set, never on "
        "the test split" + _last_epoch_note(agg) + ".",
        "Teacher Acc: one frozen teacher checkpoint measured once on the test images (never averaged over the "
        "students that reuse it) with its Clopper–Pearson 95 % interval; for soft-KL students its accuracy on the "
        "test split (`teacher_acc`); `k-NN`: weighted k-NN accuracy of a frozen headless teacher's features. "
        + _batch_note(agg),
        "Gen. Gap and Hessian Trace are two measurements, side by side: the measured generalisation gap (train − "
        "held-out accuracy, eval mode) and the Hessian trace of the training loss (sharpness).",
    ]
    return [
        "## Experimental Matrix\n",
        source_line(agg) + "\n",
        table(matrix_header(), rows) + "\n" + "\n".join(notes) + "\n",
    ]


def matrix_header() -> list[str]:
    """The columns of the experimental matrix (Δ against the study's reference student)."""
    return [
        "Experiment",
        "Teacher Architecture",
        "Distillation Type",
        "Teacher Acc",
        "Student Acc",
        f"Δ vs {label(registry.reference() or 'reference')}",
        "Δ vs matched control",
        "Inductive Bias (Attn Dist)",
        "Gen. Gap (train − held-out acc)",
        "Hessian Trace (sharpness)",
    ]


def _matrix_rows(agg: Aggregate) -> list[list[str]]:
    rows = []
    for name in registry.STUDENTS:
        controls = controls_of(name)
        full = agg.seed_set()
        if len(controls) == 1:  # the note under the table names it
            control = pp(agg.delta(name, controls[0]), full)
        else:
            control = "; ".join(f"{pp(agg.delta(name, c), full)} vs {label(c)}" for c in controls) if controls else "—"
        rows.append(
            [
                f"**{label(name)}**",
                _teacher_cell(agg, name),
                describe_method(agg.method(name), short=True) if agg.has(name) else PENDING,
                _teacher_acc_cell(agg, name),
                pct(agg.acc(name), full),
                _delta_cell(agg, name, registry.reference()),
                control,
                attention_cell(agg, name),
                gen_gap_cell(agg, name),
                hessian_cell(agg, name),
            ]
        )
    return rows


def _last_epoch_note(agg: Aggregate) -> str:
    names = [label(n) for n in agg.runs if finite(agg.method(n).get("holdout")) == 0]
    return (
        f"; runs without a held-out split (`method.holdout` = 0) use their last epoch: {', '.join(names)}"
        if names
        else ""
    )


def _batch_note(agg: Aggregate) -> str:
    notes, reference = [], registry.reference()
    for name in registry.STUDENTS:
        for control in controls_of(name):
            notes.append(
                f"† {label(name)} vs {label(reference)} is the plan's comparison but differs in batch and optimiser "
                f"step count ({_batch(agg, name)}; {_batch(agg, reference)}); {label(control)} is its matched "
                f"control ({_batch(agg, control)})."
            )
    return " ".join(notes)


def _batch(agg: Aggregate, name: str) -> str:
    method = agg.method(name)
    if not method:
        return f"{label(name)}: {PENDING}"
    epochs = method.get("epochs")
    return f"{label(name)}: batch {number(method.get('global_batch_size'))}, {number(epochs)} epoch{_s(epochs)}"


def _s(count: object) -> str:
    """``""`` for a count of one, else ``"s"`` ("1 epoch", "2 epochs")."""
    return "" if count == 1 else "s"


def _target_cell(stat: Any, target: float) -> str:
    """A teacher trained once against the plan's target: decided by its Clopper–Pearson
    interval on the test images (reached / not reached / inconclusive)."""
    if stat is None:
        return PENDING
    if stat.low is None:
        side = "reached" if stat.value > target else "not reached"
        point = f"{stat.value * 100:.2f} % vs > {target * 100:g} %"
        return f"{side} by the point value ({point}; no interval: image count not recorded)"
    if stat.low > target:
        word = "reached"
    elif stat.high <= target:
        word = "not reached"
    else:
        word = "inconclusive"
    return (
        f"**{word}** ({stat.value * 100:.2f} %, 95 % CI [{stat.low * 100:.2f}, {stat.high * 100:.2f}] % "
        f"vs > {target * 100:g} %; measured once on {stat.images} test images)"
    )


def teacher_accuracy_cell(agg: Aggregate, name: str) -> str:
    """The test accuracy of the teacher experiment ``name`` as Phase 1 writes it (and the
    notebook prints it): one run, measured once with its exact interval; several runs, over them."""
    several = agg.acc(name) if len(agg.runs.get(name, [])) > 1 else None
    return pct(several) if several is not None else once(agg.once(name))


def phase1_section(agg: Aggregate) -> list[str]:
    parts = ["## Phase 1: Teacher Qualification\n"]
    for name in registry.TEACHERS:
        target = registry.get(name).target
        acc = agg.once(name)
        several = agg.acc(name) if len(agg.runs.get(name, [])) > 1 else None
        epochs, best = agg.stat(name, "epochs_completed"), agg.stat(name, "best_epoch")
        best_cell = estimate(best, digits=0 if best is None or best.n == 1 else 1)
        if best is not None and epochs is not None:
            best_cell += f" of {epochs.mean:.0f} epoch{_s(round(epochs.mean))}"
        run = agg.newest(name)
        selection = run.get("selection") if run else None
        time = agg.stat(name, "train_time_s")
        rows = [
            ['Test Accuracy (the plan\'s "Val Accuracy")', teacher_accuracy_cell(agg, name)],
            ["Held-out Best Val Accuracy", heldout(agg.stat(name, "best_val_acc"))],
            ["Best Epoch (0-based, held-out)", best_cell],
            ["Checkpoint selection", selection if isinstance(selection, str) else PENDING],
            ["Training Time", PENDING if time is None else duration(time.mean) + f" (n={time.n})"],
        ]
        if target is not None:
            rows.append(
                [
                    f"Target > {target * 100:g} %",
                    _target_cell(acc, target)
                    if several is None
                    else f"{decide(several, '>', target).verdict} (n={several.n} teacher runs, seed interval)",
                ]
            )
        for student in (e.name for e in registry.EXPERIMENTS.values() if e.teacher == name):
            recorded = agg.teacher_acc(student)
            cell = _recorded(recorded, acc) + _source_note(agg, student, name)
            rows.append([f"Recorded by the {label(student)} runs (`teacher_acc`)", cell])
        parts += [
            f"### {label(name)}\n",
            registry.EXPERIMENTS[name].description + "\n",
            source_line(agg) + "\n",
            table(["Metric", "Value"], rows) + "\n",
        ]
    return parts


def _source_note(agg: Aggregate, student: str, teacher: str) -> str:
    """Whether the students' ``teacher.source`` is the teacher run's selected checkpoint
    (compared on ``<experiment>/version_<n>/checkpoints/<file>``, so a moved runs folder matches)."""
    run = agg.newest(teacher)
    selected = run.get("selected_checkpoint") if run else None
    sources = sorted(
        {s for s in (value_at(r, "teacher.source") for r in agg.runs.get(student, [])) if isinstance(s, str)}
    )
    if run is None or not isinstance(selected, str) or not sources:
        return ""
    expected = (Path(run["run_dir"]) / selected).parts[-4:]
    if all(Path(source).parts[-4:] == expected for source in sources):
        return "; the students' teacher checkpoint is this run's selected one"
    used = ", ".join(md(s) for s in sources)
    return f"; the students used **another checkpoint** than this run's selected {md(selected)}: {used}"


def _recorded(recorded: Any, acc: Any) -> str:
    if recorded is None:
        return PENDING
    cell = f"{recorded.value * 100:.2f} % (one measurement, repeated by every student run)"
    if len(recorded.values) > 1:
        cell = "differing values " + ", ".join(f"{v * 100:.2f} %" for v in recorded.values)
    if acc is None:
        return cell + " (no teacher run to compare with)"
    same = max(abs(v - acc.value) for v in recorded.values) <= 1e-6
    return cell + (
        " — equals the teacher run's test accuracy (same checkpoint, same split)"
        if same
        else " — **differs** from the teacher run's test accuracy: the students used another checkpoint or split"
    )


def phase2_section(agg: Aggregate) -> list[str]:
    parts, reference = ["## Phase 2: Distillation Results\n"], registry.reference()
    for name in registry.STUDENTS:
        method = agg.method(name)
        full = agg.seed_set()
        rows = [
            ["Method", describe_method(method) if agg.has(name) else PENDING],
            ["CE weight", number(method.get("ce_weight", PENDING))],
            ["Student Test Accuracy", pct(agg.acc(name), full)],
            ["Held-out Best Val Accuracy", heldout(agg.stat(name, "best_val_acc"), agg.seed_set())],
        ]
        if reference is not None and name != reference:
            note = " (the plan's comparison; different batch and step count)" if controls_of(name) else ""
            rows.append([f"Δ vs {label(reference)}{note}", pp(agg.delta(name, reference), full)])
        rows += [
            [f"Δ vs {label(c)} (matched control: same batch and step count)", pp(agg.delta(name, c), full)]
            for c in controls_of(name)
        ]
        rows += [[f"Δ vs {label(ref)}", pp(agg.delta(name, ref), full)] for ref in registry.get(name).compared_with]
        rows += [
            [f"Mean Attention Distance (layers {LAYERS})", attention_cell(agg, name)],
            ["Hessian Trace (sharpness)", hessian_cell(agg, name)],
            ["Generalisation Gap (train − held-out val acc)", gen_gap_cell(agg, name)],
        ]
        parts += [
            f"### {registry.EXPERIMENTS[name].description}\n",
            source_line(agg) + "\n",
            table(["Metric", "Value"], rows) + "\n",
        ]
    return parts
