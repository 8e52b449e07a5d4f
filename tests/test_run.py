"""``kdbias.runs.Run``: a run's identity and the one builder of paths under its folder."""

import json

import pytest

from kdbias import runs


def test_paths_of_a_run_follow_the_documented_layout(tmp_path):
    folder = tmp_path / "runs" / "exp1" / "version_3"
    run = runs.Run(tmp_path / "runs", "exp1", "digits", "smoke", 1).at(folder)
    assert run.checkpoints == folder / "checkpoints"
    assert run.last_ckpt == folder / "checkpoints" / "last.ckpt"
    assert run.best_ckpt == folder / "checkpoints" / "best.ckpt"
    assert run.snapshots == folder / "checkpoints" / "snapshots"
    assert run.summary == folder / "summary.json" and run.config == folder / "config.yaml"
    assert run.predictions == folder / "test_predictions.npz"
    assert run.fidelity == folder / "fidelity_per_image.npz" and run.hparams == folder / "hparams.yaml"
    assert run.heatmaps("exp2") == folder / "analytics" / "cka_heatmaps" / "exp2"
    assert run.heatmap("exp2", 7) == folder / "analytics" / "cka_heatmaps" / "exp2" / "epoch_7.png"
    assert runs.heatmap_entry("exp2", 7) == "analytics/cka_heatmaps/exp2/epoch_7.png"  # as the summary names it
    assert run.describe() == "exp1 seed 1 on digits (smoke preset)"
    assert runs.checkpoint_entry("/anywhere/best.ckpt") == "checkpoints/best.ckpt"
    with pytest.raises(ValueError, match="no run folder yet"):
        _ = runs.Run(tmp_path, "exp1").summary


def test_a_run_read_from_its_folder_and_its_selected_checkpoint(tmp_path):
    folder = tmp_path / "runs" / "baseline" / "version_0"
    folder.mkdir(parents=True)
    summary = {"experiment": "baseline", "dataset": "digits", "preset": "smoke", "seed": 2}
    (folder / "summary.json").write_text(json.dumps({**summary, "selected_checkpoint": "checkpoints/best.ckpt"}))
    run = runs.Run.from_dir(folder)
    assert run == runs.Run(tmp_path / "runs", "baseline", "digits", "smoke", 2, folder)
    assert run.selected_checkpoint() == folder / "checkpoints" / "best.ckpt"
    with pytest.raises(runs.RunPathError, match="leads outside its run"):  # a path outside the run: refused
        run.selected_checkpoint({"selected_checkpoint": "../../elsewhere/x.ckpt"})
    assert run.selected_checkpoint({}) == run.last_ckpt
    bare = runs.Run.from_dir(tmp_path / "runs" / "exp2" / "version_5")  # no summary: identity from the folder
    assert (bare.experiment, bare.seed, bare.runs_dir) == ("exp2", None, tmp_path / "runs")


def test_a_run_located_by_its_folder_reads_nothing(tmp_path):
    folder = tmp_path / "runs" / "exp3" / "version_2"  # no such folder, no summary: nothing is read
    run = runs.Run.located(folder)
    assert (run.runs_dir, run.experiment, run.dir) == (tmp_path / "runs", "exp3", folder)
    assert (run.dataset, run.preset, run.seed) == (None, None, None)
    assert run.summary == folder / "summary.json"
