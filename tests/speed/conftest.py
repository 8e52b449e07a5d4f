"""Fixtures of the speed tests; the helpers live in ``speed_helpers`` (importable by name)."""

from __future__ import annotations

from pathlib import Path

import pytest
from speed_helpers import Plan


@pytest.fixture
def dry_plan(tmp_path: Path) -> Plan:
    """The CPU dry-run plan: smoke preset, 2-block networks, batch 4, runs under ``tmp_path``."""
    return Plan.make(True, tmp_path / "runs")
