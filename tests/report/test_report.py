"""kdbias.report on hand-written summary.json fixtures with known numbers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from report_fixtures import TEST_IMAGES, attention, cka_entry, write_run

from kdbias.report import aggregate, load_runs, main, read_scalars, render_report

scipy_stats = pytest.importorskip("scipy.stats")


def _rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the table rows whose first cell is ``first_cell``."""
    out = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == first_cell:
                out.append(cells)
    return out


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    rest = text[start + len(heading) :]
    match = re.search(r"\n#{2,3} ", rest)
    return rest if match is None else rest[: match.start()]


def _answer(text: str, question: str) -> list[str]:
    """The Answers-table row (cells) whose question contains ``question``."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()]
    (row,) = [r for r in rows if len(r) == 7 and question in r[0]]
    return row


def _finding(text_or_lines, start: str) -> str:
    lines = text_or_lines if isinstance(text_or_lines, list) else text_or_lines.splitlines()
    (line,) = [line for line in lines if start in line]
    return line


def _matrix(accs: list[float], n: int = TEST_IMAGES) -> np.ndarray:
    """Per-image correctness of the fixture runs: the first acc · n images right."""
    return np.stack([np.arange(n) < round(a * n) for a in accs]).astype(float)


def _two_way(x: np.ndarray) -> tuple[float, float, float, float]:
    """Mean and half-widths (all, seeds, test images), written out: seed part t(S-1) sqrt(var_s(row
    means) / S), image part t(N-1) sqrt(var_i(column means) / N), whole = root sum of their squares."""
    S, N = x.shape
    a = np.var(x.mean(axis=1), ddof=1) / S
    b = np.var(x.mean(axis=0), ddof=1) / N
    t = scipy_stats.t.ppf
    seed, test = t(0.975, S - 1) * np.sqrt(a), t(0.975, N - 1) * np.sqrt(b)
    return x.mean(), np.sqrt(seed**2 + test**2), seed, test


def _acc_cell(accs: list[float]) -> str:
    mean, half, seeds, test = (100 * v for v in _two_way(_matrix(accs)))
    return f"{mean:.2f} ± {half:.2f} % (n={len(accs)}; half-widths: seeds {seeds:.2f}, test set {test:.2f})"


def _pp_cell(a: list[float], b: list[float]) -> str:
    """The paired Δ cell written out, image by image, in pp."""
    mean, half, seeds, test = (100 * v for v in _two_way(_matrix(a) - _matrix(b)))
    return f"{mean:+.2f} ± {half:.2f} pp (n={len(a)}; half-widths: seeds {seeds:.2f}, test set {test:.2f})"


def _short(cell: str) -> str:
    """The matrix's compact form of a full cell: ``"X unit [low, high]"`` from ``"X ± h unit (...)"``
    (a fraction clipped to [0, 100] %)."""
    m = re.match(r"([-+]?[0-9.]+) ± ([0-9.]+) (%|pp) ", cell)
    assert m, cell
    mean, half, unit = float(m.group(1)), float(m.group(2)), m.group(3)
    low, high = mean - half, mean + half
    if unit == "%":
        return f"{mean:.2f} % [{max(low, 0):.2f}, {min(high, 100):.2f}]"
    return f"{mean:+.2f} pp [{low:+.2f}, {high:+.2f}]"


def _acc_short(accs: list[float]) -> str:
    mean, half, _, _ = (100 * v for v in _two_way(_matrix(accs)))
    return f"{mean:.2f} % [{max(mean - half, 0):.2f}, {min(mean + half, 100):.2f}]"


def _pp_short(a: list[float], b: list[float]) -> str:
    mean, half, _, _ = (100 * v for v in _two_way(_matrix(a) - _matrix(b)))
    return f"{mean:+.2f} pp [{mean - half:+.2f}, {mean + half:+.2f}]"


def _once_short(acc: float, n: int = TEST_IMAGES) -> str:
    ci = scipy_stats.binomtest(round(acc * n), n).proportion_ci(0.95, method="exact")
    return f"{acc * 100:.2f} % [{ci.low * 100:.2f}, {ci.high * 100:.2f}]"


def _once(acc: float, n: int = TEST_IMAGES) -> str:
    """A teacher measured once: Clopper–Pearson from scipy's binomtest."""
    ci = scipy_stats.binomtest(round(acc * n), n).proportion_ci(0.95, method="exact")
    interval = f"95 % CI [{ci.low * 100:.2f}, {ci.high * 100:.2f}] %, Clopper–Pearson on {n} images"
    return f"{acc * 100:.2f} % (measured once, n=1; {interval})"


# ------------------------------------------------------------------ pairing, statistics


def test_paired_delta_and_cells_match_written_out_t_interval(tmp_path):
    runs = tmp_path / "runs"
    base, exp2 = [0.800, 0.812, 0.795], [0.823, 0.828, 0.821]
    for seed in range(3):
        write_run(runs, "baseline", seed=seed, val_acc=base[seed])
        write_run(runs, "exp2", seed=seed, val_acc=exp2[seed], teacher_acc=0.96)
    text = render_report(load_runs(runs))
    (row,) = _rows(text, "**EXP-2**")
    assert row[4] == _acc_short(exp2)  # the matrix: mean [95 % interval]
    assert row[5] == _pp_short(exp2, base)
    phase2 = _section(text, "### EXP-2:")  # the details: the whole interval and its two parts
    assert f"| Student Test Accuracy | {_acc_cell(exp2)} |" in phase2
    assert f"| Δ vs Baseline | {_pp_cell(exp2, base)} |" in phase2


def test_unpaired_seeds_are_not_compared(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "exp1", seed=0, val_acc=0.70)
    write_run(runs, "exp1", seed=1, val_acc=0.79)
    write_run(runs, "baseline", seed=1, val_acc=0.80)
    write_run(runs, "baseline", seed=2, val_acc=0.99)
    agg = aggregate(load_runs(runs))
    delta = agg.delta("exp1", "baseline")
    assert delta.seeds == (1,) and delta.n == 1 and delta.mean == pytest.approx(-0.01)
    text = render_report(load_runs(runs))
    cell = _rows(text, "**EXP-1**")[0][5]
    assert cell == "-1.00 pp (n=1) (seeds 1)"
    row = _answer(text, "negative transfer")
    assert row[2].startswith("-1.00 pp (one seed") and row[4].startswith("**inconclusive**: one seed")
    assert row[5].startswith("1 × 1000")


def test_separated_overlapping_and_single_verdicts(tmp_path):
    runs = tmp_path / "runs"
    for seed, (b, e1, e2) in enumerate([(0.80, 0.75, 0.81), (0.81, 0.76, 0.80), (0.79, 0.74, 0.80)]):
        write_run(runs, "baseline", seed=seed, val_acc=b)
        write_run(runs, "exp1", seed=seed, val_acc=e1)
        write_run(runs, "exp2", seed=seed, val_acc=e2)
    write_run(runs, "exp3", seed=0, val_acc=0.95)
    text = render_report(load_runs(runs))
    transfer = _answer(text, "negative transfer")
    x = _matrix([0.75, 0.76, 0.74]) - _matrix([0.80, 0.81, 0.79])
    _, half, _, _ = _two_way(x)
    assert transfer[2] == f"-5.00 pp [{-5 - half * 100:+.2f}, {-5 + half * 100:+.2f}]" and transfer[4] == "**yes**"
    disagree = int((x != 0).any(axis=0).sum())  # images where the runs differ in some seed
    assert transfer[5] == f"3 × 1000; differ on {disagree}"
    exp2_vs_1 = _answer(text, "ConvNeXt V2 teacher transfer better")
    assert exp2_vs_1[4] == "**yes**" and exp2_vs_1[5].startswith("3 × 1000")
    plan_gain = _answer(text, "over the Baseline (the plan's comparison")
    assert "**inconclusive**" in plan_gain[4] and plan_gain[5].startswith("1 × 1000")  # n = 1
    # exp2 vs baseline: differences +1, -1, +1 pp: the interval contains 0
    agg = aggregate(load_runs(runs))
    delta = agg.delta("exp2", "baseline")
    assert delta.low < 0 < delta.high


def test_newest_version_of_a_seed_counts(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "exp2", seed=0, version=0, val_acc=0.10)
    write_run(runs, "exp2", seed=0, version=1, val_acc=0.81)
    write_run(runs, "exp2", seed=1, version=2, val_acc=0.83)
    agg = aggregate(load_runs(runs))
    assert [r["version"] for r in agg.runs["exp2"]] == [1, 2]
    assert agg.acc("exp2").values == (0.81, 0.83)
    text = render_report(load_runs(runs))
    assert "`version_0` (seed 0) — older run of seed 0 (version_1 counts)" in text


# ------------------------------------------------------------------ configurations, methods


def test_other_configurations_are_never_averaged(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "exp1", seed=0, val_acc=0.70, method={"temperature": 2.0})
    write_run(runs, "exp1", seed=1, val_acc=0.72, method={"temperature": 2.0})
    write_run(runs, "exp1", seed=0, val_acc=0.99, method={"temperature": 4.0})  # newest, but one seed only
    agg = aggregate(load_runs(runs))
    assert agg.acc("exp1").values == (0.70, 0.72)
    text = render_report(load_runs(runs))
    (row,) = _rows(text, "**EXP-1**")
    assert row[2] == "Soft KL (τ=2, α=0.5)" and row[4].startswith("71.00 % [")
    assert "99.00" not in text
    (tau4,) = agg.left_out["exp1"]
    assert tau4[0]["method"]["temperature"] == 4.0
    assert "runs with another configuration are never averaged" in tau4[1]
    assert f"configuration {tau4[0]['config_signature']} (1 seed)" in text


def test_configuration_tie_goes_to_the_newest_run(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "exp1", seed=0, val_acc=0.70, method={"temperature": 2.0})
    write_run(runs, "exp1", seed=0, val_acc=0.75, method={"temperature": 4.0})
    text = render_report(load_runs(runs))
    (row,) = _rows(text, "**EXP-1**")
    assert row[2] == "Soft KL (τ=4, α=0.5)" and row[4] == "75.00 % (n=1)"


def test_runs_without_signature_are_grouped_by_method(tmp_path):
    runs = tmp_path / "runs"
    for seed, tau in ((0, 2.0), (1, 2.0), (0, 4.0)):
        run_dir = write_run(runs, "exp1", seed=seed, val_acc=0.7 + tau / 100, method={"temperature": tau})
        summary = json.loads((run_dir / "summary.json").read_text())
        del summary["config_signature"]
        (run_dir / "summary.json").write_text(json.dumps(summary))
    agg = aggregate(load_runs(runs))
    assert agg.acc("exp1").values == (0.72, 0.72) and len(agg.left_out["exp1"]) == 1


def test_method_parameters_are_read_from_the_runs(tmp_path):
    runs = tmp_path / "runs"
    write_run(
        runs,
        "exp3",
        val_acc=0.8,
        teacher_knn_acc=0.7,
        method={"lambda_cka": 1.0, "lambda_tok": 0.25, "layer_pairs": [[2, 4], [11, 11]]},
    )
    write_run(
        runs,
        "exp2",
        val_acc=0.8,
        method={"temperature": 3.0, "alpha": 0.7, "ce_weight": 0.3},
        teacher={"name": "my_convnext", "family": "ConvNeXt", "source": "x.ckpt"},
        teacher_acc=0.9,
    )
    write_run(runs, "baseline", val_acc=0.8, method={"holdout": 0}, selection="last epoch (no held-out split)")
    text = render_report(load_runs(runs))
    (exp3,) = _rows(text, "**EXP-3**")
    assert exp3[1] == "vit_small_patch14_dinov2"
    assert exp3[2] == "CKA + token (λ_cka=1, λ_tok=0.25)"  # the matrix: the loss and its weights
    (method_row,) = _rows(_section(text, "## Methods"), "EXP-3")
    assert method_row[1] == "CKA + token (λ_cka=1, λ_tok=0.25, layers 2:4,11:11, teacher 224 px)"
    assert exp3[3] == "70.00 % (no interval) (k-NN)"  # image count not recorded: no interval
    (exp2,) = _rows(text, "**EXP-2**")
    assert exp2[1:3] == ["my_convnext", "Soft KL (τ=3, α=0.7)"]
    assert exp2[3] == _once_short(0.9)  # from the teacher's per-image predictions
    (methods,) = _rows(_section(text, "## Methods"), "EXP-2")
    assert methods[2] == "0.3"  # the CE weight the run recorded
    assert "use their last epoch: Baseline" in _section(text, "## Experimental Matrix")
    assert "No held-out split (the last epoch is used, not a selected checkpoint): Baseline." in text


# ------------------------------------------------------------------ teachers, controls


def test_teacher_acc_in_matrix_equals_phase1_test_acc(tmp_path):
    runs = tmp_path / "runs"
    write_run(
        runs,
        "teacher_resnet18",
        test_acc=0.951,
        val_acc=0.9400,
        best_val_acc=0.9530,
        best_epoch=187,
        epochs_completed=200,
        train_time_s=5400.0,
    )
    for seed in (0, 1):
        write_run(runs, "exp1", seed=seed, val_acc=0.8, teacher_acc=0.951)
    write_run(runs, "teacher_convnextv2", test_acc=0.901)
    other = {"name": "convnextv2_tiny_cifar", "source": "/elsewhere/teacher_convnextv2/version_3/checkpoints/last.ckpt"}
    write_run(runs, "exp2", val_acc=0.8, teacher_acc=0.93, teacher=other)  # another checkpoint's accuracy
    text = render_report(load_runs(runs))
    phase1 = _section(text, "### ResNet-18 teacher")
    assert f'| Test Accuracy (the plan\'s "Val Accuracy") | {_once(0.951)} |' in phase1
    assert "| Held-out Best Val Accuracy | 95.30 % (n=1) |" in phase1
    assert "| Best Epoch (0-based, held-out) | 187 (n=1) of 200 epochs |" in phase1
    assert "| Training Time | 90.0 min (n=1) |" in phase1
    ci = scipy_stats.binomtest(951, 1000).proportion_ci(0.95, method="exact")
    # 951 of 1000 images: the interval reaches below the 94 % target, so not decided
    assert f"**inconclusive** (95.10 %, 95 % CI [{ci.low * 100:.2f}, {ci.high * 100:.2f}] % vs > 94 %" in phase1
    assert "95.10 % (one measurement, repeated by every student run) — equals the teacher run's test accuracy" in phase1
    assert _rows(text, "**EXP-1**")[0][3] == _once_short(0.951)  # measured once, never "± 0.00 (n=2)"
    convnext = _section(text, "### ConvNeXt V2 teacher")
    assert "**not reached**" in convnext and "**differs** from the teacher run's test accuracy" in convnext
    assert "the students' teacher checkpoint is this run's selected one" in phase1
    assert "the students used **another checkpoint** than this run's selected checkpoints/best.ckpt" in convnext
    assert "CE + CutMix" in _section(text, "## Methods")


def test_matched_control_row(tmp_path):
    runs = tmp_path / "runs"
    base, b512, exp3 = [0.80, 0.81, 0.79], [0.78, 0.775, 0.77], [0.84, 0.845, 0.835]
    for seed in range(3):
        write_run(runs, "baseline", seed=seed, val_acc=base[seed])
        write_run(runs, "baseline_b512", seed=seed, val_acc=b512[seed])
        write_run(runs, "exp3", seed=seed, val_acc=exp3[seed], teacher_knn_acc=0.7)
    text = render_report(load_runs(runs))
    vs_base, vs_control = _pp_cell(exp3, base), _pp_cell(exp3, b512)
    (row,) = _rows(text, "**EXP-3**")
    assert row[5] == f"{_short(vs_base)} †"  # the note: what differs from the Baseline
    assert row[6] == _short(vs_control)
    assert "† EXP-3 vs Baseline is the plan's comparison but differs in batch and optimiser step count" in text
    phase2 = _section(text, "### EXP-3:")
    assert f"| Δ vs Baseline (the plan's comparison; different batch and step count) | {vs_base} |" in phase2
    assert f"| Δ vs Baseline (b512) (matched control: same batch and step count) | {vs_control} |" in phase2
    assert "EXP-3: batch 512, 3 epochs; Baseline: batch 128, 3 epochs" in text
    assert "**inconclusive**" in _answer(text, "over the Baseline (the plan's")[4]  # +4 ± 3.4 contains 3
    assert _answer(text, "over its matched control")[4] == "**yes**"


def test_cka_rows_against_the_baseline_control(tmp_path):
    runs = tmp_path / "runs"
    for seed, j in enumerate((0.0, 0.01, -0.01)):
        base_cka = {"exp1": cka_entry(0.02 + j, "resnet18_cifar"), "exp3": cka_entry(0.03, "dinov2", 0.6, 0.01 + j)}
        write_run(runs, "baseline", seed=seed, val_acc=0.8, cka=base_cka, heatmap=True)
        write_run(
            runs, "exp1", seed=seed, val_acc=0.8, cka={"exp1": cka_entry(0.10 + 2 * j, "resnet18_cifar")}, heatmap=True
        )
        write_run(runs, "exp3", seed=seed, val_acc=0.8, cka={"exp3": cka_entry(0.2, "dinov2", 0.9, 0.02 + j)})
    out_dir = tmp_path / "reports" / "sub"
    text = render_report(load_runs(runs), out_dir=out_dir)
    (exp1,) = _rows(text, "EXP-1 student vs resnet18_cifar: contrast")
    diffs = np.array([0.08, 0.09, 0.07])
    half = scipy_stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    assert exp1[3] == f"+0.080 [{0.08 - half:+.3f}, {0.08 + half:+.3f}]"
    assert exp1[4] == "**yes** (exploratory, uncorrected)"
    (links,) = [line for line in text.splitlines() if line.startswith("- EXP-1 student vs resnet18_cifar: contrast:")]
    link = re.search(r"\[seed 0\]\(([^)]+)\)", links).group(1)
    assert link == "../../runs/exp1/version_0/analytics/cka_heatmaps/exp1/epoch_2.png"
    assert (out_dir / link).resolve().is_file()
    assert "; control: [seed 0](../../runs/baseline/version_0/analytics/cka_heatmaps/exp1/epoch_2.png)" in links
    (untrained,) = _rows(text, "EXP-3 vs dinov2: untrained contrast")
    assert untrained[1].startswith("0.020 [") and untrained[2].startswith("0.010 [")
    assert untrained[3] == "+0.010 (no spread)"
    (trained,) = _rows(text, "EXP-3 vs dinov2: trained pairs (mean CKA)")
    assert trained[3] == "+0.300 (no spread)"
    # no EXP-2 run (pending); the Baseline ran but measured no CKA against EXP-2's teacher
    assert _rows(text, "EXP-2 student vs EXP-2's teacher: contrast")[0][1:4] == ["*pending*", "*not measured*", "—"]
    assert "depth-matched diagonal" in text and "relative depth" in text
    assert "**yes**" in _finding(text, "EXP-1's CKA diagonal contrast vs resnet18_cifar is above its control")


def test_cka_untrained_contrast_of_control_not_available(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "baseline", val_acc=0.8, cka={"exp3": cka_entry(0.03, "dinov2")})
    write_run(runs, "exp3", val_acc=0.8, cka={"exp3": cka_entry(0.2, "dinov2", 0.9, 0.05)})
    text = render_report(load_runs(runs))
    (row,) = _rows(text, "EXP-3 vs dinov2: untrained contrast")
    assert row[2] == "not available (the control did not record it on the same cells)" and row[3] == "—"
    assert "**not measured** (the control's untrained contrast on the same cells was not recorded)" in text


# ------------------------------------------------------------------ analytics


def test_hessian_trace_interval_without_a_test_against_zero(tmp_path):
    runs = tmp_path / "runs"
    write_run(
        runs,
        "exp1",
        val_acc=0.8,
        hessian_trace=12.0,
        hessian_trace_stderr=10.0,
        hessian_trace_probes=4,
        hessian_top_eig=21.25,
        hessian_top_eig_residual=0.11,
    )
    write_run(runs, "exp2", val_acc=0.8, hessian_trace=250.0, hessian_trace_stderr=20.0, hessian_trace_probes=4)
    text = render_report(load_runs(runs))
    hessian = _section(text, "### Hessian Analysis")
    (exp1,) = _rows(hessian, "EXP-1")
    t3 = scipy_stats.t.ppf(0.975, 3)
    assert exp1[1] == f"12 ± {t3 * 10:.4g} (n=1; Hutchinson, 4 probes, ± t(0.975, 3) = {t3:.3g} × s.e.)"
    # recorded without a certificate about the top eigenvalue: no number
    assert exp1[2] == "**not converged** (n=1, not certified: the starts did not converge or agree; no value shown)"
    (exp2,) = _rows(hessian, "EXP-2")
    assert exp2[1] == f"250 ± {t3 * 20:.4g} (n=1; Hutchinson, 4 probes, ± t(0.975, 3) = {t3:.3g} × s.e.)"
    assert "significant" not in hessian and "excludes 0" not in hessian
    assert "higher = sharper" in exp1[3] and "higher = sharper" in exp2[3]
    matrix = _rows(text, "**EXP-1**")[0]
    assert matrix[9].startswith("12 ±") and matrix[8] == "*not measured*"  # Hessian trace beside the gen. gap
    assert "**inconclusive**" in _finding(text, "Hessian trace EXP-1 > EXP-2")


def test_attention_uses_the_plan_layers_and_a_paired_label(tmp_path):
    runs = tmp_path / "runs"
    for seed, j in enumerate((0.0, 0.2, -0.1)):
        base = {str(i): 100.0 for i in range(12)} | {k: 9.0 + j for k in ("3", "6", "9", "11")}
        write_run(runs, "baseline", seed=seed, val_acc=0.8, attn_dist=base)
        write_run(runs, "exp1", seed=seed, val_acc=0.8, **attention(6.0 + j))
        write_run(runs, "exp3", seed=seed, val_acc=0.8, **attention(9.0 + 2 * j))
    write_run(runs, "exp2", seed=0, val_acc=0.8, attn_dist={"0": 5.0, "1": 5.0})  # a 2-layer model
    text = render_report(load_runs(runs))
    section = _section(text, "### Mean Attention Distance")
    assert _rows(section, "Baseline")[0][5].startswith("9.03 ±")  # layers 3, 6, 9, 11 only, not 100 px
    assert _rows(section, "EXP-2")[0][1:] == ["n/a"] * 4 + ["n/a (no layers 3, 6, 9, 11)"]
    (exp1,) = _rows(section, "EXP-1")[1:]
    assert exp1[1] == "-3.00 px (n=3; no spread over seeds)" and exp1[5] == "-3.00 px (n=3; no spread over seeds)"
    assert exp1[6].startswith("shorter than baseline — plan: Δ < 0: **yes**")
    (exp3,) = _rows(section, "EXP-3")[1:]
    assert exp3[6].startswith("≈ baseline (±1 px, TOST) — plan: Δ > 0")  # an equivalence test within ±1 px
    assert _rows(text, "**EXP-1**")[0][7] == "shorter than baseline: Δ -3.00 px (no spread)"
    assert "**yes**" in _finding(text, "EXP-1 attends more locally than the Baseline")
    assert "**inconclusive**" in _finding(text, "EXP-3 attends more globally than the Baseline")


# ------------------------------------------------------------------ provenance, pending, CLI


def test_source_labels_and_pair_selection(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "baseline", val_acc=0.80)
    write_run(runs, "exp1", val_acc=0.79)
    write_run(runs, "baseline", version=5, dataset="cifar10", preset="paper", val_acc=0.86)
    text = render_report(load_runs(runs))
    smoke = "Source: digits / smoke — offline smoke data, NOT a CIFAR result."
    tables = len(re.findall(r"^\| (Metric|Experiment|Comparison|Model) \|", text, flags=re.M))
    assert text.count("\n" + smoke + "\n") >= tables >= 10
    assert "cifar10 / paper (1 run)" in text and _rows(text, "**Baseline**")[0][4] == "80.00 % (n=1)"
    paper = render_report(load_runs(runs), dataset="cifar10", preset="paper")
    assert "Source: cifar10 / paper — the plan's paper preset." in paper and "NOT a CIFAR" not in paper
    assert _rows(paper, "**Baseline**")[0][4] == "86.00 % (n=1)" and _rows(paper, "**EXP-1**")[0][4] == "*pending*"
    reduced = render_report(load_runs(runs), dataset="cifar10", preset="smoke")
    assert "Source: no completed runs" in reduced


def test_nothing_is_invented(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "baseline", val_acc=0.80)
    text = render_report(load_runs(runs))
    for name in ("**EXP-1**", "**EXP-2**", "**EXP-3**"):
        (row,) = _rows(text, name)
        assert row[1:6] == ["*pending*"] * 5 or row[1:5] == ["*pending*"] * 4, row
    assert "| Student Test Accuracy | *pending* |" in _section(text, "### EXP-1:")
    assert (
        "*pending*" in _rows(_section(text, "### ResNet-18 teacher"), 'Test Accuracy (the plan\'s "Val Accuracy")')[0]
    )


def test_full_matrix_has_no_pending_cell(full_matrix):
    text = render_report(load_runs(full_matrix))
    cells = [line for line in text.splitlines() if line.startswith("|") or re.match(r"\d+\. ", line)]
    assert cells and not [line for line in cells if "pending" in line]
    assert _rows(text, "**EXP-3**")[0][3] == "70.00 % (no interval) (k-NN)"
    assert re.search(r"± 0\.0+(?![0-9])", text) is None  # no zero-width interval anywhere


def test_read_scalars_merges_resumed_event_files(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "run"
    first = SummaryWriter(log_dir=str(run_dir), filename_suffix=".a")
    for step, value in [(0, 0.1), (1, 0.2), (2, 0.25)]:
        first.add_scalar("val/acc", value, step)
    first.close()
    second = SummaryWriter(log_dir=str(run_dir), filename_suffix=".b")  # resumed from step 2
    for step, value in [(2, 0.3), (3, 0.4)]:
        second.add_scalar("val/acc", value, step)
    second.close()
    got = read_scalars(run_dir, "val/acc")
    assert [s for s, _ in got] == [0, 1, 2, 3] and [v for _, v in got] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert read_scalars(run_dir, "train/loss") == [] and read_scalars(tmp_path / "missing", "val/acc") == []


def test_main_writes_the_file(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    write_run(runs, "baseline", val_acc=0.8)
    write_run(runs, "exp1", val_acc=0.79)
    out = tmp_path / "out" / "R.md"
    assert main([str(runs), "--out", str(out)]) == 0
    figure = out.parent / "R_comparisons.png"
    assert out.read_text() == render_report(load_runs(runs), out_dir=out.parent, runs_dir=str(runs), figure=figure)
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 0  # default --out: RESULTS.md in the current directory
    assert "| **EXP-1** |" in (tmp_path / "RESULTS.md").read_text()
    assert main(["runs", "--dataset", "cifar10", "--out", "paper.md"]) == 0
    assert "Source: no completed runs" in (tmp_path / "paper.md").read_text()


def test_report_package_layout():
    root = Path(__file__).resolve().parents[2] / "kdbias" / "report"
    for path in root.glob("*.py"):
        assert len(path.read_text().splitlines()) < 400, path
    import kdbias.report as report

    for name in ("load_runs", "read_scalars", "aggregate", "render_report", "write_report", "main"):
        assert getattr(report, name).__doc__, name
