"""A run started as a fork of the launcher behaves as ``python script args`` in a new process."""

from __future__ import annotations

import signal
import time

from kdbias.launch.fork import can_fork, fork_start
from kdbias.launch.local import exit_reason

SCRIPT = """
import os, sys
print("args", sys.argv[1:], "env", os.environ.get("KDBIAS_FORK_TEST"), "main", __name__)
print("to stderr", file=sys.stderr)
mode = sys.argv[1]
if mode == "exit2":
    raise SystemExit(2)
if mode == "raise":
    raise ValueError("a bug shows its traceback")
if mode == "sleep":
    import time
    time.sleep(60)
"""


def _run(tmp_path, mode: str):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    process = fork_start(["python", str(script), mode], env={"KDBIAS_FORK_TEST": "yes"})
    return process


def test_output_arguments_environment_and_exit_codes(tmp_path):
    assert can_fork()
    for mode, code in (("ok", 0), ("exit2", 2), ("raise", 1)):
        process = _run(tmp_path, mode)
        out = process.stdout.read()
        assert process.wait() == code and process.poll() == code
        assert f"args ['{mode}'] env yes main __main__" in out and "to stderr" in out
        assert ("Traceback" in out and "ValueError: a bug shows its traceback" in out) == (mode == "raise")


def test_a_killed_fork_reads_as_a_killed_process(tmp_path):
    process = _run(tmp_path, "sleep")
    assert process.stdout.readline().startswith("args ['sleep']")
    assert process.poll() is None
    process.kill()
    deadline = time.time() + 10
    while process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.returncode == -signal.SIGKILL
    assert "killed" in exit_reason(process.returncode)
