"""The README's "First run" block is what ``python experiments/exp3.py --smoke`` prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shape(line: str) -> str:
    """A printed line with its numbers replaced (times and losses vary from run to run)."""
    return re.sub(r"\d+(\.\d+)?", "#", line.strip())


def _first_run_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- first-run -->", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.subprocess
def test_first_run_prints_what_the_readme_shows(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "exp3.py"), "--smoke"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = {_shape(line) for line in done.stdout.splitlines()}
    missing = [line for line in _first_run_block() if _shape(line) not in printed]
    assert not missing, f"README lines the run did not print: {missing}\n--- stdout:\n{done.stdout[-4000:]}"
    assert (tmp_path / "runs" / "exp3" / "version_0" / "metrics.csv").is_file()
    assert (tmp_path / "runs" / "exp3" / "version_0" / "test_predictions.npz").is_file()
