"""``kdbias.console``: the library's lines reach the terminal the commands print to."""

import logging
import sys

from kdbias import console


def test_kdbias_logger_writes_bare_lines_to_the_current_streams(capsys):
    console.log_to_console()
    console.log_to_console()  # idempotent: one handler, one line per record
    handlers = [h for h in logging.getLogger("kdbias").handlers if isinstance(h, console._ConsoleHandler)]
    assert len(handlers) == 1
    logging.getLogger("kdbias.callbacks.base").info("[analytics] epoch 1: X done in 0.1 s")
    logging.getLogger("kdbias.resume").warning("something to fix")
    logging.getLogger("kdbias.runner").debug("not shown at INFO")
    out, err = capsys.readouterr()
    assert out == "[analytics] epoch 1: X done in 0.1 s\n"
    assert err == "something to fix\n"


def test_emit_one_line_and_durations(capsys):
    console.emit("result")
    console.emit("bad: fix it", file=sys.stderr)
    assert capsys.readouterr() == ("result\n", "bad: fix it\n")
    assert console.one_line("a\n  b\tc") == "a b c"
    assert [console.format_duration(s) for s in (-1, 42, 210, 9000)] == ["0.0 s", "42.0 s", "3.5 min", "2.50 h"]
