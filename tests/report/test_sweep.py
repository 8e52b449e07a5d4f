"""The sweep table: rows named by key and value (never by hash), Δ paired by seed against the
preset's value (checked against numpy), runs of another configuration left out, and the
sweeps file read defensively."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from kdbias.callbacks.predictions import Predictions
from kdbias.launch.sweep import parse_sweeps, point_args, point_slug, record_sweep, sweep_grid
from kdbias.report.sweep import SWEEPS_FILE, read_sweeps, sweep_rows, sweep_section, value_label

N = 400  # test images
ACCS = {1.0: (0.70, 0.72), 2.0: (0.80, 0.78), 4.0: (0.75, 0.76)}  # per value of τ, per seed


def _run(root: Path, tau: float, seed: int, correct: np.ndarray, version: int = 0, lr: float = 1e-3, **extra):
    run_dir = root / "exp1" / f"tau{tau}_seed{seed}_v{version}"
    run_dir.mkdir(parents=True)
    config = {"seed_everything": seed, "model": {"temperature": tau, "alpha": 0.5, "optim": {"lr": lr}}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    label = np.arange(N) % 10
    predictions = Predictions(np.arange(N), label, np.where(correct, label, (label + 1) % 10), correct, "best")
    return {
        "experiment": "exp1",
        "dataset": "digits",
        "preset": "smoke",
        "seed": seed,
        "version": version,
        "run_dir": str(run_dir),
        "predictions": predictions,
        "test_acc": float(correct.mean()),
        "test_images": N,
        "config_signature": "0123456789abcdef",
        **extra,
    }


@pytest.fixture()
def sweep_runs(tmp_path):
    rng = np.random.default_rng(0)
    runs, correct = [], {}
    for tau, per_seed in ACCS.items():
        for seed, acc in enumerate(per_seed):
            c = rng.random(N) < acc
            correct[tau, seed] = c
            runs.append(_run(tmp_path, tau, seed, c, fidelity={"teacher_resnet18": {"agreement": acc - 0.1}}))
    sweep = {"experiment": "exp1", "dataset": "digits", "preset": "smoke", "keys": ["model.temperature"]}
    sweep["reference"] = {"model.temperature": 4.0}
    return tmp_path, runs, correct, sweep


def test_table_rows_are_named_by_value_and_delta_is_paired(sweep_runs):
    root, runs, correct, sweep = sweep_runs
    lines = sweep_section(runs, [sweep])
    text = "\n".join(lines)
    rows = [line for line in lines if line.startswith("| τ = ")]
    assert [row.split(" | ")[0] for row in rows] == ["| τ = 1", "| τ = 2", "| τ = 4 (preset)"]
    assert not re.search(r"\b[0-9a-f]{16}\b", text)  # no configuration hash anywhere
    for tau, row in zip((1.0, 2.0), rows):
        # Δ against τ = 4, seed by seed, in percentage points: numpy's mean of the per-seed differences.
        expected = np.mean([correct[tau, s].mean() - correct[4.0, s].mean() for s in (0, 1)]) * 100
        assert float(row.split(" | ")[3].split(" ± ")[0]) == pytest.approx(expected, abs=0.006)
        accuracy = np.mean([correct[tau, s].mean() for s in (0, 1)]) * 100
        assert float(row.split(" | ")[2].split(" ± ")[0]) == pytest.approx(accuracy, abs=0.006)
        assert re.search(r"\*\*(yes|no|inconclusive)\*\*", row.split(" | ")[4])
        agreement = np.mean([ACCS[tau][s] - 0.1 for s in (0, 1)])  # what the runs recorded
        assert float(row.split(" | ")[5].split(" ± ")[0]) == pytest.approx(agreement * 100, abs=0.006)
    assert "agreement with teacher\\_resnet18" in text
    assert rows[2].split(" | ")[3] == "reference"


def test_runs_of_another_configuration_are_left_out(sweep_runs):
    root, runs, correct, sweep = sweep_runs
    odd = _run(root, 1.0, 2, correct[1.0, 0], lr=0.5)  # τ = 1, but another learning rate
    rows, notes = sweep_rows([*runs, odd], sweep)
    assert [len(group) for _, group in rows] == [2, 2, 2]
    assert len(notes) == 1 and "model.optim.lr" in notes[0]


def test_newest_run_of_a_seed_counts(sweep_runs):
    root, runs, correct, sweep = sweep_runs
    newer = _run(root, 2.0, 0, np.ones(N, dtype=bool), version=3)
    rows, _ = sweep_rows([*runs, newer], sweep)
    group = dict((v["model.temperature"], g) for v, g in rows)[2.0]
    assert [r["version"] for r in group] == [3, 0]


def test_no_reference_run_says_so(sweep_runs):
    _, runs, _, sweep = sweep_runs
    lines = sweep_section([r for r in runs if "tau4.0" not in r["run_dir"]], [sweep])
    assert "*no run of the preset's value*" in "\n".join(lines)


def test_other_dataset_or_no_sweep_gives_nothing(sweep_runs):
    _, runs, _, sweep = sweep_runs
    assert sweep_section(runs, [sweep], dataset="cifar10") == []
    assert sweep_section(runs, []) == []


def test_value_labels():
    assert value_label({"model.temperature": 1.0}) == "τ = 1"
    assert value_label({"model.alpha": 0.25, "model.optim.lr": 0.001}) == "α = 0.25, lr = 0.001"
    assert value_label({"data.mix": "cutmix"}) == "mix = cutmix"


def test_sweeps_file_round_trip_and_bad_files(tmp_path):
    record_sweep(tmp_path, "exp1", "digits", "smoke", {"model.temperature": 4.0})
    record_sweep(tmp_path, "exp1", "digits", "smoke", {"model.alpha": 0.5})  # replaces the first
    record_sweep(tmp_path, "exp2", "digits", "smoke", {"model.temperature": 4.0})
    found = read_sweeps(tmp_path)
    assert [(s["experiment"], s["keys"]) for s in found] == [("exp1", ["model.alpha"]), ("exp2", ["model.temperature"])]
    (tmp_path / SWEEPS_FILE).write_text("{not json")
    assert read_sweeps(tmp_path) == []
    (tmp_path / SWEEPS_FILE).write_text(json.dumps({"sweeps": [{"experiment": 3}, "x"]}))
    assert read_sweeps(tmp_path) == []
    assert read_sweeps(tmp_path / "absent") == []


def test_parse_and_grid():
    sweeps = parse_sweeps(["model.temperature=1,2,4", "model.alpha=0.1,0.9"])
    assert sweeps == [("model.temperature", ["1", "2", "4"]), ("model.alpha", ["0.1", "0.9"])]
    grid = sweep_grid(sweeps)
    assert len(grid) == 6 and grid[1] == (("model.temperature", "1"), ("model.alpha", "0.9"))
    assert point_args(grid[1]) == ["--model.temperature", "1", "--model.alpha", "0.9"]
    assert point_slug(grid[1]) == "temperature1-alpha0.9"
    assert sweep_grid([]) == [()]
    for bad, words in (
        ("temperature=1", "dotted"),
        ("model.temperature", "dotted"),
        ("model.temperature=1,1", "distinct"),
        ("model.temperature=1,", "non-empty"),
        ("data.seed=1,2", "not a setting to sweep"),
    ):
        with pytest.raises(ValueError, match=words):
            parse_sweeps([bad])
    with pytest.raises(ValueError, match="swept twice"):
        parse_sweeps(["model.alpha=1", "model.alpha=2"])


def test_agreement_takes_seeds_and_test_images_where_runs_kept_per_image_values(sweep_runs):
    """Where every run of a row kept its per-image agreement, the sweep's agreement cell is the
    two-part interval (seed part and test-image part, root sum of squares), written out here."""
    root, runs, _, sweep = sweep_runs
    rng = np.random.default_rng(1)
    agreement = {}
    for i, run in enumerate(runs):  # the fixture's order: τ by τ, seeds 0 and 1
        tau = list(ACCS)[i // 2]
        agree = rng.random(N) < 0.7
        agreement[tau, run["seed"]] = agree
        run["fidelity"] = {"teacher_resnet18": {"agreement": float(agree.mean())}}
        run["fidelity_images"] = {"teacher_resnet18": {"agreement": agree, "kl": np.zeros(N)}}
    lines = sweep_section(runs, [sweep])
    rows = [line for line in lines if line.startswith("| τ = ")]
    for tau, row in zip((1.0, 2.0, 4.0), rows):
        matrix = np.stack([agreement[key].astype(float) for key in sorted(agreement) if key[0] == tau]) * 100
        S = matrix.shape[0]
        seed_half = stats.t.ppf(0.975, S - 1) * np.sqrt(matrix.mean(axis=1).var(ddof=1) / S)
        image_half = stats.t.ppf(0.975, N - 1) * np.sqrt(matrix.mean(axis=0).var(ddof=1) / N)
        mean, half = (float(x.split()[0]) for x in row.split(" | ")[5].split(" ± "))
        assert mean == pytest.approx(matrix.mean(), abs=0.006)
        assert half == pytest.approx(np.hypot(seed_half, image_half), abs=0.006)
        assert half > seed_half  # never narrower than the seed part alone
