"""Every script runs alone: the baseline on an empty runs folder skips its CKA controls, saying which."""

from helpers import TINY_ANALYTICS, read_summary, run_experiment


def test_baseline_without_teacher_runs_completes_and_names_the_controls_it_skipped(tmp_path, capsys):
    run_dir = run_experiment("baseline", tmp_path, *TINY_ANALYTICS, "--analytics.cka_against", "[exp1, exp2]")
    out = capsys.readouterr().out
    assert read_summary(run_dir)["status"] == "complete"
    for key, teacher in (("exp1", "teacher_resnet18"), ("exp2", "teacher_convnextv2")):
        line = next(line for line in out.splitlines() if f"CKA control against the {key} teacher skipped" in line)
        assert f"no complete {teacher} run" in line
    assert "cka" not in read_summary(run_dir) or "exp1" not in read_summary(run_dir)["cka"]


def test_skipped_controls_are_measured_later_and_equal_what_training_measures(tmp_path, capsys):
    """``kdbias.controls`` fills the skipped CKA control (on ``last.ckpt``) and fidelity reference
    (on the selected checkpoint) with the values a baseline trained beside the teacher measures
    itself: the baseline does not depend on the teacher, so the same seed gives the same weights."""
    import pytest

    from kdbias.controls import fill_controls, main, missing_controls

    args = (*TINY_ANALYTICS, "--analytics.cka_against", "[exp1]")
    alone = run_experiment("baseline", tmp_path, *args)
    assert missing_controls(alone) == (["exp1"], [])  # no teacher run: no fidelity reference owed yet
    (line,) = fill_controls(alone)  # no teacher yet: one line, nothing written
    assert "CKA control against the exp1 teacher still missing: no complete teacher_resnet18 run" in line
    assert "exp1" not in (read_summary(alone).get("cka") or {})
    run_experiment("teacher_resnet18", tmp_path, *TINY_ANALYTICS)
    beside = run_experiment("baseline", tmp_path, *args)  # trained with the teacher present
    capsys.readouterr()
    assert main([str(alone)]) == 0
    out = capsys.readouterr().out
    assert "CKA control against the exp1 teacher" in out and "measured" in out
    later, trained = read_summary(alone), read_summary(beside)
    assert "teacher_resnet18" in trained["fidelity"]
    assert later["cka"]["exp1"]["measured"] == "later"
    for figure in ("diag", "off_diag", "contrast"):
        assert later["cka"]["exp1"][figure] == pytest.approx(trained["cka"]["exp1"][figure], rel=1e-5, abs=1e-7)
    assert (alone / later["cka"]["exp1"]["heatmap"]).is_file()
    for key, values in trained.get("fidelity", {}).items():
        assert later["fidelity"][key]["agreement"] == pytest.approx(values["agreement"], abs=1e-9)
        assert later["fidelity"][key]["kl"] == pytest.approx(values["kl"], rel=1e-5, abs=1e-7)
    assert missing_controls(alone) == ([], [])
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "not a complete run" in capsys.readouterr().err
