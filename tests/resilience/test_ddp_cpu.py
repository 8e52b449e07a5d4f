"""``strategy="ddp"`` on 2 CPU processes (gloo): modules, callbacks and the command line.

Lightning's "ddp" strategy re-launches the running script once per rank, so each check
runs a script in a subprocess: ``ddp_probe.py`` (introspection of a KLDistillModule fit)
and ``experiments/exp3.py --smoke`` with every analytics callback switched on.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from helpers import FAST, TINY_ARGS, read_scalars
from helpers import TINY_ANALYTICS as ANALYTICS
from resilience_helpers import REPO, load, script, script_env

from kdbias.runs import latest_complete_run

pytestmark = [pytest.mark.ddp, pytest.mark.subprocess, pytest.mark.slow]

PROBE = REPO / "tests" / "resilience" / "ddp_probe.py"


def test_ddp_shards_steps_and_reduced_metrics(tmp_path):
    sys.path.insert(0, str(PROBE.parent))
    from ddp_probe import BATCH, DEVICES, EPOCHS, N_TRAIN

    done = subprocess.run(
        [sys.executable, str(PROBE), str(tmp_path)],
        cwd=REPO,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(DEVICES)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)

    # the step count is what the global batch implies
    steps_per_epoch = N_TRAIN // (BATCH * DEVICES)
    assert all(r["global_step"] == EPOCHS * steps_per_epoch for r in ranks)

    # each epoch, the ranks draw disjoint shards that cover the training set; epochs reshuffle
    per_epoch = steps_per_epoch * BATCH
    for epoch in range(EPOCHS):
        shards = [set(r["indices"][epoch * per_epoch : (epoch + 1) * per_epoch]) for r in ranks]
        assert all(len(s) == per_epoch for s in shards)
        assert not shards[0] & shards[1]
        assert shards[0] | shards[1] == set(range(N_TRAIN))
    assert ranks[0]["indices"][:per_epoch] != ranks[0]["indices"][per_epoch:]

    # validation metrics are reduced over the ranks: each equals the whole held-out split's value
    for r in ranks:
        for name in ("val/acc", "val/teacher_acc", "val/loss"):
            assert abs(r["logged"][name] - r["full"][name]) < 1e-5, (r["rank"], name, r["logged"], r["full"])
    # DDP keeps the replicas identical; the frozen teacher is never part of the student's state
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert not any(r["teacher_in_state_dict"] for r in ranks)


def test_exp3_cli_ddp_with_analytics_writes_one_run_from_rank_0(tmp_path):
    runs = tmp_path / "runs"
    args = [
        "--smoke",
        "--runs_dir",
        str(runs),
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.accelerator",
        "cpu",
        *FAST,
        "--data.batch_size",
        "8",
        *TINY_ARGS["exp3"],
        "--model.layer_pairs",
        "[[0, 0]]",
        *ANALYTICS,
    ]  # block 1: an untrained diagonal
    done = subprocess.run(
        script("exp3") + args, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=500
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # one run directory, one summary, one events file, written by rank 0 only
    assert [p.name for p in (runs / "exp3").iterdir()] == ["version_0"]
    run_dir = runs / "exp3" / "version_0"
    events = [path.name for path in run_dir.glob("events.out.tfevents.*")]
    assert len(events) == 1, events
    assert done.stdout.count("Run directory:") == 1
    heatmaps = run_dir / "analytics" / "cka_heatmaps" / "exp3"
    assert sorted(p.name for p in heatmaps.iterdir()) == ["epoch_0.json", "epoch_0.png"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs_completed"] == 1
    assert summary["teacher_knn_acc"] is not None and summary["teacher_acc"] is None  # headless: k-NN only
    for key in ("attn_dist", "hessian_trace", "cka_diag_alignment", "gen_gap_acc"):
        assert summary.get(key) is not None, key
    assert summary["method"]["batch_size"] == 8 and summary["method"]["global_batch_size"] == 16
    assert len(read_scalars(run_dir, "val/acc")) == 1
    assert len(read_scalars(run_dir, "hessian/trace")) == 1

    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert hparams["layer_pairs"] == [[0, 0]] and hparams["batch_size"] == 8
    assert latest_complete_run(runs, "exp3", 0, "digits", "smoke") == run_dir  # --resume would say finished
    last = load(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 2  # 2 steps of 16 images over 2 processes
    assert not any(key.startswith("teacher.") for key in last["state_dict"])
