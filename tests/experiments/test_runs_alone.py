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
