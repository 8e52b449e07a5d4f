"""What differs between two run configurations (``--resume``'s check, the report's cells).

Configurations are the nested mappings of ``config.yaml``; keys are compared flattened
(``model.temperature``). Run-local keys (:data:`RUN_LOCAL_KEYS`: where and how a run executes)
never count as a difference and are not part of a run's signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["RUN_LOCAL_KEYS", "config_changes", "flatten", "signature_config"]

#: Configuration keys that say where and how a run executes, not what it computes: a
#: change is never an error on ``--resume`` and they are left out of a run's signature.
RUN_LOCAL_KEYS = (
    "resume",
    "smoke",
    "allow_changed",
    "runs_dir",
    "data.num_workers",
    "data.pin_memory",
    "data.data_dir",
    "data.verify_md5",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.plugins",
    "trainer.benchmark",
    "config",
)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and other values are leaves)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _local(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in RUN_LOCAL_KEYS)


def config_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two configurations, ``{key: (saved, new)}``,
    run-local keys (:data:`RUN_LOCAL_KEYS`) left out."""
    a, b = flatten(saved), flatten(new)
    changed = {}
    for key in sorted(set(a) | set(b)):
        if not _local(key) and _plain(a.get(key)) != _plain(b.get(key)):
            changed[key] = (a.get(key), b.get(key))
    return changed


def _plain(value: Any) -> Any:
    """Tuples as lists, so that YAML round trips compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def signature_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration without run-local keys and seeds: what runs averaged into one
    report cell must share."""
    flat = flatten(config)
    return {
        k: _plain(v) for k, v in sorted(flat.items()) if not _local(k) and k not in ("seed_everything", "data.seed")
    }
