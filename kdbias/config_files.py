"""What a configuration file may make the command line import.

jsonargparse imports the module of every ``class_path`` it resolves. A ``--config`` file
(or one named by a preset) may only name classes under :data:`TRUSTED_PREFIXES`; any other
``class_path`` must also be written on the command line itself, where the user sees it.
The files are read with ``yaml.safe_load`` (no tags, no code) and nothing is imported here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["TRUSTED_PREFIXES", "check_config_classes", "class_paths"]

#: Class paths a configuration file may name without the user repeating them.
TRUSTED_PREFIXES = ("kdbias.", "lightning.pytorch.")
_CONFIG_OPTIONS = ("--config", "-c")


def class_paths(data: Any) -> Iterator[str]:
    """Every ``class_path`` value in a parsed YAML document (nested mappings and lists)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("class_path"), str):
                yield item["class_path"]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _config_files(argv: Sequence[str]) -> list[Path]:
    files = []
    for i, arg in enumerate(argv):
        if arg in _CONFIG_OPTIONS and i + 1 < len(argv):
            files.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.split("=", 1)[1]))
    return files


def check_config_classes(argv: Sequence[str]) -> None:
    """``ValueError`` naming the file and the class when a ``--config`` file in ``argv`` names
    a ``class_path`` outside :data:`TRUSTED_PREFIXES` that the command line does not name too.
    Unreadable files are left for the parser to report."""
    typed = [a for i, a in enumerate(argv) if i == 0 or argv[i - 1] not in _CONFIG_OPTIONS]
    for path in _config_files(argv):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        for name in class_paths(data):
            if "." not in name or name.startswith(TRUSTED_PREFIXES) or any(name in arg for arg in typed):
                continue
            raise ValueError(
                f"{path} names class_path {name!r}, outside {' and '.join(TRUSTED_PREFIXES)}: it is not imported "
                "from a configuration file. Name it on the command line too (e.g. --trainer.callbacks+="
                f"{name}) if you mean it."
            )
