"""Run folders never collide, and a run that fails at start-up leaves none behind.

``runs.claim_run_dir`` claims ``version_<n>`` with an exclusive ``mkdir``: runs started
together (threads, processes, two real scripts) get distinct folders. A run that stops
before its first checkpoint removes its folder, so numbers are not consumed by failures.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import threading

import pytest
import yaml
from helpers import SimulatedCrash, run_experiment
from resilience_helpers import REPO, cli_error, crash_at, script, script_env, smoke_args, snapshot, versions

from kdbias import runs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.subprocess
def test_two_scripts_started_together_get_their_own_folders(tmp_path):
    """Two ``experiments/baseline.py --smoke`` processes on one ``--runs_dir`` at once:
    ``version_0`` and ``version_1``, each with its own complete summary (told apart by seed)."""
    root = tmp_path / "runs"
    logs = {seed: (tmp_path / f"out{seed}.txt", tmp_path / f"err{seed}.txt") for seed in (1, 2)}
    procs = {}
    for seed, (out, err) in logs.items():
        with out.open("w") as stdout, err.open("w") as stderr:
            args = script("baseline") + smoke_args("baseline", root, "--seed_everything", str(seed))
            procs[seed] = subprocess.Popen(args, cwd=REPO, env=script_env(), stdout=stdout, stderr=stderr)
    for proc in procs.values():
        proc.wait(timeout=300)
    outputs = {seed: (out.read_text(), err.read_text()) for seed, (out, err) in logs.items()}
    for seed, proc in procs.items():
        assert proc.returncode == 0, outputs[seed][0][-2000:] + outputs[seed][1][-3000:]
    assert versions(root, "baseline") == ["version_0", "version_1"]
    seeds, pids = set(), set()
    for run_dir in (root / "baseline").iterdir():
        summary = json.loads((run_dir / "summary.json").read_text())
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert summary["status"] == "complete" and summary["seed"] == config["seed_everything"]
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        writers = {path.name.split(".")[-2] for path in run_dir.glob("events.out.tfevents.*")}
        assert len(writers) == 1, writers  # every events file of a folder from one process (its pid)
        pids.update(writers)
        seeds.add(summary["seed"])
        printed = [seed for seed, (out, _) in outputs.items() if f"Run directory: {run_dir} " in out]
        assert printed == [summary["seed"]]  # the process with that seed wrote that folder
    assert seeds == {1, 2} and len(pids) == 2


def test_claim_run_dir_from_many_threads_gives_distinct_folders(tmp_path):
    n = 16
    barrier, claimed, lock = threading.Barrier(n), [], threading.Lock()

    def claim():
        barrier.wait()
        path = runs.claim_run_dir(tmp_path, "exp1")
        with lock:
            claimed.append(path)

    threads = [threading.Thread(target=claim) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(claimed) == n and len(set(claimed)) == n
    assert sorted(p.name for p in claimed) == sorted(f"version_{i}" for i in range(n))
    assert all(p.is_dir() for p in claimed)


def _claim_in_process(root: str, barrier, queue) -> None:
    barrier.wait()
    queue.put(str(runs.claim_run_dir(root, "baseline")))


@pytest.mark.subprocess
def test_claim_run_dir_from_many_processes_gives_distinct_folders(tmp_path):
    n = 6
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(n), context.Queue()
    procs = [context.Process(target=_claim_in_process, args=(str(tmp_path), barrier, queue)) for _ in range(n)]
    for proc in procs:
        proc.start()
    claimed = [queue.get(timeout=60) for _ in range(n)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert sorted(claimed) == sorted(str(tmp_path / "baseline" / f"version_{i}") for i in range(n))


STARTUP_FAILURES = {
    "bad-flag-value": ("baseline", ["--trainer.max_epochs", "0"], "trainer.max_epochs"),
    "missing-teacher": ("exp1", [], "no complete teacher_resnet18 run"),
    "accelerator-gpu": ("baseline", ["--trainer.accelerator", "gpu"], "gpu"),
}


@pytest.mark.parametrize("case", list(STARTUP_FAILURES))
def test_startup_failure_leaves_no_version_folder(tmp_path, capsys, case):
    """Next to an existing ``version_0``: the failing run leaves it untouched, adds no folder,
    and the next good run is ``version_1``."""
    name, extra, expected = STARTUP_FAILURES[case]
    root = tmp_path / "runs"
    existing = root / name / "version_0"
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("an earlier run")
    before = snapshot(existing)
    line = cli_error(name, smoke_args(name, root, *extra), capsys)
    assert expected in line
    assert versions(root, name) == ["version_0"] and snapshot(existing) == before
    assert runs.claim_run_dir(root, name).name == "version_1"


def test_crash_before_the_first_checkpoint_removes_its_folder(tmp_path):
    """A bug in the first batch (no checkpoint yet): the exception propagates, no folder stays."""
    root = tmp_path / "runs"
    with pytest.raises(SimulatedCrash):
        run_experiment("baseline", root, *crash_at(epoch=0, batch=0))
    assert versions(root, "baseline") == []
