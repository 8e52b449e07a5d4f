"""The README's Python runs as printed after its documented one-line change; it links nothing outside."""

from __future__ import annotations

import re

import pytest
from helpers import ROOT

from kdbias import registry

README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_library_snippet_runs_offline_with_smoke_true(tmp_path, monkeypatch):
    (block,) = [b for b in python_blocks() if "SMOKE = False" in b]
    monkeypatch.chdir(tmp_path)  # Lightning writes lightning_logs/ into the working directory
    namespace: dict = {}
    exec(compile(block.replace("SMOKE = False", "SMOKE = True", 1), "README.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.current_epoch == 1 and "test/acc" in trainer.callback_metrics
    assert namespace["module"].teacher.source == "random"


def test_readme_names_every_experiment_and_links_nothing_outside():
    for name in registry.EXPERIMENTS:
        assert f"python experiments/{name}.py" in README, name
    assert "../" not in README and "shared/" not in README
    for target in re.findall(r"\]\(([^)]+)\)", README):
        assert not target.startswith(("/", "..")), target
        assert (ROOT / target).exists() or target.startswith("http"), target


def test_layout_names_every_part_of_the_package():
    """The README's Layout block lists every module and package directly under kdbias/."""
    layout = README[README.index("## Layout") :]
    block = layout[layout.index("```\n") + 4 :]
    block = block[: block.index("```")]
    listed = set(re.findall(r"^  ([\w.]+/?)\s", block, flags=re.M))
    package = ROOT / "kdbias"
    present = {p.name + ("/" if p.is_dir() else "") for p in package.iterdir() if not p.name.startswith("__")}
    assert listed == present
