"""Nothing is read or written outside a run: run files are never written through symbolic
links, and every path read from a run file (``summary.json``'s ``selected_checkpoint``, the
snapshot index, ``last.ckpt``) must resolve to a regular file inside that run, else one line
naming the run file and exit status 2."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import CONFIGS, FAST, TINY_ARGS
from resilience_helpers import cli_error, interrupted_run, place_run, smoke_args

from kdbias import registry, runs, why
from kdbias.callbacks.snapshots import SNAPSHOT_DIR, SNAPSHOT_INDEX, read_snapshots

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _zeros(path):
    torch.save({"state_dict": {}}, path)


# --------------------------------------------------------------------------- writing


def test_run_lock_symlink_to_a_users_file_is_refused_and_the_file_kept(tmp_path):
    """``run.lock`` as a link to a user's file: refused (one line); the file is unchanged and a
    dangling link creates nothing outside the run."""
    run_dir = tmp_path / "runs" / "baseline" / "version_0"
    run_dir.mkdir(parents=True)
    precious = tmp_path / "thesis.tex"
    precious.write_text("three years of work\n")
    (run_dir / runs.LOCK_FILE).symlink_to(precious)
    with pytest.raises(runs.RunPathError, match="is a symbolic link"):
        runs.hold_lock(run_dir)
    with pytest.raises(runs.RunPathError, match="is a symbolic link"):
        with runs.RunLock(run_dir):
            pass
    assert precious.read_text() == "three years of work\n"
    assert not runs.is_running(run_dir) and runs.lock_owner(run_dir) == ""
    (run_dir / runs.LOCK_FILE).unlink()
    outside = tmp_path / "created-outside"
    (run_dir / runs.LOCK_FILE).symlink_to(outside)
    with pytest.raises(runs.RunPathError):
        runs.hold_lock(run_dir)
    assert not outside.exists()


def test_fifo_run_lock_is_refused_without_blocking(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.mkfifo(run_dir / runs.LOCK_FILE)
    with pytest.raises(runs.RunPathError, match="not a regular file"):
        runs.hold_lock(run_dir)


def test_resume_through_a_symlinked_lock_is_one_line(tmp_path, capsys):
    """The probe end to end: ``--resume`` of an unfinished run whose ``run.lock`` links to a
    user's file: exit 2, one line naming the lock, the file unchanged, nothing trained."""
    root = tmp_path / "runs"
    run_dir = interrupted_run("baseline", root, epochs=2, crash_epoch=1)  # last.ckpt holds epoch 0
    (run_dir / runs.LOCK_FILE).unlink(missing_ok=True)
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me\n")
    (run_dir / runs.LOCK_FILE).symlink_to(precious)
    line = cli_error("baseline", smoke_args("baseline", root, "--trainer.max_epochs", "2", "--resume"), capsys)
    assert f"{run_dir / runs.LOCK_FILE} is a symbolic link" in line
    assert precious.read_text() == "keep me\n" and not (run_dir / runs.SUMMARY_FILE).exists()


# --------------------------------------------------------------------------- reading


def test_file_in_run_admits_only_the_runs_own_regular_files(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"x")
    (run_dir / "checkpoints" / "alias.ckpt").symlink_to("best.ckpt")  # a link inside the run is fine
    outside = tmp_path / "other.ckpt"
    outside.write_bytes(b"y")
    (run_dir / "checkpoints" / "out.ckpt").symlink_to(outside)
    named_in = run_dir / "summary.json"
    assert runs.file_in_run(run_dir, "checkpoints/best.ckpt", named_in) == (run_dir / "checkpoints/best.ckpt").resolve()
    assert (
        runs.file_in_run(run_dir, "checkpoints/alias.ckpt", named_in) == (run_dir / "checkpoints/best.ckpt").resolve()
    )
    assert runs.file_in_run(run_dir, "checkpoints/gone.ckpt", named_in, missing_ok=True) is None
    with pytest.raises(FileNotFoundError):
        runs.file_in_run(run_dir, "checkpoints/gone.ckpt", named_in)
    for bad in (str(outside), "../other.ckpt", "checkpoints/../../other.ckpt", "checkpoints/out.ckpt", 3, None, ""):
        with pytest.raises(runs.RunPathError, match="summary.json names"):
            runs.file_in_run(run_dir, bad, named_in)
    with pytest.raises(runs.RunPathError, match="not a regular file"):
        runs.file_in_run(run_dir, "checkpoints", named_in)


@pytest.mark.parametrize(
    "selected",
    ["/etc/passwd", "checkpoints/link.ckpt", "checkpoints/../../version_9/checkpoints/best.ckpt"],
    ids=["absolute", "symlink-out", "traversal"],
)
def test_selected_checkpoint_outside_the_run_is_one_line(tmp_path, capsys, selected):
    """``exp1``'s ``teacher: auto`` reads the teacher run's ``selected_checkpoint``: a path out of
    that run is refused naming its ``summary.json``, before any folder is claimed."""
    root = tmp_path / "runs"
    run_dir = place_run(root, "teacher_resnet18", _zeros).parent.parent
    _zeros(tmp_path / "elsewhere.ckpt")
    (run_dir / "checkpoints" / "link.ckpt").symlink_to(tmp_path / "elsewhere.ckpt")
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "selected_checkpoint": selected}))
    line = cli_error("exp1", smoke_args("exp1", root), capsys)
    assert f"{run_dir / 'summary.json'} names" in line and "refused" in line
    assert not (root / "exp1").exists() or not any((root / "exp1").iterdir())


def test_deleted_selected_checkpoint_says_so(tmp_path):
    root = tmp_path / "runs"
    place_run(root, "teacher_resnet18", _zeros).unlink()
    with pytest.raises(FileNotFoundError, match="has lost its selected checkpoint checkpoints/best.ckpt"):
        runs.teacher_checkpoint(root, "teacher_resnet18", "digits", "smoke")


def test_deleted_teacher_checkpoint_makes_a_control_not_measured_not_a_late_failure(tmp_path):
    """A complete teacher run whose ``best.ckpt`` was deleted: the baseline's fidelity control to
    it is "not measured" at planning time (the baseline would otherwise fail at test)."""
    root = tmp_path / "runs"
    place_run(root, "teacher_resnet18", _zeros)
    refs, _ = why.fidelity_references(registry.get("baseline"), runs.Run(root, "x", "digits", "smoke"), 10)
    assert "teacher_resnet18" in refs
    (root / "teacher_resnet18" / "version_0" / "checkpoints" / "best.ckpt").unlink()
    refs, _ = why.fidelity_references(registry.get("baseline"), runs.Run(root, "x", "digits", "smoke"), 10)
    assert "teacher_resnet18" not in refs


def test_last_ckpt_linked_to_another_run_is_refused(tmp_path):
    root = tmp_path / "runs"
    other = place_run(root, "baseline", _zeros, version=0)
    run_dir = root / "baseline" / "version_1" / "checkpoints"
    run_dir.mkdir(parents=True)
    (run_dir / runs.LAST_CKPT).symlink_to(other)
    with pytest.raises(runs.RunPathError, match="leads outside its run"):
        runs.newest_loadable_checkpoint(run_dir.parent)


# --------------------------------------------------------------------------- the snapshot index


def _matched_runs(root, index_text: str | bytes):
    """A complete ``teacher_deit`` (the reference, best_val_acc 0.5) and a complete
    ``teacher_resnet18`` whose snapshot index is ``index_text``."""
    deit = place_run(root, "teacher_deit", _zeros).parent.parent
    summary = json.loads((deit / "summary.json").read_text())
    (deit / "summary.json").write_text(json.dumps({**summary, "best_val_acc": 0.5}))
    teacher = place_run(root, "teacher_resnet18", _zeros).parent.parent
    folder = teacher / "checkpoints" / SNAPSHOT_DIR
    folder.mkdir()
    for epoch in range(3):
        _zeros(folder / f"epoch{epoch:03d}.ckpt")
    data = index_text.encode() if isinstance(index_text, str) else index_text
    (folder / SNAPSHOT_INDEX).write_bytes(data)
    return teacher, folder


def _index(**entries) -> str:
    return json.dumps({name: {"epoch": i, "val_acc": acc} for i, (name, acc) in enumerate(entries.items())})


BAD_INDEXES = {
    "traversal": json.dumps({"../../../../../etc/passwd": {"epoch": 0, "val_acc": 0.5}}),
    "absolute": json.dumps({"/etc/passwd": {"epoch": 0, "val_acc": 0.5}}),
    "nan": '{"epoch000.ckpt": {"epoch": 0, "val_acc": NaN}, "epoch001.ckpt": {"epoch": 1, "val_acc": 0.4}}',
    "above-one": _index(**{"epoch000.ckpt": 1.5}),
    "huge-integer": '{"epoch000.ckpt": {"epoch": ' + "9" * 5000 + ', "val_acc": 0.5}}',
    "deep": "[" * 100_000 + "]" * 100_000,
    "malformed": '{"epoch000.ckpt": ',
    "not-utf8": b'{"epoch000.ckpt\xff": {}}',
    "list": "[]",
}


@pytest.mark.parametrize("case", list(BAD_INDEXES), ids=list(BAD_INDEXES))
def test_bad_snapshot_index_is_one_line_naming_it(tmp_path, case):
    teacher, folder = _matched_runs(tmp_path / "runs", BAD_INDEXES[case])
    with pytest.raises(runs.RunPathError, match=str(folder / SNAPSHOT_INDEX)):
        why.matched_teacher_checkpoint(tmp_path / "runs", registry.get("exp1_matched"), "digits", "smoke")


def test_snapshot_symlinked_out_of_the_run_is_refused(tmp_path):
    teacher, folder = _matched_runs(tmp_path / "runs", _index(**{"epoch000.ckpt": 0.5, "epoch001.ckpt": 0.3}))
    outside = tmp_path / "passwd"
    outside.write_text("root:x:0:0\n")
    (folder / "epoch000.ckpt").unlink()
    (folder / "epoch000.ckpt").symlink_to(outside)
    with pytest.raises(runs.RunPathError, match=f"{folder / SNAPSHOT_INDEX} names .*leads outside"):
        why.matched_teacher_checkpoint(tmp_path / "runs", registry.get("exp1_matched"), "digits", "smoke")


def test_valid_index_matches_the_closest_accuracy(tmp_path):
    """The reference: |0.45 - 0.5| < |0.3 - 0.5| < |0.9 - 0.5| (the selected checkpoint, with no
    ``best_val_acc`` in its summary, is not a candidate)."""
    teacher, folder = _matched_runs(
        tmp_path / "runs", _index(**{"epoch000.ckpt": 0.3, "epoch001.ckpt": 0.45, "epoch002.ckpt": 0.9})
    )
    assert set(read_snapshots(folder)) == {"epoch000.ckpt", "epoch001.ckpt", "epoch002.ckpt"}
    found = why.matched_teacher_checkpoint(tmp_path / "runs", registry.get("exp1_matched"), "digits", "smoke")
    assert found == folder / "epoch001.ckpt"


def test_bad_snapshot_index_through_the_command_line(tmp_path, capsys):
    _matched_runs(tmp_path / "runs", BAD_INDEXES["traversal"])
    args = ["--smoke", "--runs_dir", str(tmp_path / "runs"), *FAST, *TINY_ARGS["exp1"]]
    line = cli_error("exp1_matched", args, capsys)
    assert "index.json" in line and "not a plain .ckpt file name" in line


def test_local_log_symlink_is_never_written_through(tmp_path, monkeypatch, capsys):
    """``runs/_jobs/local/<run>.log`` as a link to a user's file: run_all refuses it in one line
    (exit 2); the user's file is unchanged."""
    from kdbias.launch.local import run_local
    from kdbias.launch.plan import plan_matrix

    root = tmp_path / "runs"
    plan = plan_matrix(root, seeds=1, smoke=True, only=["teacher_resnet18"])
    folder = root / runs.JOBS_DIR / "local"
    folder.mkdir(parents=True)
    precious = tmp_path / "data.csv"
    precious.write_text("a,b\n1,2\n")
    (folder / f"{plan[0].slug}.log").symlink_to(precious)

    def never(*args, **kwargs):
        raise AssertionError("started a run")

    with pytest.raises(runs.RunPathError, match="is a symbolic link"):
        run_local(plan, root, lambda run: None, parallel=1, start=never, gpus=0)
    assert precious.read_text() == "a,b\n1,2\n"


def test_config_value_names_are_not_a_hazard():
    """Sanity of the fixtures: the experiments used above exist with the shape assumed."""
    assert registry.get("exp1_matched").teacher == "teacher_resnet18"
    assert registry.get("exp1_matched").teacher_matched_to == "teacher_deit"
    assert CONFIGS.is_dir()
