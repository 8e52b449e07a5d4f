"""kdbias.report on hand-written summary.json fixtures with known numbers."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from report_fixtures import attention, write_run

from kdbias.analytics import grid_distances, mean_attention_distance
from kdbias.report import (
    aggregate,
    attention_label,
    findings,
    load_runs,
    main,
    read_scalars,
    render_report,
    summarize,
    uniform_attention_distance,
)


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
    rest = text[start + len(heading):]
    match = re.search(r"\n#{2,3} ", rest)
    return rest if match is None else rest[: match.start()]


@pytest.fixture
def partial_runs(tmp_path: Path) -> Path:
    """baseline 80 %, exp1 78.8 %, exp2 two seeds (81 %, 83 %), no exp3, no teachers.

    exp1 has 6 px everywhere (Short), exp2 10 px (Medium); baseline is a 4-layer model.
    exp2 seed 0 also has an older run (version 0) that must be ignored.
    """
    runs = tmp_path / "runs"
    write_run(runs, "baseline", val_acc=0.80, attn_dist={str(i): 9.0 for i in range(4)}, hessian_trace=80.0)
    write_run(runs, "exp1", val_acc=0.788, teacher_acc=0.95, hessian_trace=100.0, hessian_top_eig=12.5,
              cka_diag_alignment=0.3, heatmap=True, **attention(6.0))
    write_run(runs, "exp2", seed=0, version=0, val_acc=0.10, **attention(1.0))  # superseded
    write_run(runs, "exp2", seed=0, version=1, val_acc=0.81, hessian_trace=50.0, **attention(10.0))
    write_run(runs, "exp2", seed=1, version=2, val_acc=0.83, hessian_trace=70.0, **attention(10.0))
    write_run(runs, "exp3", complete=False)  # interrupted: no summary
    return runs


# ------------------------------------------------------------------ attention rule


def test_uniform_distance_matches_analytics_grid():
    assert uniform_attention_distance(8, 4) == pytest.approx(16.5459, abs=1e-4)
    for grid, patch in ((8, 4), (4, 8), (16, 2)):
        assert uniform_attention_distance(grid, patch) == pytest.approx(
            grid_distances(grid, float(patch)).double().mean().item(), rel=1e-6)


def test_uniform_distance_is_mean_attention_distance_of_uniform_rows():
    grid, tokens = 8, 65
    attn = torch.zeros(1, 2, tokens, tokens)
    attn[:, :, :, 1:] = 1.0 / 64  # uniform over the patch tokens, nothing on CLS
    value = mean_attention_distance(attn, patch_size=4, num_prefix_tokens=1)
    assert value.tolist() == pytest.approx([uniform_attention_distance(grid, 4)] * 2, rel=1e-5)


@pytest.mark.parametrize("ratio, label", [(0.0, "Short"), (0.499, "Short"), (0.5, "Medium"),
                                          (0.7499, "Medium"), (0.75, "Long"), (1.3, "Long"), (None, None)])
def test_attention_label_thresholds(ratio, label):
    assert attention_label(ratio) == label


def test_attention_label_in_report(partial_runs):
    text = render_report(load_runs(partial_runs))
    u = uniform_attention_distance(8, 4)
    assert 6.0 / u < 0.5 <= 10.0 / u < 0.75 <= 13.0 / u
    (exp1,) = _rows(text, "**EXP-1**")
    (exp2,) = _rows(text, "**EXP-2**")
    assert exp1[6].startswith("Short (6.00 px") and f"r = {6.0 / u:.2f}" in exp1[6]
    assert exp2[6].startswith("Medium (10.00 ± 0.00 px (n=2); r = 0.60")
    assert "U = 16.5459 px for the 8x8 grid of 4-px patches" in text


# ------------------------------------------------------------------ loading, statistics


def test_load_runs_reads_completed_runs_only(partial_runs):
    runs = load_runs(partial_runs)
    assert sorted((r["experiment"], r["seed"], r["version"]) for r in runs) == [
        ("baseline", 0, 0), ("exp1", 0, 0), ("exp2", 0, 0), ("exp2", 0, 1), ("exp2", 1, 2)]
    assert all(Path(r["run_dir"]).is_dir() for r in runs)
    assert {r["model"] for r in runs} == {"deit_tiny_p4"}  # from hparams.yaml


def test_summarize_mean_and_sample_std():
    stat = summarize([0.81, 0.83, None, float("nan")])
    assert stat.n == 2 and stat.mean == pytest.approx(0.82)
    assert stat.std == pytest.approx(np.std([0.81, 0.83], ddof=1))
    assert summarize([0.5]).std is None and summarize([None]) is None
    assert summarize([0.81, 0.83]).format(scale=100, unit=" %") == "82.00 ± 1.41 % (n=2)"
    assert summarize([0.788]).format(scale=100, unit=" %") == "78.80 %"


def test_aggregate_keeps_latest_run_per_seed(partial_runs):
    agg = aggregate(load_runs(partial_runs))
    assert [r["version"] for r in agg.runs["exp2"]] == [1, 2]
    assert agg.acc("exp2").values == (0.81, 0.83)
    assert agg.delta_pp("exp1", "baseline") == pytest.approx(-1.2)
    assert agg.delta_pp("exp2", "exp1") == pytest.approx(3.2)
    assert agg.delta_pp("exp3", "baseline") is None


def test_delta_and_two_seed_cells(partial_runs):
    text = render_report(load_runs(partial_runs))
    std = statistics.stdev([81.0, 83.0])
    (exp2,) = _rows(text, "**EXP-2**")
    assert exp2[4] == f"82.00 ± {std:.2f} % (n=2)"
    assert exp2[5] == "+2.00 pp"
    (exp1,) = _rows(text, "**EXP-1**")
    assert exp1[3] == "95.00 %" and exp1[4] == "78.80 %" and exp1[5] == "-1.20 pp"
    exp2_table = _section(text, "### EXP-2: DeiT + ConvNeXt V2")
    assert "| Δ vs Baseline | +2.00 pp |" in exp2_table
    assert "| Δ vs EXP-1 | +3.20 pp |" in exp2_table
    assert f"| Hessian Trace | 60 ± {statistics.stdev([50.0, 70.0]):.4g} (n=2) |" in exp2_table


def test_missing_runs_are_pending_never_invented(partial_runs):
    text = render_report(load_runs(partial_runs))
    (exp3,) = _rows(text, "**EXP-3**")
    assert exp3[3:] == ["*pending*"] * 5
    phase1 = _section(text, "### ResNet-18 (Classic CNN)")
    assert "| Final Val Accuracy | *pending* |" in phase1 and "| Target > 94 % met | *pending* |" in phase1
    exp3_table = _section(text, "### EXP-3: DeiT + DINOv2")
    assert "| Δ vs EXP-2 | *pending* |" in exp3_table
    empty = render_report([])
    assert "Source: no completed runs" in empty
    for line in empty.splitlines():
        if line.startswith("| **"):  # matrix rows: no number anywhere
            assert not re.search(r"\d+\.\d+", line), line


def test_attention_layers_and_na_for_smaller_models(partial_runs):
    text = render_report(load_runs(partial_runs))
    assert _rows(text, "Baseline DeiT")[-1] == ["Baseline DeiT", "9.00 px", "n/a", "n/a", "n/a"]
    assert _rows(text, "EXP-1 Student")[-1] == ["EXP-1 Student", "6.00 px", "6.00 px", "6.00 px", "6.00 px"]
    assert _rows(text, "EXP-3 Student")[-1] == ["EXP-3 Student"] + ["*pending*"] * 4


def test_hessian_and_cka_tables(partial_runs, tmp_path):
    out_dir = tmp_path / "reports" / "sub"
    text = render_report(load_runs(partial_runs), out_dir=out_dir)
    hessian = _section(text, "### Hessian Analysis")
    assert "| EXP-1 Student | 100 | 12.5 | Expected: High (sharp) |" in hessian
    assert "| EXP-3 Student | *pending* | *pending* |" in hessian
    (row,) = _rows(text, "EXP-1 Student vs ResNet-18")
    assert row[1] == "0.300"
    href = re.fullmatch(r"\[seed 0\]\((.+)\)", row[3]).group(1)
    assert href == "../../runs/exp1/version_0/analytics/cka_heatmaps/epoch_2.png"
    assert (out_dir / href).resolve().is_file()
    assert _rows(text, "EXP-2 Student vs ConvNeXt V2")[0][3] == "*pending*"


# ------------------------------------------------------------------ findings


def test_findings_yes_no_and_pending(partial_runs):
    lines = findings(aggregate(load_runs(partial_runs)))
    assert lines[0] == ("Accuracy ranking (mean final val acc): EXP-2 (82.00 %) > Baseline (80.00 %) > "
                        "EXP-1 (78.80 %); pending: EXP-3")
    assert "EXP-1 Δ vs baseline < 0 (negative transfer): yes (-1.20 pp)" in lines
    assert "EXP-2 > EXP-1: yes (+3.20 pp)" in lines
    assert "EXP-3 Δ vs baseline >= +3 pp: pending" in lines
    assert "EXP-3 > EXP-1 and EXP-3 > EXP-2 (structural beats soft-label KD): pending" in lines
    assert "Mean attention distance EXP-1 < EXP-2 < EXP-3: pending (missing: EXP-3)" in lines
    assert "Hessian trace EXP-1 > EXP-2 > EXP-3: pending (missing: EXP-3)" in lines
    assert "CKA diagonal alignment EXP-1 < EXP-2 < EXP-3: pending (missing: EXP-2, EXP-3)" in lines


def test_findings_with_every_input(partial_runs):
    write_run(partial_runs, "exp3", version=1, val_acc=0.812, hessian_trace=20.0, cka_diag_alignment=0.9,
              **attention(13.0))
    write_run(partial_runs, "exp2", seed=1, version=3, val_acc=0.83, hessian_trace=70.0, cka_diag_alignment=0.5,
              **attention(10.0))
    lines = findings(aggregate(load_runs(partial_runs)))
    assert "EXP-1 Δ vs baseline < 0 (negative transfer): yes (-1.20 pp)" in lines
    assert "EXP-3 Δ vs baseline >= +3 pp: no (+1.20 pp)" in lines
    assert "EXP-3 > EXP-1 and EXP-3 > EXP-2 (structural beats soft-label KD): no (+2.40 pp, -0.80 pp)" in lines
    assert ("Mean attention distance EXP-1 < EXP-2 < EXP-3: yes (EXP-1 6.00 px, EXP-2 10.00 px, EXP-3 13.00 px)"
            in lines)
    assert "Attention labels EXP-1 Short, EXP-2 Medium, EXP-3 Long: yes (EXP-1 Short, EXP-2 Medium, EXP-3 Long)" in lines
    assert "Hessian trace EXP-1 > EXP-2 > EXP-3: yes (EXP-1 100, EXP-2 60, EXP-3 20)" in lines
    assert "CKA diagonal alignment EXP-1 < EXP-2 < EXP-3: yes (EXP-1 0.300, EXP-2 0.500, EXP-3 0.900)" in lines


def test_findings_orderings_can_fail(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "baseline", val_acc=0.80)
    write_run(runs, "exp1", val_acc=0.81, hessian_trace=10.0, **attention(12.0))
    write_run(runs, "exp2", val_acc=0.805, hessian_trace=20.0, **attention(10.0))
    write_run(runs, "exp3", val_acc=0.84, hessian_trace=5.0, **attention(13.0))
    lines = findings(aggregate(load_runs(runs)))
    assert "EXP-1 Δ vs baseline < 0 (negative transfer): no (+1.00 pp)" in lines
    assert "EXP-2 > EXP-1: no (-0.50 pp)" in lines
    assert "EXP-3 Δ vs baseline >= +3 pp: yes (+4.00 pp)" in lines
    assert any(line.startswith("Mean attention distance EXP-1 < EXP-2 < EXP-3: no (") for line in lines)
    assert any(line.startswith("Hessian trace EXP-1 > EXP-2 > EXP-3: no (") for line in lines)
    assert "Attention labels EXP-1 Short, EXP-2 Medium, EXP-3 Long: no (EXP-1 Medium, EXP-2 Medium, EXP-3 Long)" in lines


# ------------------------------------------------------------------ dataset / preset


def test_source_labels_and_pair_selection(partial_runs):
    write_run(partial_runs, "baseline", version=5, dataset="cifar10", preset="paper", val_acc=0.86)
    runs = load_runs(partial_runs)
    text = render_report(runs)
    smoke = "Source: digits / smoke — offline smoke data, NOT a CIFAR result"
    tables = text.count("| Metric | Value |") + text.count("| Experiment |") + text.count("| Comparison |") \
        + text.count("| Model |")
    assert text.count("\n" + smoke + "\n") >= tables
    assert "Ignored (other dataset / preset pairs" in text and "cifar10 / paper (1 completed run)" in text
    (baseline,) = _rows(text, "**Baseline**")
    assert baseline[4] == "80.00 %"

    paper = render_report(runs, dataset="cifar10", preset="paper")
    assert "Source: cifar10 / paper — the plan's paper preset" in paper and "NOT a CIFAR" not in paper
    (baseline,) = _rows(paper, "**Baseline**")
    assert baseline[4] == "86.00 %"
    assert _rows(paper, "**EXP-1**")[0][4] == "*pending*"
    assert "digits / smoke (5 completed runs)" in paper


def test_pair_with_most_experiments_wins(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "baseline", dataset="cifar10", preset="paper", val_acc=0.86)
    write_run(runs, "baseline", dataset="digits", preset="smoke", val_acc=0.5)
    write_run(runs, "exp1", dataset="digits", preset="smoke", val_acc=0.6)
    assert aggregate(load_runs(runs)).dataset == "digits"
    write_run(runs, "exp1", dataset="cifar10", preset="paper", val_acc=0.85)
    assert (aggregate(load_runs(runs)).dataset, aggregate(load_runs(runs)).preset) == ("cifar10", "paper")
    write_run(runs, "exp2", dataset="cifar10", preset="smoke", val_acc=0.3)
    agg = aggregate(load_runs(runs), preset="smoke", dataset="cifar10")
    assert agg.acc("exp2").mean == 0.3 and not agg.has("baseline")
    text = render_report(load_runs(runs), dataset="cifar10", preset="smoke")
    assert "Source: cifar10 / smoke — reduced 'smoke' preset, NOT a paper-preset result" in text


def test_teacher_phase1(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "teacher_resnet18", val_acc=0.9512, best_val_acc=0.9530, best_epoch=187, epochs_completed=200,
              train_time_s=5400.0)
    write_run(runs, "teacher_convnextv2", val_acc=0.9411, best_epoch=90, epochs_completed=100, train_time_s=90.0)
    text = render_report(load_runs(runs))
    resnet = _section(text, "### ResNet-18 (Classic CNN)")
    assert "| Final Val Accuracy | 95.12 % |" in resnet
    assert "| Best Val Accuracy | 95.30 % |" in resnet
    assert "| Best Epoch (0-based) | 187 of 200 epochs |" in resnet
    assert "| Training Time | 90.0 min |" in resnet
    assert "| Target > 94 % met | yes (95.12 % vs > 94 %) |" in resnet
    convnext = _section(text, "### ConvNeXt V2-Tiny")
    assert "| Target > 95 % met | no (94.11 % vs > 95 %) |" in convnext
    assert "| Training Time | 90.0 s |" in convnext
    # exp1 without its own teacher_acc falls back to the teacher run's accuracy
    write_run(runs, "exp1", val_acc=0.8)
    assert _rows(render_report(load_runs(runs)), "**EXP-1**")[0][3] == "95.12 %"


def test_full_matrix_has_no_pending_cell(full_matrix):
    text = render_report(load_runs(full_matrix))
    cells = [line for line in text.splitlines() if line.startswith("|") or re.match(r"\d+\. ", line)]
    assert cells and not [line for line in cells if "pending" in line]
    (exp3,) = _rows(text, "**EXP-3**")
    assert exp3[3] == "k-NN 70.00 ± 0.00 % (n=2)"


# ------------------------------------------------------------------ TensorBoard, CLI


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
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2
    got = read_scalars(run_dir, "val/acc")
    assert [s for s, _ in got] == [0, 1, 2, 3]
    assert [v for _, v in got] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert read_scalars(run_dir, "train/loss") == []
    assert read_scalars(tmp_path / "missing", "val/acc") == []


def test_main_writes_the_file(partial_runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out" / "R.md"
    assert main([str(partial_runs), "--out", str(out)]) == 0
    assert out.read_text() == render_report(load_runs(partial_runs), out_dir=out.parent, runs_dir=str(partial_runs))
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 0  # default --out: RESULTS.md in the current directory
    assert "| **EXP-1** |" in (tmp_path / "RESULTS.md").read_text()
    assert main(["runs", "--dataset", "cifar10", "--out", "paper.md"]) == 0
    assert "Source: no completed runs" in (tmp_path / "paper.md").read_text()
    assert "Student Val Accuracy | *pending*" in (tmp_path / "paper.md").read_text()
