"""Reading a run directory's ``hparams.yaml`` (one reader for the runner, run_all and the report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _HparamsLoader(yaml.SafeLoader):
    """Safe YAML loader for Lightning's ``hparams.yaml``: it writes tuples (e.g. a module's
    ``layer_pairs``) as ``!!python/tuple``; any other Python object tag reads as None."""


_HparamsLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node)))
_HparamsLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def load_hparams(path: str | Path) -> dict[str, Any]:
    """A run's ``hparams.yaml`` as a dict (``{"config": <CLI flags>, <module hparams>...}``)."""
    loaded = yaml.load(Path(path).read_text(), Loader=_HparamsLoader) or {}
    return loaded if isinstance(loaded, dict) else {}


def saved_config(run_dir: str | Path) -> dict[str, Any]:
    """The CLI configuration a run was started with (``config`` in its ``hparams.yaml``);
    ``{}`` when the file is missing or unreadable."""
    try:
        config = load_hparams(Path(run_dir) / "hparams.yaml").get("config", {})
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}
