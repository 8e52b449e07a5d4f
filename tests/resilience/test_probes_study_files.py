"""Study files are configuration files too: ``python -m kdbias.run --study BAD exp1 --smoke`` and
``run_all --study BAD --dry-run`` on an alias bomb, a FIFO, a module outside ``kdbias.`` /
``lightning.pytorch.``, an unknown key and a row naming an unknown teacher: exit 2 within
seconds, one stderr line naming the file, nothing imported, nothing under ``runs/``. And
``experiments/baseline.py --config`` an alias bomb, end to end: exit 2 within 10 s."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml
from resilience_helpers import REPO, script, script_env
from test_probes_config import ALIAS_BOMB, deadline

from kdbias import registry

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: A stand-in ``antigravity`` (the real one opens a web browser): importing it leaves a marker.
STAND_IN = "import pathlib, os\npathlib.Path(os.environ['MARKER']).write_text('imported')\n"


def _row(**fields) -> dict:
    return {"name": "my_student", "module": "kdbias.modules.KLDistillModule", "pieces": ["student", "soft_kl"],
            **fields}  # fmt: skip


STUDIES = {
    "alias-bomb": (ALIAS_BOMB, "expands to more than"),
    "fifo": (None, "not a regular file"),
    "module-outside": (
        yaml.safe_dump({"study": "mine", "rows": [_row(module="antigravity.Something")]}),
        "module 'antigravity.Something' must be a class path under kdbias. or lightning.pytorch.",
    ),
    "unknown-key": (yaml.safe_dump({"study": "mine", "rowz": [_row()]}), "unknown key(s) rowz"),
    "unknown-row-key": (yaml.safe_dump({"study": "mine", "rows": [_row(teachr="x")]}), "unknown key(s) teachr"),
    "unknown-teacher": (
        yaml.safe_dump({"study": "mine", "include": ["plan"], "rows": [_row(teacher="no_such_teacher")]}),
        "teacher names no_such_teacher, which no row declares",
    ),
}
#: What runs (a module or a script) and its arguments (``STUDY``: the study file).
COMMANDS = {
    "kdbias.run": ("kdbias.run", ["--study", "STUDY", "exp1", "--smoke"], "kdbias.run: error: "),
    "run_all": (str(REPO / "experiments" / "run_all.py"), ["--study", "STUDY", "--smoke", "--dry-run"],
                "run_all.py: error: "),
}  # fmt: skip
#: The command in a process that then says whether ``antigravity`` was ever imported.
PROBE = """import runpy, sys
target, sys.argv = sys.argv[1], sys.argv[1:]
try:
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
finally:
    print("antigravity imported" if "antigravity" in sys.modules else "antigravity never imported")
"""


def _study(tmp_path, case):
    """The bad study file of ``case`` (and its expected words), and a stand-in ``antigravity``
    folder whose import would leave ``tmp_path/marker``."""
    text, says = STUDIES[case]
    study = tmp_path / "study.yaml"
    if text is None:
        os.mkfifo(study)  # nobody writes: reading it would block for ever
    else:
        study.write_text(text)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "antigravity.py").write_text(STAND_IN)
    return study, says, fake, tmp_path / "marker"


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(STUDIES))
def test_a_bad_study_file_is_one_line(tmp_path, monkeypatch, capsys, case, command):
    """In this process (fast): exit 2, one line naming the file, nothing imported or written."""
    study, says, fake, marker = _study(tmp_path, case)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.setenv("MARKER", str(marker))
    target, args, prog = COMMANDS[command]
    argv = [str(study) if a == "STUDY" else a for a in args]
    before = registry.active()
    start = time.perf_counter()
    with deadline(30):  # an unbounded read would hang (a FIFO) or walk 9**9 values for hours
        if command == "kdbias.run":
            from kdbias.run import main

            with pytest.raises(SystemExit) as stop:
                main(argv)
            code = stop.value.code
        else:
            from kdbias.launch.run_all import main

            code = main(argv)
    took = time.perf_counter() - start
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(prog), lines
    assert str(study) in lines[0] and says in lines[0], lines[0]
    assert took < 30, f"{case}: {took:.1f} s"
    assert "antigravity" not in sys.modules and not marker.exists()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "RESULTS.md").exists()
    assert registry.active() is before  # the refused study never became the active one


@pytest.mark.parametrize(
    "command, case",
    [
        ("kdbias.run", "module-outside"),
        pytest.param("run_all", "module-outside", marks=pytest.mark.slow),
        pytest.param("kdbias.run", "alias-bomb", marks=pytest.mark.slow),
        pytest.param("run_all", "alias-bomb", marks=pytest.mark.slow),
        pytest.param("run_all", "fifo", marks=pytest.mark.slow),
    ],
)
def test_a_bad_study_file_in_its_own_process(tmp_path, case, command):
    """The commands as typed (each its own process, which then says whether ``antigravity`` was
    ever imported): exit 2, one line, within 30 s on a shared machine (importing Lightning
    dominates), no marker, nothing under runs/."""
    study, says, fake, marker = _study(tmp_path, case)
    env = script_env()
    env.update(MARKER=str(marker), PYTHONPATH=os.pathsep.join([str(fake), env["PYTHONPATH"]]))
    target, args, prog = COMMANDS[command]
    cmd = [sys.executable, "-c", PROBE, target, *[str(study) if a == "STUDY" else a for a in args]]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - start
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(prog), done.stderr[-2000:]
    assert str(study) in lines[0] and says in lines[0], lines[0]
    assert took < 30, f"{case}: {took:.1f} s"
    assert "antigravity never imported" in done.stdout and not marker.exists()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "RESULTS.md").exists()


def test_alias_bomb_config_end_to_end_is_one_line(tmp_path):
    """``python experiments/baseline.py --config bomb.yaml`` (600 bytes, 9**9 values): exit 2,
    one line, nothing under runs/. The check itself takes milliseconds (``test_probes_config``);
    the process's time is Python and Lightning starting: 8.3 s on a shared 2-core machine (load
    2.7), hence the loose 30 s bound here and the README's figure."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    start = time.perf_counter()
    done = subprocess.run(
        [*script("baseline"), "--config", str(bomb)],
        cwd=tmp_path,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.perf_counter() - start
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("baseline.py: error: ") and "expands to more than" in lines[0]
    assert took < 30, f"{took:.1f} s"
    assert not (tmp_path / "runs").exists() and REPO.is_dir()
