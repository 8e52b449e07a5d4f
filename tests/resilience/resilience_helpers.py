"""Shared pieces of the resilience tests (not a test module): command-line calls that must
fail cleanly, crafted files, run folders, TensorBoard readers, subprocess settings."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import FAST, TINY_ARGS
from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"


# --------------------------------------------------------------------------- command line


def smoke_args(name: str, runs_dir: Path, *extra: str) -> list[str]:
    """What :func:`helpers.run_experiment` passes: ``--smoke``, the runs folder, tiny and fast."""
    return ["--smoke", "--runs_dir", str(runs_dir), *FAST, *TINY_ARGS[name], *extra]


def cli_error(name: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``kdbias.cli.main(name, ...)`` must exit with status 2 and exactly one stderr line
    ``<name>.py: error: ...`` (no traceback); returns that line."""
    from kdbias.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(name, argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert stop.value.code == 2, (stop.value.code, captured.err[-2000:])
    assert len(lines) == 1, captured.err[-3000:]
    assert lines[0].startswith(f"{name}.py: error: "), lines[0]
    return lines[0]


def script(name: str) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / f"{name}.py")]


def script_env() -> dict[str, str]:
    """Environment of an ``experiments/*.py`` subprocess: offline, one thread, the repository
    and ``tests/`` importable (for ``--trainer.callbacks+=helpers.X``), no tracebacks."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    paths = [str(REPO), str(TESTS), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.pop("KDBIAS_TRACEBACK", None)
    env.pop("KDBIAS_RUN_DIR", None)
    return env


def error_lines(stderr: str, name: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{name}.py: error:")]


# --------------------------------------------------------------------------- run folders


def versions(runs_dir: Path, experiment: str) -> list[str]:
    """Names of the ``version_<n>`` folders of ``experiment``, sorted."""
    root = Path(runs_dir) / experiment
    return sorted(p.name for p in root.glob("version_*")) if root.is_dir() else []


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder``: ``{relative path: (size, mtime_ns, sha256)}``."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            stat = path.stat()
            out[path.relative_to(folder).as_posix()] = (
                stat.st_size,
                stat.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return out


def temporary_files(folder: Path) -> list[Path]:
    """Leftovers of an interrupted atomic write (``.<name>.*.tmp``) under ``folder``."""
    return sorted(p for p in Path(folder).rglob("*") if p.name.endswith(".tmp"))


def place_run(
    runs_dir: Path,
    experiment: str,
    checkpoint: Callable[[Path], Any],
    *,
    seed: int = 0,
    dataset: str = "digits",
    preset: str = "smoke",
    version: int = 0,
) -> Path:
    """A complete-looking run folder ``<runs_dir>/<experiment>/version_<n>``: ``config.yaml``
    (seed, dataset, preset), ``summary.json`` (complete, selecting ``checkpoints/best.ckpt``)
    and ``checkpoint(path)`` writing ``checkpoints/best.ckpt``. Returns the checkpoint path."""
    run_dir = Path(runs_dir) / experiment / f"version_{version}"
    (run_dir / "checkpoints").mkdir(parents=True)
    config = {"seed_everything": seed, "preset": preset, "data": {"dataset": dataset}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {
        "experiment": experiment,
        "dataset": dataset,
        "preset": preset,
        "seed": seed,
        "status": "complete",
        "selected_checkpoint": "checkpoints/best.ckpt",
        "test_acc": 0.5,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    path = run_dir / "checkpoints" / "best.ckpt"
    checkpoint(path)
    return path


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------- crafted files


class CodeOnLoad:
    """Unpickling this object runs ``touch <marker>``: proof that a loader ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


PAYLOADS = ("object", "in-hyper_parameters")


def write_payload(path: Path, kind: str, marker: Path) -> Path:
    """A ``torch.save`` file that runs code when unpickled without ``weights_only``:

    - ``object``: the payload object itself;
    - ``in-hyper_parameters``: a Lightning-like checkpoint dict (weights, loops, a
      TeacherModule's ``hyper_parameters``) with the payload inside ``hyper_parameters``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "object":
        torch.save(CodeOnLoad(marker), path)
    elif kind == "in-hyper_parameters":
        torch.save(
            {
                "epoch": 0,
                "global_step": 1,
                "pytorch-lightning_version": "2.6.0",
                "loops": {},
                "state_dict": {"model.fc.weight": torch.zeros(10, 16)},
                "hyper_parameters": {
                    "arch": "resnet18_cifar",
                    "dataset": "digits",
                    "num_classes": 10,
                    "arch_kwargs": CodeOnLoad(marker),
                },
            },
            path,
        )
    else:
        raise ValueError(kind)
    return path


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class HalfWrite:
    """A file object whose ``write`` stores half the bytes, then raises ENOSPC (a disk that
    fills up in the middle of a write)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: bytes) -> int:
        self._handle.write(bytes(data[: len(data) // 2]))
        self._handle.flush()
        raise enospc()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> HalfWrite:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.close()


def fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


# --------------------------------------------------------------------------- interrupted runs


def crash_at(epoch: int, batch: int = 0) -> list[str]:
    """Command-line arguments that add :class:`helpers.CrashAt` to a run."""
    return [
        "--trainer.callbacks+=helpers.CrashAt",
        f"--trainer.callbacks.epoch={epoch}",
        f"--trainer.callbacks.batch={batch}",
    ]


def interrupted_run(name: str, runs_dir: Path, *extra: str, epochs: int = 3, crash_epoch: int = 2) -> Path:
    """A ``name --smoke`` run planned for ``epochs`` epochs that crashed (a bug, not a bad
    input) at the first batch of epoch ``crash_epoch``: ``last.ckpt`` holds epoch
    ``crash_epoch - 1``, no summary. Returns its folder."""
    from helpers import SimulatedCrash, run_experiment

    with pytest.raises(SimulatedCrash):
        run_experiment(name, runs_dir, "--trainer.max_epochs", str(epochs), *extra, *crash_at(crash_epoch))
    run_dir = Path(runs_dir) / name / "version_0"
    assert load(run_dir / "checkpoints" / "last.ckpt")["epoch"] == crash_epoch - 1
    assert not (run_dir / "summary.json").exists()
    return run_dir


class FillDiskAt(Callback):
    """At the start of epoch ``epoch``, fill the file system of ``path`` by writing ``path``
    until ENOSPC (a disk that becomes full during a run)."""

    def __init__(self, path: str, epoch: int = 1) -> None:
        self.path, self.epoch = path, epoch

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch != self.epoch:
            return
        chunk = b"\0" * (64 * 1024)
        with open(self.path, "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
            try:
                while True:
                    handle.write(b"\0")
            except OSError:
                pass


class SignalAt(Callback):
    """Send ``signal`` (``"SIGTERM"``, ``"SIGINT"``) to this process at the start of training
    batch ``batch`` of epoch ``epoch``: what SLURM's time limit or a Ctrl-C does mid-run."""

    def __init__(self, signal: str = "SIGTERM", epoch: int = 1, batch: int = 0) -> None:
        self.signal, self.epoch, self.batch = signal, epoch, batch

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        import signal

        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), getattr(signal, self.signal))
