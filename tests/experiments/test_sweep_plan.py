"""run_all --sweep plans every student once per grid point and seed, plus the preset's own value
when no point has it; keys and log names tell the points apart."""

from __future__ import annotations

import pytest

from kdbias.launch import plan as plan_module
from kdbias.launch.plan import plan_matrix


def _fake_expected_config(experiment: str, argv: list[str]) -> dict:
    """What the experiment's parser resolves, for the keys these tests sweep (preset: tau 4, alpha 0.5)."""
    model = {"temperature": 4.0, "alpha": 0.5, "teacher": "auto"}
    for key in ("temperature", "alpha"):
        if f"--model.{key}" in argv:
            model[key] = float(argv[argv.index(f"--model.{key}") + 1])
    return {"model": model, "trainer": {"max_epochs": 2}}


@pytest.fixture(autouse=True)
def _no_parser(monkeypatch):
    monkeypatch.setattr(plan_module, "expected_config", _fake_expected_config)


def test_each_value_for_every_seed_plus_the_reference(tmp_path):
    plan = plan_matrix(tmp_path, 2, smoke=True, only=["exp1"], sweeps=[("model.temperature", ["1", "2"])])
    assert [(r.seed, r.sweep) for r in plan] == [
        (seed, point) for seed in (0, 1) for point in ((("model.temperature", "1"),), (("model.temperature", "2"),), ())
    ]
    assert len({r.key for r in plan}) == len({r.slug for r in plan}) == 6
    assert all(r.preset_values == (("model.temperature", 4.0),) for r in plan)
    assert [r.config["model"]["temperature"] for r in plan[:3]] == [1.0, 2.0, 4.0]  # the preset's run last
    assert plan[0].argv[-2:] == ("--model.temperature", "1") and plan[0].slug == "exp1-seed0-temperature1"
    assert "the sweep's reference" in plan[2].describe()


def test_a_grid_that_holds_the_preset_has_no_extra_run(tmp_path):
    sweeps = [("model.temperature", ["1", "4"]), ("model.alpha", ["0.5", "0.9"])]
    plan = plan_matrix(tmp_path, 1, smoke=True, only=["exp1"], sweeps=sweeps)
    assert len(plan) == 4 and () not in [r.sweep for r in plan]
    assert plan[-1].sweep == (("model.temperature", "4"), ("model.alpha", "0.5"))  # the preset's values last
    assert plan[0].preset_values == (("model.temperature", 4.0), ("model.alpha", 0.5))


def test_teachers_are_not_swept(tmp_path):
    with pytest.raises(ValueError, match="student rows"):
        plan_matrix(tmp_path, 1, smoke=True, only=["teacher_resnet18"], sweeps=[("model.optim.lr", ["0.1"])])
    plan = plan_matrix(tmp_path, 1, smoke=True, only=["teacher_resnet18", "exp1"], sweeps=[("model.alpha", ["0.1"])])
    assert [(r.experiment, r.sweep) for r in plan][0] == ("teacher_resnet18", ())
    assert plan[0].preset_values == ()
