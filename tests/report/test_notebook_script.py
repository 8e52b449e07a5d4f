"""``python notebooks/analysis.py`` as a plain script (no display): it saves every figure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.subprocess
def test_notebook_script_saves_its_figures_and_says_where(full_matrix, tmp_path):
    figures = tmp_path / "figs"
    env = {**os.environ, "KDBIAS_RUNS_DIR": str(full_matrix), "KDBIAS_FIG_DIR": str(figures), "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "notebooks" / "analysis.py")], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    names = ["learning_curves", "attention_distance", "cka_heatmaps", "hessian_trace"]
    for name in names:
        path = figures / f"{name}.png"
        assert f"saved {path}" in done.stdout
        with Image.open(path) as image:
            assert image.width > 400 and image.height > 200
