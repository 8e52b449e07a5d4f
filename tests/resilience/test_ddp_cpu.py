"""``strategy="ddp"`` on 2 CPU processes (gloo): modules, callbacks and the CLI.

Lightning's "ddp" strategy re-launches the running script once per rank, so each check
runs a script in a subprocess: ``ddp_probe.py`` (introspection of a KLDistillModule fit)
and ``experiments/exp3.py --smoke`` with every analytics callback switched on.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from resilience_helpers import REPO, read_scalars, script, script_env

from kdbias.experiment import resumable_run
from kdbias.runs import load_hparams
from kdbias.recipes import EXP3

PROBE = REPO / "tests" / "resilience" / "ddp_probe.py"


def test_ddp_shards_steps_and_reduced_metrics(tmp_path):
    sys.path.insert(0, str(PROBE.parent))
    from ddp_probe import BATCH, DEVICES, EPOCHS, N_TRAIN

    done = subprocess.run([sys.executable, str(PROBE), str(tmp_path)], cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(DEVICES)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)

    # the step count is what the global batch implies
    steps_per_epoch = N_TRAIN // (BATCH * DEVICES)
    assert all(r["global_step"] == EPOCHS * steps_per_epoch for r in ranks)

    # each epoch, the ranks draw disjoint shards that cover the training set; epochs reshuffle
    per_epoch = steps_per_epoch * BATCH
    for epoch in range(EPOCHS):
        shards = [set(r["indices"][epoch * per_epoch:(epoch + 1) * per_epoch]) for r in ranks]
        assert all(len(s) == per_epoch for s in shards)
        assert not shards[0] & shards[1]
        assert shards[0] | shards[1] == set(range(N_TRAIN))
    assert ranks[0]["indices"][:per_epoch] != ranks[0]["indices"][per_epoch:]

    # validation metrics are reduced over the ranks: each equals the whole split's value
    for r in ranks:
        for name in ("val/acc", "teacher/acc", "val/loss"):
            assert abs(r["logged"][name] - r["full"][name]) < 1e-5, (r["rank"], name, r["logged"], r["full"])
    # DDP keeps the replicas identical
    assert ranks[0]["weights"] == ranks[1]["weights"]


def test_exp3_cli_ddp_with_analytics_writes_one_run_from_rank_0(tmp_path):
    runs = tmp_path / "runs"
    args = ["--smoke", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--epochs", "1",
            "--global-batch-size", "16", "--val-batch-size", "16", "--limit-train-batches", "2",
            "--limit-val-batches", "1", "--teacher-image-size", "56", "--runs-dir", str(runs),
            # every analytics callback of exp3, on a few images
            "--attn-images", "8", "--hessian-images", "8", "--hessian-max-iter", "2", "--cka-batches", "1",
            "--cka-batch-size", "8", "--gen-gap-images", "16", "--knn-train", "32", "--knn-val", "16"]
    done = subprocess.run(script("exp3") + args, cwd=REPO, env=script_env(), capture_output=True, text=True,
                          timeout=500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # one run directory, one events file, one summary, written by rank 0 only
    assert [p.name for p in (runs / "exp3").iterdir()] == ["version_0"]
    run_dir = runs / "exp3" / "version_0"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert done.stdout.count("Run directory:") == 1
    assert sorted(p.name for p in (run_dir / "analytics" / "cka_heatmaps").iterdir()) == ["epoch_0.json",
                                                                                         "epoch_0.png"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_completed"] == 1 and summary["teacher_acc"] is not None
    for key in ("attn_dist", "hessian_trace", "cka_diag_alignment", "gen_gap_acc"):
        assert summary.get(key) is not None, key
    assert len(read_scalars(run_dir, "val/acc")) == 1
    assert len(read_scalars(run_dir, "hessian/trace")) == 1

    # --global-batch-size 16 over 2 devices: 8 per device, 2 optimiser steps of 16 images
    hparams = load_hparams(run_dir / "hparams.yaml")  # Lightning writes layer_pairs as !!python/tuple
    assert hparams["config"]["batch_size"] == 8 and hparams["config"]["global_batch_size"] == 16
    assert resumable_run(runs, "exp3", EXP3.parse(args)) == run_dir  # --resume finds this run
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2
    assert not any(key.startswith("_teacher") or key.startswith("teacher.") for key in last["state_dict"])
