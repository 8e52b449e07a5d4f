"""The report's "Why" section on runs folders built here, against hand computations."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from report_fixtures import first_correct, write_run

from kdbias.report import aggregate, load_runs, render_report
from kdbias.report.answers import answers
from kdbias.report.why import NOT_MEASURED, why_section

SEEDS = (0, 1, 2)
ACC = {  # per seed
    "exp1": (0.80, 0.82, 0.81),
    "exp1_cka": (0.78, 0.79, 0.80),
    "exp3_kl": (0.83, 0.84, 0.82),
    "exp3": (0.86, 0.88, 0.85),
    "baseline": (0.79, 0.80, 0.80),
    "baseline_b512": (0.78, 0.80, 0.79),
    "exp1_matched": (0.79, 0.81, 0.80),
    "exp_vit_kl": (0.82, 0.83, 0.83),
    "exp_random_teacher": (0.795, 0.805, 0.80),
    "exp2": (0.81, 0.83, 0.82),
}
TEACHER_ACC = {"exp1_matched": 0.86, "exp_vit_kl": 0.87, "exp1": 0.94, "exp2": 0.95, "exp_random_teacher": 0.1}
KL_METHOD = {"loss": "soft_kl", "temperature": 4.0, "alpha": 0.5}


def build(runs: Path) -> None:
    for name, acc in (("teacher_resnet18", 0.94), ("teacher_dinov2_probe", 0.9), ("teacher_deit", 0.87)):
        write_run(runs, name, 0, val_acc=acc, method={"loss": "ce"}, role="teacher")
    for name, values in ACC.items():
        for seed, acc in zip(SEEDS, values):
            extra = {}
            if name in TEACHER_ACC:
                source = "epoch004.ckpt" if name == "exp1_matched" else "best.ckpt"
                extra["teacher"] = {
                    "name": "t",
                    "family": "ResNet",
                    "source": f"/x/{source}",
                }
                extra["teacher_acc"] = TEACHER_ACC[name]
            if name == "exp1_cka":
                extra["method"] = {"loss": "cka", "layer_pairs": [[3, 2], [6, 4], [9, 6], [11, 7]]}
            elif name in ("exp3_kl", "exp_vit_kl", "exp1_matched", "exp_random_teacher"):
                extra["method"] = KL_METHOD
            if name == "exp1":
                extra["fidelity"] = {"teacher_resnet18": {"agreement": 0.9 + seed / 100, "kl": 0.2}}
            if name == "baseline":
                extra["fidelity"] = {
                    "teacher_resnet18": {"agreement": 0.8, "kl": 0.5},
                    "random_teacher": {"agreement": 0.1, "kl": 2.0},
                }
            write_run(runs, name, seed, val_acc=acc, **extra)


def rows(text: str, first: str) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(first):
            out.append(cells)
    return out


def why(runs: Path) -> str:
    agg = aggregate(load_runs(runs))
    return "\n".join(why_section(agg, answers(agg)))


def two_part(x: np.ndarray) -> tuple[float, float]:
    """Mean and 95 % half-width of a per-image contrast x[s, i], written out: seed part
    t(S-1) sqrt(var(row means)/S), image part t(N-1) sqrt(var(column means)/N), root sum of squares."""
    S, N = x.shape
    seed = stats.t.ppf(0.975, S - 1) * math.sqrt(x.mean(axis=1).var(ddof=1) / S)
    image = stats.t.ppf(0.975, N - 1) * math.sqrt(x.mean(axis=0).var(ddof=1) / N)
    return float(x.mean()), math.hypot(seed, image)


def per_image(name: str) -> np.ndarray:
    """The fixture's per-image correctness of ``name`` ([seeds, images]: the first acc · N images right)."""
    return np.stack([first_correct(acc) for acc in ACC[name]]).astype(float)


def test_effects_and_controls_are_computed_image_by_image_from_runs(tmp_path):
    build(tmp_path)
    text = why(tmp_path)
    assert "*pending*" not in text
    c = {name: per_image(name) for name in ("exp1", "exp1_cka", "exp3_kl", "exp3")}
    contrasts = {
        "½·EXP-1 CKA − ½·EXP-1 + ½·EXP-3 − ½·EXP-3 KL": ((c["exp1_cka"] - c["exp1"]) + (c["exp3"] - c["exp3_kl"])) / 2,
        "½·EXP-3 KL − ½·EXP-1 + ½·EXP-3 − ½·EXP-1 CKA": ((c["exp3_kl"] - c["exp1"]) + (c["exp3"] - c["exp1_cka"])) / 2,
        "EXP-3 − EXP-3 KL − EXP-1 CKA + EXP-1": c["exp3"] - c["exp3_kl"] - c["exp1_cka"] + c["exp1"],
    }
    for title, x in contrasts.items():
        (row,) = rows(text, title)
        mean, half = two_part(x)
        assert row[1] == f"{mean * 100:+.2f} pp [{(mean - half) * 100:+.2f}, {(mean + half) * 100:+.2f}]"
        assert "exploratory" in row[2] or "confirmatory" in row[2]
    (teacher,) = rows(text, "½·EXP-3 KL")
    assert "**yes**" in teacher[2]  # DINOv2 above ResNet in every seed and loss, on 20-40 images per seed
    (matched,) = rows(text, "EXP-1 matched − ViT KL")
    mean, _ = two_part(per_image("exp1_matched") - per_image("exp_vit_kl"))
    assert matched[1].startswith(f"{mean * 100:+.2f} pp [")
    # no held-out teacher accuracies in these runs: the matching is not shown, so no verdict on bias
    assert "**not matched**" in matched[2]

    def measured_once(k, n):  # one teacher checkpoint: its binomial interval, not a spread over students
        ci = stats.binomtest(k, n).proportion_ci(method="exact")
        return (
            f"{k / n * 100:.2f} % (measured once, n=1; 95 % CI [{ci.low * 100:.2f}, {ci.high * 100:.2f}] %, "
            f"Clopper–Pearson on {n} images)"
        )

    (snapshot,) = [r for r in rows(text, "EXP-1 matched") if len(r) == 3]
    assert snapshot[1:] == ["ResNet-18 snapshot `epoch004.ckpt`", measured_once(860, 1000)]
    (vit,) = [r for r in rows(text, "ViT KL") if len(r) == 3]
    assert vit[2] == measured_once(870, 1000)
    (resnet_row,) = [r for r in rows(text, "ResNet-18") if len(r) == 4]
    assert resnet_row[1] == measured_once(940, 1000)  # the teacher run, trained once: shown once
    assert rows(text, "Random teacher − Baseline")[0][1] != NOT_MEASURED
    exp1 = [r for r in rows(text, "EXP-1") if len(r) == 6 and r[2] == "ResNet-18 teacher"]
    half = stats.t.ppf(0.975, 2) * 1 / math.sqrt(3)  # no per-image files in these runs: seeds only
    assert exp1[0][3] == f"91.00 % [{91 - half:.2f}, {91 + half:.2f}] (seeds only)"
    baseline = [r for r in rows(text, "Baseline") if len(r) == 6 and r[0] == "Baseline"]
    assert [r[2] for r in baseline] == ["ResNet-18 teacher", "random ResNet-18"]
    assert exp1[0][5] == "80.00 % (no spread) (seeds only)"  # the Baseline against the same teacher
    assert "3→2, 6→4, 9→6, 11→7" in text


def test_every_seed_differing_by_the_same_image_is_inconclusive_and_twenty_percent_is_decisive(tmp_path):
    """Three seeds; EXP-3 gets one more image right than the other cells, the same image in every seed:
    the interaction's interval is wide (one image) and the verdict inconclusive. With 20 % of the images
    differing (the same ones in every seed) it is decisive."""
    n = 360
    for tag, extra in (("one", 1), ("many", 72)):
        runs = tmp_path / tag
        for name in ("exp1", "exp1_cka", "exp3_kl", "exp3", "baseline"):
            for seed in SEEDS:
                correct = np.zeros(n, dtype=bool)
                correct[:180] = True
                if name == "exp3":
                    correct[180 : 180 + extra] = True
                method = {"exp1_cka": {"loss": "cka"}, "exp3_kl": KL_METHOD}.get(name, {})
                write_run(runs, name, seed, correct=correct, val_acc=float(correct.mean()), method=method)
        text = why(runs)
        (row,) = rows(text, "EXP-3 − EXP-3 KL − EXP-1 CKA + EXP-1")
        assert ("**inconclusive**" in row[2]) == (tag == "one"), row
        assert ("**yes**" in row[2]) == (tag == "many"), row


def test_absent_runs_read_not_measured(tmp_path):
    write_run(tmp_path, "exp1_cka", 0, val_acc=0.5, method={"loss": "cka"})  # a why row ran; the other cells did not
    text = why(tmp_path)
    assert "*pending*" not in text
    (row,) = rows(text, "EXP-3 − EXP-3 KL")
    assert row[1] == NOT_MEASURED and "not measured" in row[2] and row[3] == NOT_MEASURED


def test_one_seed_states_that_a_verdict_needs_two(tmp_path):
    for name in ("exp1", "exp1_cka", "exp3_kl", "exp3"):
        method = KL_METHOD if name in ("exp1", "exp3_kl") else {"loss": "cka"}
        write_run(tmp_path, name, 0, val_acc=0.5, method=method)
    text = why(tmp_path)
    (row,) = rows(text, "½·EXP-1 CKA")
    assert row[1].startswith("+0.00 pp (one seed") and "one seed" in row[2] and "needs ≥ 2 seeds" in row[3]


def test_render_report_has_the_section(tmp_path):
    build(tmp_path)
    report = render_report(load_runs(tmp_path))
    assert "## Why: controls beyond the plan" in report
    assert "Runs of experiments outside the registry" not in report


def test_fidelity_intervals_carry_the_test_images_error(tmp_path):
    """With per-image fidelity files the agreement and KL intervals are the seed + test-image
    interval (two-way: variance of the seed means / S plus variance of the image means / N,
    each part with its own t, combined as the root sum of squares), written out here."""
    import numpy as np

    from kdbias.callbacks.fidelity import FIDELITY_FILE

    build(tmp_path)
    rng = np.random.default_rng(0)
    n = 1000
    agree = {s: rng.random(n) < 0.9 + s / 100 for s in SEEDS}
    kl = {s: rng.gamma(2.0, 0.1, n) for s in SEEDS}
    for seed in SEEDS:
        run_dir = tmp_path / "exp1" / f"version_{seed}"
        arrays = {"agreement.teacher_resnet18": agree[seed], "kl.teacher_resnet18": kl[seed]}
        np.savez(run_dir / FIDELITY_FILE, **arrays)
        summary = run_dir / "summary.json"
        data = json.loads(summary.read_text())
        data["fidelity"] = {"teacher_resnet18": {"agreement": float(agree[seed].mean()), "kl": float(kl[seed].mean())}}
        summary.write_text(json.dumps(data))

    def two_way(per_seed):
        m = np.stack([np.asarray(per_seed[s], dtype=float) for s in SEEDS])
        a = m.mean(axis=1).var(ddof=1) / m.shape[0]
        b = m.mean(axis=0).var(ddof=1) / m.shape[1]
        seed = stats.t.ppf(0.975, m.shape[0] - 1) * math.sqrt(a)
        return m.mean(), math.hypot(seed, stats.t.ppf(0.975, m.shape[1] - 1) * math.sqrt(b))

    text = why(tmp_path)
    (exp1,) = [r for r in rows(text, "EXP-1") if len(r) == 6 and r[2] == "ResNet-18 teacher"]
    mean, half = two_way(agree)
    assert exp1[3] == f"{mean * 100:.2f} % [{(mean - half) * 100:.2f}, {min(mean + half, 1) * 100:.2f}]", exp1[3]
    agreement_mean = mean
    mean, half = two_way(kl)
    assert exp1[4] == f"{mean:.3f} nats [{mean - half:.3f}, {mean + half:.3f}]", exp1[4]
    seeds_only = stats.t.ppf(0.975, 2) * stats.tstd([agree[s].mean() for s in SEEDS]) / math.sqrt(3)
    assert f"{(agreement_mean - seeds_only) * 100:.2f}" not in exp1[3]  # wider than the seeds alone


def test_an_interval_past_a_fractions_range_is_also_given_clipped():
    from kdbias.report.cells import pct
    from kdbias.report.stats import Estimate

    wide = Estimate(0.48, 2, 0.05, 0.9, (0.43, 0.53), (0, 1), 0.95)  # 48 ± 90 %: past both ends
    assert pct(wide).endswith("95 % CI clipped to the range: [0.00, 100.00] %)")
    narrow = Estimate(0.48, 2, 0.01, 0.1, (0.47, 0.49), (0, 1), 0.95)
    assert "clipped" not in pct(narrow)


def test_the_first_screen_answers_every_hypothesis_and_rows_stay_short(tmp_path):
    """The report opens with the answers: the first 40 lines hold every declared hypothesis with its
    verdict; no table row is longer than 300 characters; a group never run has no section."""
    from kdbias import registry

    build(tmp_path)
    text = render_report(load_runs(tmp_path))
    head = "\n".join(text.splitlines()[:40])
    for hypothesis in registry.HYPOTHESES:
        (line,) = [line for line in head.splitlines() if line.startswith(f"| {hypothesis.question} |")]
        assert re.search(r"\*\*(yes|no|no difference|inconclusive|not matched|not measured)\*\*", line), line
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows and max(len(row) for row in rows) <= 300, max(rows, key=len)
    plan_only = tmp_path / "plan_only"
    for name in ("baseline", "exp1"):
        for seed in SEEDS:
            write_run(plan_only, name, seed, val_acc=ACC[name][seed])
    plan_text = render_report(load_runs(plan_only))
    assert "## Why" not in plan_text and "row group(s) `why`" in plan_text
