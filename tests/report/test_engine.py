"""The comparison engine against formulas written out here (SciPy's t, a sequential Holm procedure)."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as scipy_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_fixtures import write_run

from kdbias.report import aggregate, load_runs
from kdbias.report.answers import answers, matched_teachers
from kdbias.report.engine import decide, holm, one_sided_p, tost
from kdbias.report.stats import Estimate, contrast_estimate, half_width_at, p_value, summarize


def sequential_holm_rejects(p: list[float], alpha: float) -> list[bool]:
    """Holm's procedure as published: walk the sorted p-values, reject while p_(k) <= alpha / (m - k + 1)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    rejected = [False] * m
    for k, i in enumerate(order):
        if p[i] <= alpha / (m - k):
            rejected[i] = True
        else:
            break
    return rejected


@pytest.mark.parametrize("seed", range(5))
def test_holm_adjusted_p_is_the_smallest_level_at_which_the_sequential_procedure_rejects(seed):
    rng = np.random.default_rng(seed)
    p = list(rng.uniform(0, 0.08, size=6) ** 2)
    adjusted = holm(p)
    for i, adj in enumerate(adjusted):
        assert sequential_holm_rejects(p, adj * (1 + 1e-9))[i]
        assert not sequential_holm_rejects(p, adj * (1 - 1e-6))[i]
    # invariants: never below the raw p, never below Benjamini–Hochberg's adjustment, monotone in the raw order
    bh = scipy_stats.false_discovery_control(p, method="bh")
    assert all(a >= r - 1e-15 and a >= b - 1e-12 for a, r, b in zip(adjusted, p, bh))
    order = np.argsort(p)
    assert np.all(np.diff(np.asarray(adjusted)[order]) >= -1e-15)


def test_holm_counts_a_missing_p_value_in_the_family():
    assert holm([0.01, None]) == [pytest.approx(0.02), None]
    assert holm([0.01]) == [pytest.approx(0.01)]
    assert holm([0.04, 0.03, 0.5]) == [
        pytest.approx(0.09),
        pytest.approx(0.09),
        pytest.approx(0.5),
    ]  # monotone: 2 x 0.04 < 3 x 0.03


def test_p_value_of_a_seed_only_estimate_is_the_one_sample_t_test():
    values = [0.012, 0.020, 0.005, 0.017]
    est = summarize(values)
    assert p_value(est, 0.0) == pytest.approx(scipy_stats.ttest_1samp(values, 0.0).pvalue, rel=1e-7)
    assert p_value(est, 0.01) == pytest.approx(scipy_stats.ttest_1samp(values, 0.01).pvalue, rel=1e-7)


def test_p_value_inverts_the_two_part_interval():
    rng = np.random.default_rng(3)
    a = {s: rng.random(400) < 0.82 for s in range(3)}
    b = {s: rng.random(400) < 0.78 for s in range(3)}
    est = contrast_estimate({"a": a, "b": b}, {"a": 1.0, "b": -1.0})
    for null in (0.0, 0.01, -0.02):
        p = p_value(est, null)
        assert half_width_at(est, 1.0 - p) == pytest.approx(abs(est.mean - null), rel=1e-8)
    assert (p_value(est, 0.0) < 0.05) == (not est.low <= 0.0 <= est.high)


def test_tost_is_the_larger_of_two_one_sided_t_tests_written_out():
    values = [0.001, -0.002, 0.0005, 0.0015, -0.001]
    est = summarize(values)
    se = np.std(values, ddof=1) / math.sqrt(5)
    mean, margin = np.mean(values), 0.01
    p_low = scipy_stats.t.sf((mean + margin) / se, 4)  # H0: Δ <= -margin
    p_high = scipy_stats.t.cdf((mean - margin) / se, 4)  # H0: Δ >= +margin
    assert tost(est, margin) == pytest.approx(max(p_low, p_high), rel=1e-6)
    assert one_sided_p(est, -margin, greater=True) == pytest.approx(p_low, rel=1e-6)
    assert decide(est, ">", margin=margin).verdict == "no difference"
    assert decide(est, ">", margin=0.0001).verdict == "inconclusive"  # not shown equivalent: never "no difference"
    with pytest.raises(ValueError, match="margin"):
        tost(est, 0.0)


def test_decide_words_and_the_adjusted_level():
    up = summarize([0.03, 0.031, 0.029, 0.0305])
    assert decide(up, ">").verdict == "yes" and decide(up, "<").verdict == "no"
    assert decide(up, ">", p_adjusted=0.2).verdict == "inconclusive"  # Holm can take a verdict away
    assert decide(None).verdict == "not measured"
    assert decide(summarize([0.5])).verdict == "inconclusive"
    seeds_only = summarize([0.1, 0.11, 0.12])  # an accuracy Δ without per-image data never decides
    assert decide(seeds_only, accuracy=True).verdict == "inconclusive"
    with pytest.raises(ValueError):
        decide(up, "!=")


def test_no_interval_is_narrower_than_its_seed_part_and_a_boundary_keeps_its_width():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = {s: rng.random(200) < rng.uniform(0.6, 0.9) for s in range(2)}
        b = {s: rng.random(200) < 0.75 for s in range(2)}
        est = contrast_estimate({"a": a, "b": b}, {"a": 1.0, "b": -1.0})
        assert est.half_width >= est.seed_half and est.half_width >= est.test_half


def _heldout_runs(tmp_path: Path, acc_a: float, acc_b: float, images: int) -> Path:
    for name, acc in (("exp1_matched", acc_a), ("exp_vit_kl", acc_b)):
        for seed in range(2):
            write_run(
                tmp_path, name, seed, val_acc=0.8 + seed / 100, val_images=images,
                method={"loss": "soft_kl", "temperature": 4.0, "alpha": 0.5},
                scalars={"val/teacher_acc": [(0, acc)]},
            )  # fmt: skip
    return tmp_path


def test_a_matched_control_whose_teachers_are_5_pp_apart_reads_not_matched(tmp_path):
    agg = aggregate(load_runs(_heldout_runs(tmp_path, 0.90, 0.95, 2000)))
    est, decision = matched_teachers(agg, ("exp1_matched", "exp_vit_kl"))
    assert est.mean == pytest.approx(-0.05) and decision.verdict == "not matched"
    (bias,) = [a for a in answers(agg) if a.hypothesis.key == "bias_at_matched_accuracy"]
    assert bias.decision.verdict == "not matched"


def test_teachers_within_the_margin_on_many_images_are_matched(tmp_path):
    agg = aggregate(load_runs(_heldout_runs(tmp_path, 0.900, 0.901, 200_000)))
    est, decision = matched_teachers(agg, ("exp1_matched", "exp_vit_kl"))
    se = math.sqrt(0.9 * 0.1 / 200_000 + 0.901 * 0.099 / 200_000)
    p = max(scipy_stats.norm.sf((est.mean + 0.01) / se), scipy_stats.norm.cdf((est.mean - 0.01) / se))
    assert decision.verdict == "no difference" and decision.p_equivalence == pytest.approx(p, rel=1e-3)


def test_confirmatory_p_values_are_holm_adjusted_together(tmp_path):
    n = 400
    for name in ("baseline", "exp1", "exp2", "exp3", "baseline_b512"):
        for seed in range(3):
            correct = np.zeros(n, dtype=bool)
            correct[: {"baseline": 300, "exp1": 290, "exp2": 300, "exp3": 330, "baseline_b512": 295}[name] + seed] = (
                True
            )
            write_run(tmp_path, name, seed, correct=correct)
    decided = answers(aggregate(load_runs(tmp_path)))
    confirmatory = [a for a in decided if a.family == "confirmatory"]
    assert [a.hypothesis.key for a in confirmatory] == ["exp1_negative", "exp2_over_exp1", "exp3_gain"]
    raw = [a.decision.p for a in confirmatory]
    assert [a.decision.p_adjusted for a in confirmatory] == pytest.approx(holm(raw))
    assert all(a.family_size == 3 for a in confirmatory)
    assert all(a.decision.p_adjusted is None for a in decided if a.family == "exploratory")
    assert not any(a.hypothesis.group == "why" for a in decided)  # the why rows never ran: not in the family


def test_estimate_without_parts_has_no_p_value():
    assert p_value(Estimate(0.1, 3, None, None, ())) is None


def test_the_report_draws_its_forest_plot_beside_it_and_links_it(tmp_path):
    from kdbias.report import write_report

    n = 360
    for name in ("baseline", "exp1"):
        for seed in range(2):
            correct = np.zeros(n, dtype=bool)
            correct[: (200 if name == "baseline" else 150) + seed] = True
            write_run(tmp_path / "runs", name, seed, correct=correct)
    out = write_report(tmp_path / "runs", tmp_path / "out" / "RESULTS.md")
    figure = tmp_path / "out" / "comparisons.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Every declared comparison: Δ with its 95 % interval](comparisons.png)" in out.read_text()
    other = write_report(tmp_path / "runs", tmp_path / "out" / "smoke.md")  # another report: its own figure
    assert (tmp_path / "out" / "smoke_comparisons.png").is_file() and "(smoke_comparisons.png)" in other.read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "RESULTS.md", "comparisons.png", "smoke.md", "smoke_comparisons.png"
    ]  # fmt: skip


def test_every_batch_epoch_and_layer_a_sentence_names_comes_from_the_runs(tmp_path):
    """Runs with unusual settings (batch 96 / 40, 1 and 7 epochs, layer pairs 2→4 and 11→11): every
    sentence that names a batch, an epoch count or a layer pair quotes those values, never a preset's."""
    from kdbias.report import render_report

    kl = {"loss": "soft_kl", "temperature": 4.0, "alpha": 0.5, "global_batch_size": 96, "epochs": 1}
    cka = {"loss": "cka", "global_batch_size": 40, "epochs": 7, "layer_pairs": [[2, 4], [11, 11]]}
    runs = tmp_path / "runs"
    for seed in range(2):
        write_run(runs, "baseline", seed, val_acc=0.8, method={"global_batch_size": 96, "epochs": 1})
        write_run(runs, "baseline_b512", seed, val_acc=0.8, method={"global_batch_size": 40, "epochs": 7})
        write_run(runs, "exp1", seed, val_acc=0.8, method=kl)
        write_run(runs, "exp3", seed, val_acc=0.8, method=cka)
        write_run(runs, "exp3_kl", seed, val_acc=0.8, method=kl)
        write_run(runs, "exp1_cka", seed, val_acc=0.8, method=cka)
    text = render_report(load_runs(runs))
    assert "(EXP-3: batch 40, 7 epochs; Baseline: batch 96, 1 epoch)" in text
    assert "Baseline (b512): batch 40, 7 epochs" in text
    assert "the CKA cells train at EXP-3's batch (40) and the KL cells at EXP-1's (96)" in text
    assert "EXP-1 CKA: 2→4, 11→11; EXP-3: 2→4, 11→11" in text
    assert "1 epochs" not in text
    assert not re.search(r"batch \(?512|\(512\)", text.split("## How to read")[0])  # no preset's batch quoted


def test_at_most_claims_are_decided_like_less_than():
    down = summarize([-0.05, -0.06, -0.04])  # Δ clearly below 0: its interval excludes 0
    assert decide(down, "<=").verdict == decide(down, "<").verdict == "yes"
    assert decide(down, ">=").verdict == "no"
    assert decide(down, "<=", -0.2).verdict == "no"  # the whole interval lies above -0.2
