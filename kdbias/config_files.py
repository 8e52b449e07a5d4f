"""What a configuration file may make the command line import or call, and how it is read.

jsonargparse imports the module of every ``class_path`` it resolves, and resolves every
string given where a class or a callable is expected (``LambdaCallback``'s
``on_fit_start: some.module.function``) by importing its module and, later, calling it. A
``--config`` file (or a preset) may therefore only name:

a ``class_path`` under :data:`TRUSTED_PREFIXES`. Any other import path in a string value (one
under those prefixes, or whose first part is an importable top-level module:
``antigravity.geohash``, ``os.system``, ``kdbias.cli.main`` as a callable, a class given as a
plain string) must also be written on the command line itself, where the user sees it. Nothing is imported here:
only :func:`importlib.util.find_spec` of the top-level name (which runs no module code).

Reading is bounded (:func:`load_yaml`): regular files only (a named FIFO is refused
without blocking; a process-substitution pipe ``/dev/fd/N`` is read once and its text handed
to the parser), at most :data:`MAX_CONFIG_BYTES`, at most :data:`MAX_NODES` values with
every YAML alias expanded (the "billion laughs" alias bomb is refused before anything walks
it) and at most :data:`MAX_DEPTH` levels of nesting.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "TRUSTED_PREFIXES",
    "ConfigFileError",
    "check_config_classes",
    "check_names",
    "class_paths",
    "import_names",
    "load_yaml",
    "prepare_config_args",
    "read_config_file",
]

#: Class paths a configuration file may name without the user repeating them.
TRUSTED_PREFIXES = ("kdbias.", "lightning.pytorch.")
#: Bounds of a configuration file: bytes, values with aliases expanded, nesting levels.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64
_CONFIG_OPTIONS = ("--config", "-c")
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_PIPE_PREFIXES = ("/dev/fd/", "/proc/self/fd/", "/dev/stdin")
_FILE_SUFFIXES = (".yaml", ".yml", ".json")  # a value naming such a file is read by the parser


class ConfigFileError(ValueError):
    """A configuration file that is refused (unreadable kind, too large, too deep, or naming
    what it may not import): the message names the file, the cause and the fix."""


# --------------------------------------------------------------------------- bounded reading


def _is_pipe_path(path: str) -> bool:
    """Whether ``path`` names an inherited file descriptor (``<(...)`` process substitution)."""
    return path.startswith(_PIPE_PREFIXES)


def read_config_file(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> str:
    """The text of configuration file ``path``: a regular file, or an inherited pipe
    (``/dev/fd/N``, read once to its end), of at most ``limit`` bytes, UTF-8.

    ``FileNotFoundError`` when it does not exist; :class:`ConfigFileError` for a named FIFO,
    a folder or device, a file over ``limit`` or bytes that are not UTF-8."""
    path = str(path)
    info = os.stat(path)
    pipe = stat.S_ISFIFO(info.st_mode) and _is_pipe_path(path)
    if stat.S_ISDIR(info.st_mode):
        raise ConfigFileError(f"{path} is a folder, not a configuration file; give the path of a YAML file.")
    if not (stat.S_ISREG(info.st_mode) or pipe):
        raise ConfigFileError(
            f"{path} is not a regular file (a FIFO, socket or device): refused without reading, since it could "
            "block; write the configuration to a file (or pass it as --config <(...))."
        )
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | (0 if pipe else getattr(os, "O_NONBLOCK", 0))
    fd = os.open(path, flags)
    try:
        if not pipe and not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
            raise ConfigFileError(f"{path} is not a regular file; refused without reading.")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ConfigFileError(
            f"{path} is over the {limit}-byte limit of a configuration file; a kdbias configuration is a few KiB."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path} is not UTF-8 text; give a YAML configuration file.") from None


def _measure(root: yaml.Node) -> tuple[int, int]:
    """``(values, depth)`` of a composed YAML graph with every alias expanded, in time linear
    in the number of distinct nodes (memoised on node identity)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in size:
            continue
        if not done and key in visiting:  # an entry above its own unfinished visit: a descendant of itself
            raise ConfigFileError("an alias refers to the value that contains it")
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if not done:
            visiting.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in size)
            continue
        size[key] = min(1 + sum(size.get(id(c), 0) for c in children), MAX_NODES * 10)
        depth[key] = 1 + max((depth.get(id(c), 0) for c in children), default=0)
    return size[id(root)], depth[id(root)]


def load_yaml(text: str, source: str) -> Any:
    """``text`` parsed as plain YAML (no tags), refused with :class:`ConfigFileError` naming
    ``source`` when it is malformed, nested deeper than :data:`MAX_DEPTH` or holds more than
    :data:`MAX_NODES` values once its aliases are expanded."""
    loader = yaml.SafeLoader(text)  # the pure-Python composer: deep nesting is a RecursionError, not a crash
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            values, levels = _measure(node)
        except ConfigFileError as error:
            raise ConfigFileError(f"{source}: {error}; write the configuration out without it.") from None
        if values > MAX_NODES:
            raise ConfigFileError(
                f"{source} expands to more than {MAX_NODES} values (YAML aliases that reference each other); "
                "refused before it is read. Write the configuration out without nested aliases."
            )
        if levels > MAX_DEPTH:
            raise ConfigFileError(f"{source} is nested {levels} levels deep, over the limit of {MAX_DEPTH}.")
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigFileError(f"{source} is nested too deeply to read (over {MAX_DEPTH} levels).") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(f"{source} is not valid plain YAML: {' '.join(str(error).split())[:300]}") from None
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- what a file names


def class_paths(data: Any) -> Iterator[str]:
    """Every ``class_path`` value in a parsed YAML document (nested mappings and lists)."""
    for name, is_class_entry in import_names(data):
        if is_class_entry:
            yield name


def import_names(data: Any) -> Iterator[tuple[str, bool]]:
    """``(string, is_class_entry)`` for every ``class_path`` value and every other string
    value shaped like a dotted import path (``a.b``), in a parsed document."""
    stack, seen = [data], set()
    while stack:
        item = stack.pop()
        if isinstance(item, (dict, list)):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "class_path" and isinstance(value, str):
                    yield value, True
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and _IMPORT_PATH.fullmatch(item.strip()):
            yield item.strip(), False


def _importable(name: str) -> bool:
    """Whether the top-level module of ``name`` exists (found, not imported)."""
    try:
        return importlib.util.find_spec(name.split(".", 1)[0]) is not None
    except (ImportError, ValueError):
        return True  # cannot tell: treat as importable


def _typed(name: str, typed: Sequence[str]) -> bool:
    pattern = re.compile(rf"(?<![\w.]){re.escape(name)}(?![\w.])")
    return any(pattern.search(arg) for arg in typed)


def check_names(data: Any, source: str, typed: Sequence[str]) -> None:
    """:class:`ConfigFileError` when document ``data`` (from ``source``) names something to
    import or call that is not admitted (module docstring) and not written in ``typed``."""
    for name, is_class_entry in import_names(data):
        if "." not in name or _typed(name, typed):
            continue
        trusted = name.startswith(TRUSTED_PREFIXES)
        if is_class_entry:
            if trusted:
                continue
            raise ConfigFileError(
                f"{source} names class_path {name!r}, outside {' and '.join(TRUSTED_PREFIXES)}: it is not imported "
                "from a configuration file. Name it on the command line too (e.g. --trainer.callbacks+="
                f"{name}) if you mean it."
            )
        if not trusted and not _importable(name):
            continue  # data that looks dotted (best.ckpt), not a module path
        raise ConfigFileError(
            f"{source} names {name!r}, which the parser would import (and may call) as a function or class: it is "
            "not imported from a configuration file. Write the same value on the command line if you mean it."
        )


# --------------------------------------------------------------------------- the command line


def prepare_config_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``--config`` file, and every value naming a ``.yaml``/``.yml``/``.json``
    file or a pipe, read (bounded), parsed (bounded) and checked (:func:`check_names`) before
    the parser sees it; a pipe's text (``--config <(...)``) replaces its path, since a pipe can
    be read only once. A path that does not exist is
    left for the parser (which also takes YAML text typed in place of a path)."""
    argv = list(argv)
    typed = [a for i, a in enumerate(argv) if i == 0 or argv[i - 1] not in _CONFIG_OPTIONS]
    typed = [a for a in typed if not a.startswith("--config=")]
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] in _CONFIG_OPTIONS:
            out.append(_checked(arg, typed))
        elif arg.startswith("--config="):
            out.append("--config=" + _checked(arg.split("=", 1)[1], typed))
        elif arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            out.append(f"{key}={_checked_value(value, typed)}")
        else:
            out.append(_checked_value(arg, typed))
    return out


def _checked_value(value: str, typed: Sequence[str]) -> str:
    """A value naming a YAML or JSON file (or a pipe) is a configuration file too: the parser
    reads it for an argument of a class type (``--trainer.callbacks cb.yaml``)."""
    if value.startswith("-") or not (_is_pipe_path(value) or Path(value).suffix.lower() in _FILE_SUFFIXES):
        return value
    return _checked(value, [a for a in typed if a != value])


def _checked(value: str, typed: Sequence[str]) -> str:
    try:
        text = read_config_file(value)
    except (FileNotFoundError, NotADirectoryError):
        return value
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            return value  # YAML text given in place of a path

        raise ConfigFileError(f"{value} cannot be read ({error.strerror or error}); check the path.") from None
    check_names(load_yaml(text, value), value, typed)
    return text if _is_pipe_path(value) else value


def check_config_classes(argv: Sequence[str]) -> None:
    """:func:`prepare_config_args` without using its result (kept for callers that only check)."""
    prepare_config_args(argv)
