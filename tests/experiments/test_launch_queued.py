"""``run_all --launcher slurm`` twice: a run whose SLURM job is queued or training is planned
"running elsewhere" and never submitted again; a job that ended without a complete run is
planned again. SLURM is a stand-in ``sbatch`` (and ``sacct``) on PATH, or records written here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from kdbias.launch import records
from kdbias.launch.plan import plan_matrix

submitit = pytest.importorskip("submitit")

SBATCH = """#!/bin/sh
n=$(ls "$RECORD" | wc -l)
id=$((1001 + n))
cp "$1" "$RECORD/job_$id.sh"
echo "Submitted batch job $id"
"""
# sacct -o JobID,State,NodeList --parsable2 -j ID ...: every job in state $SACCT_STATE
SACCT = """#!/bin/sh
echo "JobID|State|NodeList"
while [ $# -gt 0 ]; do
  if [ "$1" = "-j" ]; then echo "$2|$SACCT_STATE|node1"; shift; fi
  shift
done
"""
ONLY = ["--only", "teacher_resnet18", "exp1"]


@pytest.fixture
def slurm_bin(tmp_path, monkeypatch):
    """A stand-in ``sbatch`` (keeps each script in ``sbatch_record/``), ``srun`` and ``sacct``
    (``SACCT_STATE``; unset: no sacct on PATH). submitit's cached job states are cleared."""
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch_record"
    bin_dir.mkdir()
    record.mkdir()
    for tool, text in (("sbatch", SBATCH), ("srun", "#!/bin/sh\nexit 0\n")):
        (bin_dir / tool).write_text(text)
        os.chmod(bin_dir / tool, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RECORD", str(record))
    submitit.SlurmJob.watcher.clear()
    yield record
    submitit.SlurmJob.watcher.clear()


def with_sacct(bin_dir, monkeypatch, state: str) -> None:
    (bin_dir / "sacct").write_text(SACCT)
    os.chmod(bin_dir / "sacct", 0o755)
    monkeypatch.setenv("SACCT_STATE", state)


def _run_all(*argv: str) -> int:
    from kdbias.launch.run_all import main

    return main(list(argv))


def _dependency(script: str) -> str | None:
    found = re.search(r"^#SBATCH --dependency=(.*)$", script, flags=re.M)
    return found.group(1) if found else None


def test_a_second_run_all_submits_nothing_twice(slurm_bin, tmp_path, capsys):
    """Submit teacher + exp1 seed 0; again (no sacct: the records' word): no job, and it says
    which jobs are queued; with ``--seeds 2``: only exp1 seed 1, after the queued teacher job."""
    root = tmp_path / "runs"
    base = ["--smoke", *ONLY, "--runs_dir", str(root), "--launcher", "slurm"]
    assert _run_all(*base, "--seeds", "1") == 0
    assert sorted(p.name for p in slurm_bin.iterdir()) == ["job_1001.sh", "job_1002.sh"]
    capsys.readouterr()
    assert _run_all(*base, "--seeds", "1") == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in slurm_bin.iterdir()) == ["job_1001.sh", "job_1002.sh"]  # nothing resubmitted
    assert "2 running elsewhere, 0 to train" in out
    assert "teacher_resnet18 seed 0 is queued or training as SLURM job 1001 (submitted, by its record" in out
    assert "exp1 seed 0 is queued or training as SLURM job 1002" in out and "not submitted again" in out
    assert _run_all(*base, "--seeds", "1", "--status") == 0  # a planned-elsewhere run without a folder
    status = capsys.readouterr().out
    assert "queued     exp1 seed 0  job 1002; log: " in status and "2 queued" in status
    assert _run_all(*base, "--seeds", "2") == 0
    scripts = sorted(slurm_bin.iterdir())
    assert [p.name for p in scripts] == ["job_1001.sh", "job_1002.sh", "job_1003.sh"]
    assert _dependency(scripts[2].read_text()) == "afterok:1001"  # the earlier run_all's teacher job
    record = records.read_record(root, "slurm", "exp1-seed1")
    assert record["job_id"] == "1003" and record["argv"][:4] == ["--smoke", "--seed_everything", "1", "--runs_dir"]
    assert not any(p.name.startswith("version_") for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("state", "planned"),
    [
        ("PENDING", "running"),
        ("RUNNING", "running"),
        ("REQUEUED", "running"),
        ("FAILED", "run"),
        ("CANCELLED by 4242", "run"),
        ("TIMEOUT", "run"),
        ("COMPLETED", "run"),  # ended, and no complete run: planned again
    ],
)
def test_submitits_job_state_decides(slurm_bin, tmp_path, monkeypatch, state, planned):
    root = tmp_path / "runs"
    with_sacct(tmp_path / "bin", monkeypatch, state)
    run = plan_matrix(root, seeds=1, smoke=True, only=["teacher_resnet18"])[0]
    assert run.action == "run"
    records.write_record(root, "slurm", run.slug, state="submitted", job_id="1001", folder=str(tmp_path / "j"),
                         argv=list(run.argv))  # fmt: skip
    assert plan_matrix(root, seeds=1, smoke=True, only=["teacher_resnet18"])[0].action == planned
    (line,) = [line for line in records.status_lines([run], root) if "teacher_resnet18" in line]
    word = state.split()[0]
    job = records.queued_job(root, run.slug, run.argv)
    if planned == "running":
        assert records.describe_job(job) == f"SLURM job 1001 ({word}; record {root}/_jobs/slurm/{run.slug}.json)"
    else:
        assert job is None
    expected = {"running": f"queued     teacher_resnet18 seed 0  job 1001 ({word})"}.get(planned, "failed ")
    assert line.strip().startswith(expected.strip()), line


def test_the_records_word_without_sacct(slurm_bin, tmp_path):
    """No sacct: ``submitted``/``queued``/``running`` records plan "running elsewhere"; ``done``,
    ``failed`` and ``blocked`` ones plan the run; a record of other arguments is another run."""
    root = tmp_path / "runs"
    run = plan_matrix(root, seeds=1, smoke=True, only=["teacher_resnet18"])[0]

    def planned(**fields):
        path = records.jobs_dir(root, "slurm") / f"{run.slug}.json"
        path.unlink(missing_ok=True)
        records.write_record(root, "slurm", run.slug, job_id="7", folder=str(tmp_path / "j"), **fields)
        return plan_matrix(root, seeds=1, smoke=True, only=["teacher_resnet18"])[0].action

    for state in ("submitted", "queued", "running"):
        assert planned(state=state, argv=list(run.argv)) == "running", state
        assert planned(state=state) == "running", state  # an older record without argv
    for state in ("done", "failed", "blocked"):
        assert planned(state=state, argv=list(run.argv)) == "run", state
    other = [*run.argv, "--model.lr", "0.1"]
    assert planned(state="submitted", argv=other) == "run"
    resumed = [*run.argv, "--resume"]  # a requeued job's arguments: the same run
    assert planned(state="submitted", argv=resumed) == "running"


def test_local_and_debug_executor_records(slurm_bin, tmp_path):
    """submitit's local executor: the job id is its process; alive means running, gone means
    ended (planned again). A debug job ran inside a run_all that has ended."""
    root = tmp_path / "runs"
    run = plan_matrix(root, seeds=1, smoke=True, only=["teacher_resnet18"])[0]
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for executor, job_id, planned in (
        ("local", str(os.getpid()), "running"),
        ("local", ended.stdout.strip(), "run"),
        ("debug", "DEBUG_1", "run"),
    ):
        records.write_record(root, "slurm", run.slug, state="submitted", job_id=job_id, executor=executor,
                             folder=str(tmp_path / "j"), argv=list(run.argv))  # fmt: skip
        assert plan_matrix(root, seeds=1, smoke=True, only=["teacher_resnet18"])[0].action == planned, executor


def test_a_student_of_a_queued_teacher_with_the_local_executor_is_blocked(slurm_bin, tmp_path, capsys):
    """Without SLURM dependencies a student cannot wait for another run_all's job: not submitted."""
    root = tmp_path / "runs"
    teacher = plan_matrix(root, seeds=1, smoke=True, only=["teacher_resnet18"])[0]
    records.write_record(root, "slurm", teacher.slug, state="submitted", job_id=str(os.getpid()), executor="local",
                         folder=str(tmp_path / "j"), argv=list(teacher.argv))  # fmt: skip
    args = ["--smoke", "--seeds", "1", *ONLY, "--runs_dir", str(root), "--out", str(tmp_path / "R.md")]
    args += ["--launcher", "slurm", "--executor", "local"]
    assert _run_all(*args) == 1
    assert "exp1 seed 0: not submitted" in capsys.readouterr().out
    record = json.loads((records.jobs_dir(root, "slurm") / "exp1-seed0.json").read_text())
    assert record["state"] == "blocked" and "teacher_resnet18:0" in record["reason"]
    assert not (root / "exp1").exists()


def test_slurm_settings_from_run_alls_flags():
    """One owner per default: run_all's flags left out give ``SlurmSettings()``; given, each
    lands in its field."""
    from kdbias.launch.run_all import build_parser
    from kdbias.launch.slurm import SlurmSettings

    assert SlurmSettings.from_args(build_parser().parse_args([])) == SlurmSettings()
    flags = "--partition gpu --account lab --time 90 --gpus_per_run 4 --nodes 2 --cpus_per_task 6 --mem_gb 48 "
    flags += "--signal_delay_s 300 --max_requeues 0 --executor local"
    expected = SlurmSettings("gpu", "lab", 90, 4, 2, 6, 48, 300, 0, "local")
    assert SlurmSettings.from_args(build_parser().parse_args(flags.split())) == expected
    assert SlurmSettings.from_args(build_parser().parse_args(["--gpus_per_run", "0"])).gpus_per_run == 0
