"""Every row beyond the plan has a script, preset pieces that parse, and a README command."""

from __future__ import annotations

import contextlib
import io

import pytest
import yaml
from helpers import CONFIGS, EXPERIMENTS, ROOT

from kdbias import registry
from kdbias.cli import KDBiasCLI
from kdbias.models.tokens import relative_depth_pairs

WHY = list(registry.WHY_EXPERIMENTS)
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", WHY)
def test_script_pieces_and_readme(name):
    spec = registry.get(name)
    assert spec.group == "why"
    script = (EXPERIMENTS / f"{name}.py").read_text()
    assert f'run_row("{name}")' in script
    for preset in registry.PRESETS:
        assert all(path.is_file() for path in spec.config_files(preset))
    assert f"python experiments/{name}.py" in README


@pytest.mark.parametrize("name", WHY)
def test_smoke_preset_parses(name):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        KDBiasCLI(registry.get(name), ["--smoke", "--print_config"])
    assert exit_.value.code == 0
    config = yaml.safe_load(out.getvalue())
    assert config["preset"] == "smoke"
    if name == "exp1_cka":
        assert config["model"]["layer_pairs"] == "relative" and config["model"]["lambda_cka"] == 0.5
        assert config["data"]["batch_size"] == 16  # EXP-3's smoke batch
    if name == "exp3_kl":
        assert config["model"]["temperature"] == 4.0 and config["model"]["alpha"] == 0.5


def test_relative_pairs_named_in_the_preset_comment_match():
    text = (CONFIGS / "exp1_cka.yaml").read_text()
    assert "3, 6, 9, 11 -> ResNet-18 blocks 2, 4, 6, 7" in text
    assert relative_depth_pairs([3, 6, 9, 11], 12, 8) == [(3, 2), (6, 4), (9, 6), (11, 7)]
