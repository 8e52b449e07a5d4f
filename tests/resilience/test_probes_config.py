"""Configuration files run nothing: every import path a ``--config`` file names is checked
against the allow-list before anything is imported (callables only when the command line
writes them too), and reading is bounded (alias bombs, nesting, size, FIFOs), while a
process-substitution config still works."""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager

import pytest
import yaml
from resilience_helpers import cli_error, smoke_args, versions

from kdbias.config_files import (
    MAX_CONFIG_BYTES,
    ConfigFileError,
    check_names,
    load_yaml,
    prepare_config_args,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: 9 levels of 9 aliases each: 9**9 (387 million) strings once expanded, 600 bytes on disk.
ALIAS_BOMB = (
    "a: &a ["
    + ",".join(['"lol"'] * 9)
    + "]\n"
    + "".join(f"{b}: &{b} [" + ",".join([f"*{a}"] * 9) + "]\n" for a, b in zip("abcdefgh", "bcdefghi"))
)


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging) when the block takes longer than ``seconds``."""

    def expired(*_):
        raise AssertionError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def stand_in_antigravity(tmp_path, monkeypatch):
    """An ``antigravity`` module first on ``sys.path`` that leaves a marker when imported and
    another when its ``geohash`` is called; a stand-in browser on ``PATH`` leaves a third."""
    root = tmp_path / "modules"
    root.mkdir()
    markers = {key: tmp_path / f"{key}.marker" for key in ("imported", "called", "browser")}
    (root / "antigravity.py").write_text(
        f"open({str(markers['imported'])!r}, 'w').close()\n"
        f"def geohash(*args):\n    open({str(markers['called'])!r}, 'w').close()\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for browser in ("xdg-open", "firefox", "sensible-browser", "www-browser"):
        path = bin_dir / browser
        path.write_text(f"#!/bin/sh\ntouch {markers['browser']}\n")
        path.chmod(0o755)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("BROWSER", str(bin_dir / "firefox"))
    monkeypatch.delitem(sys.modules, "antigravity", raising=False)
    yield markers
    sys.modules.pop("antigravity", None)


def _lambda_config(tmp_path, function: str):
    path = tmp_path / "c.yaml"
    callback = {"class_path": "lightning.pytorch.callbacks.LambdaCallback", "init_args": {"on_fit_start": function}}
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    return path


def test_callable_in_a_config_file_is_never_imported(tmp_path, capsys, stand_in_antigravity):
    """The probe: ``LambdaCallback`` (an allowed class) with ``on_fit_start:
    antigravity.geohash``: exit 2, one line naming the file and the value, the module never
    imported, no browser started, nothing under ``runs/``."""
    config = _lambda_config(tmp_path, "antigravity.geohash")
    runs = tmp_path / "runs"
    line = cli_error("baseline", smoke_args("baseline", runs, "--config", str(config)), capsys)
    assert str(config) in line and "'antigravity.geohash'" in line and "command line" in line
    assert "antigravity" not in sys.modules
    assert not any(marker.exists() for marker in stand_in_antigravity.values())
    assert not runs.exists() or versions(runs, "baseline") == []


@pytest.mark.parametrize("form", ["--trainer.callbacks", "--trainer.callbacks+="])
def test_yaml_file_given_as_a_value_is_checked_too(tmp_path, capsys, stand_in_antigravity, form):
    """jsonargparse reads a YAML file named as the value of a class-typed argument
    (``--trainer.callbacks cb.yaml``): that file is checked like a ``--config`` file."""
    callback = {"class_path": "lightning.pytorch.callbacks.LambdaCallback"}
    callback["init_args"] = {"on_fit_start": "antigravity.geohash"}
    path = tmp_path / "cb.yaml"
    path.write_text(yaml.safe_dump(callback))
    extra = [form, str(path)] if not form.endswith("=") else [f"{form}{path}"]
    line = cli_error("baseline", smoke_args("baseline", tmp_path / "runs", *extra), capsys)
    assert str(path) in line and "'antigravity.geohash'" in line
    assert "antigravity" not in sys.modules and not any(m.exists() for m in stand_in_antigravity.values())


def test_callable_under_a_trusted_prefix_is_refused_too(tmp_path, capsys):
    """Trusted prefixes admit classes, not functions: ``kdbias.cli.main`` as a callback's hook
    would be called at fit start."""
    config = _lambda_config(tmp_path, "kdbias.cli.main")
    line = cli_error("baseline", smoke_args("baseline", tmp_path / "runs", "--config", str(config)), capsys)
    assert "'kdbias.cli.main'" in line


def test_what_a_file_may_name():
    """Admitted: trusted class paths, dotted data that is no module (a checkpoint or timm weights
    name), anything the command line writes too. Refused: other modules' names, and any plain
    string under the trusted prefixes (the parser would import it and may call it)."""
    ok = {
        "model": {"teacher": {"class_path": "kdbias.teacher.RandomTeacher", "init_args": {"arch": "resnet18_cifar"}}},
        "trainer": {"callbacks": [{"class_path": "lightning.pytorch.callbacks.EarlyStopping"}]},
        "data": {"name": "best.ckpt", "weights": "vit_small_patch14_dinov2.lvd142m"},
    }
    check_names(ok, "c.yaml", [])
    refused = ({"x": "os.system"}, {"x": [{"y": "antigravity.geohash"}]}, {"x": {"class_path": "this.Nothing"}})
    refused += ({"x": "lightning.pytorch.cli.LightningCLI"},)  # a trusted class as a plain string: a callable
    for bad in refused:
        with pytest.raises(ConfigFileError, match="c.yaml names"):
            check_names(bad, "c.yaml", [])
    check_names({"x": "os.system"}, "c.yaml", ["--trainer.callbacks.on_fit_start=os.system"])
    with pytest.raises(ConfigFileError):  # a longer name on the command line does not admit a prefix of it
        check_names({"x": "os.sys"}, "c.yaml", ["--x=os.system"])


def test_alias_bomb_is_refused_within_seconds(tmp_path, capsys):
    """The "billion laughs" YAML: exit 2 in well under 10 s, before anything walks it."""
    config = tmp_path / "bomb.yaml"
    config.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 700
    start = time.perf_counter()
    with deadline(10):
        line = cli_error("baseline", smoke_args("baseline", tmp_path / "runs", "--config", str(config)), capsys)
    assert time.perf_counter() - start < 10
    assert "expands to more than" in line and str(config) in line


@pytest.mark.parametrize(
    "text, says",
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ("a: " + "{b: " * 80 + "1" + "}" * 80, "levels deep"),
        ("a: &a [*a]\n", "refers to the value that contains it"),
        ("a: !!python/object/apply:os.system [touch x]\n", "not valid plain YAML"),
        ("a: [1\n", "not valid plain YAML"),
    ],
    ids=["200000-deep", "80-deep", "self-alias", "python-tag", "malformed"],
)
def test_unbounded_yaml_is_one_line(tmp_path, capsys, text, says):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with deadline(20):
        line = cli_error("baseline", smoke_args("baseline", tmp_path / "runs", "--config", str(config)), capsys)
    assert says in line and str(config) in line


def test_oversized_and_non_utf8_files_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigFileError, match="byte limit"):
        prepare_config_args(["--config", str(big)])
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: \xe9\n")
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        prepare_config_args([f"--config={latin}"])
    with pytest.raises(ConfigFileError, match="is a folder"):
        prepare_config_args(["--config", str(tmp_path)])


def test_fifo_config_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    with deadline(10):
        line = cli_error("baseline", smoke_args("baseline", tmp_path / "runs", "--config", str(fifo)), capsys)
    assert "not a regular file" in line and str(fifo) in line


@contextmanager
def _pipe(text: str):
    """``/dev/fd/N`` of a pipe holding ``text`` whose writer is closed (what ``<(printf ...)`` gives)."""
    read, write = os.pipe()
    os.write(write, text.encode())
    os.close(write)
    try:
        yield f"/dev/fd/{read}"
    finally:
        os.close(read)


def test_process_substitution_config_is_read_once_and_handed_on():
    """``--config <(printf ...)`` is a pipe (``/dev/fd/N``): read once, its text handed to the
    parser in place of the path; the parser then applies it."""
    from kdbias import registry
    from kdbias.cli import KDBiasCLI

    text = "trainer:\n  max_epochs: 7\n"
    with _pipe(text) as path:
        assert prepare_config_args(["--config", path]) == ["--config", text]
    with _pipe(text) as path:
        config = KDBiasCLI(registry.get("baseline"), ["--smoke", "--config", path], parse_only=True).config
    assert config.trainer.max_epochs == 7


def test_saved_config_alias_bomb_is_ignored_with_a_reason(tmp_path):
    """A run's ``config.yaml`` (read on ``--resume`` and by the lookups) is bounded the same way."""
    from kdbias.runs import read_config_checked

    (tmp_path / "config.yaml").write_text(ALIAS_BOMB)
    start = time.perf_counter()
    config, why = read_config_checked(tmp_path)
    assert config is None and "expands to more than" in why
    assert time.perf_counter() - start < 5


def test_load_yaml_reads_ordinary_aliases():
    """Bounded is not crippled: a few aliases and ordinary nesting load as ``yaml.safe_load`` does."""
    text = "base: &b {lr: 0.1, wd: 0.05}\nrun: {optim: *b, epochs: [1, 2, 3]}\n"
    assert load_yaml(text, "x.yaml") == yaml.safe_load(text)


@pytest.mark.subprocess
def test_real_script_never_imports_antigravity(tmp_path):
    """The probe as a user meets it: ``experiments/baseline.py --config c.yaml`` with the real
    standard-library ``antigravity`` and stand-in browsers (``BROWSER`` and on ``PATH``): exit 2,
    one error line, no browser started, nothing under ``runs/``."""
    import subprocess

    from resilience_helpers import error_lines, script, script_env

    marker = tmp_path / "browser-started"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for browser in ("xdg-open", "firefox", "sensible-browser", "www-browser", "x-www-browser"):
        (bin_dir / browser).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (bin_dir / browser).chmod(0o755)
    env = script_env()
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", BROWSER=str(bin_dir / "firefox"), DISPLAY=":0")
    config = _lambda_config(tmp_path, "antigravity.geohash")
    runs = tmp_path / "runs"
    done = subprocess.run(
        [*script("baseline"), *smoke_args("baseline", runs, "--config", str(config))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(error_lines(done.stderr, "baseline")) == 1 and "Traceback" not in done.stderr
    assert not marker.exists() and not runs.exists()
