"""The experiment scripts: LightningCLI flags, presets, --print_config/--config, the run layout."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from helpers import EXPERIMENTS, read_summary, run_experiment, scalar_tags

from kdbias import registry
from kdbias.cli import main
from kdbias.modules import CKADistillModule, KLDistillModule, TeacherModule

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _printed_config(name: str, *args: str, capsys) -> dict:
    with pytest.raises(SystemExit) as stop:
        main(name, [*args, "--print_config"])
    assert stop.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.subprocess
def test_help_lists_every_level_and_abbreviations_are_refused():
    script = str(EXPERIMENTS / "exp1.py")
    out = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    for flag in (
        "--smoke",
        "--resume",
        "--config",
        "--print_config",
        "--model.temperature",
        "--model.alpha",
        "--model.optim.lr",
        "--data.batch_size",
        "--data.holdout",
        "--trainer.max_epochs",
        "--trainer.gradient_clip_val",
        "--trainer.accumulate_grad_batches",
        "--analytics.cka.every_n_epochs",
        "--analytics.hessian.num_images",
    ):
        assert flag in out, flag
    assert "default: 4.0" in out  # the preset's (the plan's) tau
    options = out[out.index("options:") :]
    flags = ("--smoke", "--resume", "--model.alpha", "--data.batch_size", "--analytics.hessian.num_images")
    first = {flag: options.index(f"  {flag} ") for flag in flags}
    assert max(first.values()) < options.index("  --trainer.max_epochs"), first  # what a user changes comes first
    assert ":class:" not in out and ":func:" not in out and "``" not in out  # no Sphinx markup
    bad = subprocess.run([sys.executable, script, "--smok"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "--smok" in bad.stderr


def test_every_experiment_has_a_script_and_presets():
    for experiment in registry.EXPERIMENTS.values():
        assert (EXPERIMENTS / f"{experiment.name}.py").is_file()
        for preset in ("paper", "smoke"):
            assert all(p.is_file() for p in experiment.config_files(preset))


def test_presets_follow_the_plan(capsys):
    exp1 = _printed_config("exp1", capsys=capsys)
    assert (exp1["trainer"]["max_epochs"], exp1["data"]["batch_size"], exp1["preset"]) == (200, 1024, "paper")
    assert exp1["model"]["optim"]["lr"] == 5e-4 and exp1["model"]["optim"]["weight_decay"] == 0.05
    assert (exp1["model"]["temperature"], exp1["model"]["alpha"], exp1["data"]["dataset"]) == (4.0, 0.5, "cifar10")
    assert exp1["trainer"]["precision"] == "bf16-mixed"
    exp3 = _printed_config("exp3", capsys=capsys)
    assert (exp3["data"]["batch_size"], exp3["model"]["lambda_cka"], exp3["model"]["lambda_tok"]) == (512, 0.5, 0.5)
    assert exp3["model"]["teacher_image_size"] == 224
    assert exp3["model"]["layer_pairs"] == [[3, 3], [6, 6], [9, 9], [11, 11]]
    control = _printed_config("baseline_b512", capsys=capsys)
    assert control["data"]["batch_size"] == exp3["data"]["batch_size"]  # EXP-3's matched control
    smoke = _printed_config("exp3", "--smoke", "--model.optim.lr", "0.01", capsys=capsys)
    assert (smoke["data"]["dataset"], smoke["preset"], smoke["model"]["teacher_pretrained"]) == (
        "digits",
        "smoke",
        None,
    )
    assert smoke["model"]["teacher_image_size"] == 56 and smoke["model"]["optim"]["lr"] == 0.01
    assert smoke["model"]["optim"]["weight_decay"] == 0.05  # nested settings merge, not replace
    teacher = _printed_config("teacher_resnet18", capsys=capsys)
    assert (teacher["model"]["optim"]["optimizer"], teacher["data"]["mix"], teacher["trainer"]["max_epochs"]) == (
        "sgd",
        "cutmix",
        200,
    )
    baseline = _printed_config("baseline", capsys=capsys)
    assert baseline["analytics"]["cka_against"] == ["exp1", "exp2", "exp3"]


def test_linked_arguments_are_named_once(capsys):
    with pytest.raises(SystemExit) as stop:
        main("baseline", ["--model.dataset", "cifar100"])
    assert stop.value.code == 2
    assert 'must be given via "data.dataset"' in capsys.readouterr().err


def test_exp3_smoke_run_layout_reload_and_tags(tmp_path, capsys):
    run_dir = run_experiment("exp3", tmp_path / "runs", "--trainer.log_every_n_steps", "1")
    assert run_dir == tmp_path / "runs" / "exp3" / "version_0"
    out = capsys.readouterr().out
    assert "RANDOM weights" in out and "epoch 1/1" in out  # plain progress line without a terminal
    tags = scalar_tags(run_dir)
    for tag in ("train/loss", "train/loss_ce", "train/loss_cka", "train/loss_tok", "val/acc", "val/loss", "test/acc"):
        assert tag in tags, (tag, sorted(tags))
    summary = read_summary(run_dir)
    assert (summary["experiment"], summary["preset"], summary["dataset"], summary["status"]) == (
        "exp3",
        "smoke",
        "digits",
        "complete",
    )
    assert 0 <= summary["test_acc"] <= 1 and summary["selected_checkpoint"] == "checkpoints/best.ckpt"
    assert summary["method"]["loss"] == "cka" and summary["method"]["ce_weight"] == 1.0
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())  # plain YAML, each setting once
    assert "config" not in hparams and hparams["lambda_cka"] == 0.5 and hparams["layer_pairs"] == [[0, 0], [1, 1]]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["teacher_image_size"] == 56
    loaded = CKADistillModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert isinstance(loaded, CKADistillModule) and loaded.layer_pairs == [(0, 0), (1, 1)]


def test_hparams_tab_holds_method_parameters_and_final_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = run_experiment("baseline_b512", tmp_path / "runs")
    found: dict = {}
    for events in run_dir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    found.update(data.session_start_info.hparams)
                if data.HasField("experiment"):
                    found.update({m.name.tag: None for m in data.experiment.metric_infos})
    assert "optim/lr" in found and "arch" in found and "batch_size" in found
    assert "hp/test_acc" in found and "hp/val_acc" in found


def test_print_config_reruns_the_same_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    run_experiment("teacher_resnet18", runs)
    capsys.readouterr()
    args = ["--smoke", "--runs_dir", str(runs), "--model.temperature", "2"]
    from helpers import FAST, TINY_ARGS

    with pytest.raises(SystemExit):
        main("exp1", [*args, *FAST, *TINY_ARGS["exp1"], "--print_config"])
    config = tmp_path / "c.yaml"
    config.write_text(capsys.readouterr().out)
    first = main("exp1", ["--config", str(config)])
    second = run_experiment("exp1", runs, "--model.temperature", "2")
    a, b = read_summary(first), read_summary(second)
    assert a["method"]["temperature"] == 2.0 and a["config_signature"] == b["config_signature"]
    assert a["student_init_sha256"] == b["student_init_sha256"] and a["test_acc"] == b["test_acc"]
    assert a["teacher"]["source"] == b["teacher"]["source"]  # `teacher: auto` found the same checkpoint
    assert a["teacher_acc"] == read_summary(runs / "teacher_resnet18" / "version_0")["test_acc"]
    loaded = KLDistillModule.load_from_checkpoint(first / "checkpoints" / "last.ckpt")
    assert loaded.hparams.temperature == 2.0


def test_teacher_reload_predicts_as_saved(tmp_path, digits_dm):
    run_dir = run_experiment("teacher_resnet18", tmp_path / "runs")
    loaded = TeacherModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    fresh = TeacherModule(**loaded.hparams)
    fresh.load_state_dict(state)
    images = digits_dm.normalize_images(digits_dm.fixed_subset("test", 8)[0])
    loaded.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), fresh(images))


def test_lightning_product_tips_are_dropped_and_other_lines_kept():
    import logging

    from kdbias.console import _no_tips

    def record(message):
        return logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, __file__, 1, message, (), None)

    assert not _no_tips(record("💡 Tip: For seamless cloud logging and experiment tracking, try installing ..."))
    assert _no_tips(record("GPU available: False, used: False"))
