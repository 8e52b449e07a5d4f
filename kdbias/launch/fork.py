"""Start a matrix run as a fork of the launcher, its imports already done (CPU smoke runs).

A run started as ``python experiments/<name>.py`` spends about 6 s of a 30 s smoke run
importing torch, Lightning, timm and their dependencies before it reads its first argument.
The launcher has imported all of them already, so :func:`fork_start` forks it: the child
is a process of its own (a crash, a ``SystemExit`` or an out-of-memory kill ends it alone),
runs the script as ``__main__`` with the run's arguments and environment, and writes its
output into a pipe that the launcher reads as it reads a subprocess's. It stands in for
``subprocess.Popen`` in :func:`kdbias.launch.local.run_local` (``start=``).

Only where a fork is safe: CUDA not initialised in the launcher (a forked child cannot use
it), on a platform with ``os.fork``; :func:`can_fork` says so. In the child, standard output
and error are new objects on the pipe (a lock another launcher thread held at the fork is not
inherited) and the intra-op thread count follows the run's ``OMP_NUM_THREADS``. The child ends
with ``os._exit`` (the launcher's exit handlers are not its own): a run closes its files itself.
"""

from __future__ import annotations

import io
import os
import runpy
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from kdbias.console import emit

__all__ = ["ForkedRun", "can_fork", "fork_start"]


def can_fork() -> bool:
    """Whether :func:`fork_start` may be used here: ``os.fork`` exists and CUDA is not initialised."""
    if not hasattr(os, "fork"):
        return False
    torch = sys.modules.get("torch")
    return torch is None or not torch.cuda.is_initialized()


class ForkedRun:
    """The launcher's side of a forked run: the ``subprocess.Popen`` calls ``run_local`` makes
    (``pid``, ``stdout`` (text lines), ``poll``, ``wait``, ``terminate``, ``kill``,
    ``returncode``: the exit status, or ``-signal`` as ``Popen`` reports it)."""

    def __init__(self, pid: int, read_fd: int) -> None:
        self.pid = pid
        self.stdout = open(read_fd, encoding="utf-8", errors="replace", buffering=1)
        self.returncode: int | None = None

    def _reap(self, flags: int) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, flags)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        code = self._reap(0)
        assert code is not None
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_start(command: Sequence[str], env: Mapping[str, str] | None = None, **_: Any) -> ForkedRun:
    """Fork and run ``command`` (``[python, script, *args]`` or ``[python, "-m", module, *args]``)
    in the child as ``python`` would, with ``env`` as its environment; the other ``Popen`` arguments
    are implied (stdout and stderr into one text pipe, line-buffered)."""
    module = str(command[2]) if str(command[1]) == "-m" else None
    script, args = (
        (module, [str(a) for a in command[3:]]) if module else (str(command[1]), [str(a) for a in command[2:]])
    )
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        _child(script, args, dict(os.environ if env is None else env), write_fd, module is not None)
    os.close(write_fd)
    return ForkedRun(pid, read_fd)


def _child(script: str, args: list[str], env: dict[str, str], write_fd: int, module: bool = False) -> None:
    code = 1
    try:
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", line_buffering=True)
        os.environ.clear()
        os.environ.update(env)
        threads = env.get("OMP_NUM_THREADS")
        if threads and threads.isdigit() and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: KeyboardInterrupt, as in a new python
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if module:
            sys.argv = [script, *args]
            runpy.run_module(script, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [script, *args]
            sys.path[0] = os.path.dirname(os.path.abspath(script))
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, (int, type(None))):
            emit(str(done.code), file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
