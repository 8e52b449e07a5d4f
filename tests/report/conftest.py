"""Fixtures of the report tests live in report_fixtures.py (importable by name)."""

from report_fixtures import *  # noqa: F403 - pytest collects the fixtures from this namespace
