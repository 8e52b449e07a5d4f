"""``run_all --launcher slurm``: the job scripts SLURM receives, recorded by a stand-in ``sbatch``
on PATH (no cluster): one job per run, one task per GPU, --gres, afterok dependencies on the
teacher jobs, the USR2 requeue signal, srun, partition/account/time/CPUs/memory; the job
plan of --dry-run; the job records under runs/_jobs/slurm."""

from __future__ import annotations

import json
import os
import re

import pytest

from kdbias import runs

pytest.importorskip("submitit")

SBATCH = """#!/bin/sh
# stand-in sbatch: keep the script, answer like SLURM
n=$(ls "$RECORD" | wc -l)
id=$((1001 + n))
cp "$1" "$RECORD/job_$id.sh"
echo "Submitted batch job $id"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch_record"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        os.chmod(bin_dir / tool, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RECORD", str(record))
    return record


@pytest.fixture(scope="module")
def run_all():
    from kdbias.launch import run_all as module

    return module


def _sbatch_lines(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, flags=re.M))


def test_submission_scripts(run_all, fake_slurm, tmp_path, capsys):
    root = tmp_path / "runs"
    args = ["--smoke", "--seeds", "2", "--only", "teacher_resnet18", "exp1", "--runs_dir", str(root)]
    slurm = ["--launcher", "slurm", "--gpus_per_run", "2", "--partition", "gpu", "--account", "lab", "--time", "90"]
    assert run_all.main([*args, *slurm, "--cpus_per_task", "6", "--mem_gb", "48"]) == 0
    out = capsys.readouterr().out
    assert "teacher_resnet18 seed 0: job 1001" in out and "exp1 seed 1: job 1003" in out and "--status" in out
    scripts = {p.name: p.read_text() for p in sorted(fake_slurm.iterdir())}
    assert list(scripts) == ["job_1001.sh", "job_1002.sh", "job_1003.sh"]  # one job per run
    teacher, student = _sbatch_lines(scripts["job_1001.sh"]), _sbatch_lines(scripts["job_1002.sh"])
    assert teacher["ntasks-per-node"] == "2" and teacher["gres"] == "gpu:2" and teacher["nodes"] == "1"
    assert teacher["partition"] == "gpu" and teacher["account"] == "lab" and teacher["time"] == "90"
    assert teacher["cpus-per-task"] == "6" and teacher["mem"] == "48GB"
    assert teacher["signal"] == "USR2@120" and teacher["job-name"] == "kdbias-teacher_resnet18-seed0"
    assert "dependency" not in teacher
    assert student["dependency"] == "afterok:1001"  # both student seeds wait for the teacher job
    assert _sbatch_lines(scripts["job_1003.sh"])["dependency"] == "afterok:1001"
    assert re.search(r"^srun --unbuffered --output .*submitit.*", scripts["job_1002.sh"], flags=re.M)
    assert str(root / runs.JOBS_DIR / "slurm" / "submitit") in scripts["job_1002.sh"]
    # the record of each run: job id, log, the command the job runs (DDP over its 2 GPUs)
    record = json.loads((root / runs.JOBS_DIR / "slurm" / "exp1-seed1.json").read_text())
    assert record["job_id"] == "1003" and record["state"] == "submitted" and record["dependency"] == "afterok:1001"
    assert record["command"].startswith("python -m kdbias.run exp1 --smoke --seed_everything 1 --runs_dir ")
    assert record["command"].endswith("--trainer.accelerator gpu --trainer.devices 2 --trainer.num_nodes 1")
    assert record["log"].endswith("1003_0_log.out")
    # --status reads the records (sacct is not there: the recorded state)
    assert run_all.main([*args, "--status"]) == 0
    status = capsys.readouterr().out
    assert "queued     exp1 seed 1  job 1003; log: " in status and "3 queued" in status
    assert not any(p.name.startswith("version_") for p in root.rglob("*"))  # nothing ran here


def test_dry_run_prints_the_job_plan(run_all, tmp_path, capsys):
    root = tmp_path / "runs"
    args = ["--smoke", "--seeds", "1", "--only", "teacher_resnet18", "exp1", "--runs_dir", str(root)]
    assert run_all.main([*args, "--launcher", "slurm", "--dry-run", "--nodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "SLURM jobs (slurm): 2 node(s) x 1 GPU(s) (one task per GPU), 8 CPUs/task, 64 GB, 240 min" in out
    assert "job 1: kdbias-teacher_resnet18-seed0 (run): python -m kdbias.run teacher_resnet18 --smoke" in out
    assert "job 2: kdbias-exp1-seed0 (run, after job 1 succeed (afterok)): python -m kdbias.run exp1" in out
    assert "--trainer.devices 1 --trainer.num_nodes 2" in out and not root.exists()


def test_no_srun_is_one_line(run_all, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither sbatch nor srun
    args = ["--smoke", "--seeds", "1", "--only", "teacher_resnet18", "--runs_dir", str(tmp_path / "runs")]
    assert run_all.main([*args, "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run_all.py: error: ") and "srun" in err[0]
