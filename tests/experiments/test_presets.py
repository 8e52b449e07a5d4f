"""One owner per default: the signatures own the plan's numbers, the presets name only what differs.

A paper preset piece that restates a signature's default is a second owner of that number
(the two can drift apart silently), so it fails here; a smoke piece must change what the
paper preset would otherwise give. The plan's values themselves are pinned by
``test_cli.py::test_presets_follow_the_plan`` (through the command line's own parser).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import lightning as L
import pytest
import yaml

from kdbias import registry
from kdbias.data import CIFARDataModule
from kdbias.experiment import ANALYTICS_CALLBACKS, flatten
from kdbias.modules import Optimization

_MISSING = object()
#: Parser arguments of kdbias.cli with their defaults (not signatures of a class).
_RUN_DEFAULTS = {"preset": "paper", "runs_dir": "runs", "seed_everything": 0, "analytics.enabled": True}


def _param_default(cls: type, name: str) -> Any:
    parameter = inspect.signature(cls).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return _MISSING
    return parameter.default


def signature_default(key: str, module_class: type) -> Any:
    """The default the signatures give dotted configuration ``key`` (``_MISSING``: none)."""
    if key in _RUN_DEFAULTS:
        return _RUN_DEFAULTS[key]
    head, *rest = key.split(".")
    if head == "model" and rest[0] == "optim" and len(rest) == 2:
        fields = {f.name: f.default for f in dataclasses.fields(Optimization)}
        return fields.get(rest[1], _MISSING)
    if head == "model" and len(rest) == 1:
        return _param_default(module_class, rest[0])
    if head == "data" and len(rest) == 1:
        return _param_default(CIFARDataModule, rest[0])
    if head == "trainer" and len(rest) == 1:
        return _param_default(L.Trainer, rest[0])
    if head == "analytics" and len(rest) == 2 and rest[0] in ANALYTICS_CALLBACKS:
        return _param_default(ANALYTICS_CALLBACKS[rest[0]][0], rest[1])
    return _MISSING


def _same(a: Any, b: Any) -> bool:
    plain = lambda v: [plain(x) for x in v] if isinstance(v, (list, tuple)) else v  # noqa: E731
    return plain(a) == plain(b)


def _piece(path) -> dict[str, Any]:
    """The piece's settings as dotted keys (an empty section such as ``model: {}`` sets nothing)."""
    flat = flatten(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return {k: v for k, v in flat.items() if v != {}}


def _paper_pieces():
    for experiment in registry.EXPERIMENTS.values():
        for path in experiment.config_files("paper"):
            yield experiment, path


@pytest.mark.parametrize(
    ("experiment", "path"),
    list(_paper_pieces()),
    ids=[f"{e.name}-{p.stem}" for e, p in _paper_pieces()],
)
def test_paper_pieces_name_only_what_differs_from_the_signatures(experiment, path):
    for key, value in _piece(path).items():
        default = signature_default(key, experiment.module_class)
        assert not _same(value, default), (
            f"{path.name}: {key}: {value!r} restates the signature's default; the signature owns it (README, "
            "One owner per default): delete it from the preset, or change it where it is owned."
        )


def test_the_rule_sees_a_restated_default(tmp_path):
    """The check above fails on a piece that repeats a default (here: tau = 4)."""
    piece = tmp_path / "soft_kl.yaml"
    piece.write_text("model:\n  temperature: 4.0\n  alpha: 0.7\n")
    exp1 = registry.get("exp1")
    restated = [k for k, v in _piece(piece).items() if _same(v, signature_default(k, exp1.module_class))]
    assert restated == ["model.temperature"]
    assert signature_default("analytics.hessian.max_iter", exp1.module_class) == 50
    assert signature_default("model.optim.lr", exp1.module_class) == 5e-4


def _merged_paper(experiment) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in experiment.config_files("paper"):
        merged.update(_piece(path))
    return merged


def test_smoke_pieces_change_what_the_paper_preset_gives():
    for experiment in registry.EXPERIMENTS.values():
        paper = _merged_paper(experiment)
        smoke = experiment.config_files("smoke")[len(experiment.config_files("paper")) :]
        for path in smoke:
            for key, value in _piece(path).items():
                given = paper.get(key, signature_default(key, experiment.module_class))
                assert not _same(value, given), f"smoke/{path.name}: {key}: {value!r} is what the paper preset gives"


def test_analytics_of_a_library_script_measure_the_paper_protocol():
    """``Analytics()`` gives each callback the plan's protocol; the run's own arguments (the CKA
    key, the trained pairs) are set by the run, not configured."""
    from helpers import cka_module

    from kdbias.experiment import Analytics, analytics_callbacks

    callbacks = {type(c).__name__: c for c in analytics_callbacks(Analytics(), cka_module(), "exp3", True)}
    assert set(callbacks) == {
        "GeneralisationGapCallback",
        "AttentionDistanceCallback",
        "HessianCallback",
        "CKAHeatmapCallback",
        "TeacherKNNCallback",
    }
    hessian = callbacks["HessianCallback"]
    assert (hessian.every_n_epochs, hessian.num_images, hessian.max_iter) == (100, 512, 50)
    assert (callbacks["GeneralisationGapCallback"].every_n_epochs, callbacks["CKAHeatmapCallback"].key) == (5, "exp3")
    assert (callbacks["TeacherKNNCallback"].num_train, callbacks["TeacherKNNCallback"].num_test) == (5000, 1000)
    with pytest.raises(ValueError, match="analytics.hessian: HessianCallback has no argument num_imgs"):
        Analytics(hessian={"num_imgs": 8})
    with pytest.raises(ValueError, match="analytics.cka: CKAHeatmapCallback has no argument key"):
        Analytics(cka={"key": "x"})
