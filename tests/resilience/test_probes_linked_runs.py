"""A run folder, or its ``checkpoints/``, that is itself a symbolic link (``runs/exp/version_0 ->
/elsewhere``, ``version_0/checkpoints -> /elsewhere``) is refused in one line naming the link and
the fix, when a run claims or resumes, and when the teacher lookup, ``run_all``, the controls
and the report read runs; nothing is read from or written to where the link leads."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from resilience_helpers import cli_error, place_run, smoke_args, snapshot

from kdbias import runs
from kdbias.runs.paths import LinkedRunFolder, check_run_folder

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LINKS = ["version_0", "checkpoints"]


def _zeros(path):
    torch.save({"state_dict": {}}, path)


def link_run(root, experiment, elsewhere, which, *, complete=True, **config):
    """A run of ``experiment`` placed under ``elsewhere`` and reached through a link: the whole
    ``version_0`` (``which="version_0"``) or only its ``checkpoints/``. Returns the link."""
    if which == "version_0":
        real = place_run(elsewhere, experiment, _zeros).parent.parent
        link = root / experiment / "version_0"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(real, target_is_directory=True)
        run_dir = link
    else:
        run_dir = place_run(root, experiment, _zeros).parent.parent
        shutil.move(run_dir / "checkpoints", elsewhere / "checkpoints")
        link = run_dir / "checkpoints"
        link.symlink_to(elsewhere / "checkpoints", target_is_directory=True)
    _zeros(run_dir / "checkpoints" / "last.ckpt")
    if not complete:
        summary = json.loads((run_dir / "summary.json").read_text())
        (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    if config:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        (run_dir / "config.yaml").write_text(yaml.safe_dump({**saved, **config}))
    return link


@pytest.fixture(params=LINKS)
def linked(request, tmp_path):
    """``(runs folder, the link, where it leads)`` for each kind of link."""
    root, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    elsewhere.mkdir()
    return root, elsewhere, request.param


def test_check_run_folder_names_the_link_and_the_fix(tmp_path):
    real, folder = tmp_path / "real", tmp_path / "runs" / "baseline" / "version_0"
    (real / "checkpoints").mkdir(parents=True)
    folder.mkdir(parents=True)
    assert check_run_folder(folder) == folder and check_run_folder(tmp_path / "not-yet") == tmp_path / "not-yet"
    (folder / "checkpoints").symlink_to(real / "checkpoints")
    with pytest.raises(
        LinkedRunFolder, match=f"{folder / 'checkpoints'} is a symbolic link \\(to {real}/checkpoints\\)"
    ):
        check_run_folder(folder)
    (folder / "checkpoints").unlink()
    folder.rmdir()
    folder.symlink_to(tmp_path / "gone")  # dangling
    with pytest.raises(LinkedRunFolder, match=f"rm {folder}; mv {tmp_path / 'gone'} {folder}"):
        check_run_folder(folder)
    assert isinstance(LinkedRunFolder("x"), runs.RunPathError) and isinstance(LinkedRunFolder("x"), OSError)


def test_lookups_and_claims_refuse_the_link(linked):
    root, elsewhere, which = linked
    link = link_run(root, "baseline", elsewhere, which)
    before = snapshot(elsewhere)
    with pytest.raises(LinkedRunFolder, match=f"{link} is a symbolic link"):
        runs.run_dirs(root, "baseline")
    with pytest.raises(LinkedRunFolder, match=f"{link} is a symbolic link"):
        runs.latest_complete_run(root, "baseline")
    with pytest.raises(LinkedRunFolder, match=f"{link} is a symbolic link"):
        runs.claim_run_dir(root, "baseline", lock=True)
    with pytest.raises(LinkedRunFolder, match=f"{link} is a symbolic link"):
        runs.hold_lock(link if which == "version_0" else link.parent)
    assert sorted(p.name for p in (root / "baseline").iterdir()) == ["version_0"]  # nothing claimed
    assert snapshot(elsewhere) == before  # no lock file, nothing written where the link leads


def test_resume_refuses_a_linked_run(linked, capsys):
    """``--resume`` of an unfinished run reached through a link: one line naming the link, exit
    2, nothing trained or written on either side."""
    root, elsewhere, which = linked
    link = link_run(root, "baseline", elsewhere, which, complete=False)
    before = snapshot(elsewhere)
    line = cli_error("baseline", smoke_args("baseline", root, "--resume"), capsys)
    assert f"{link} is a symbolic link" in line and "Replace the link" in line
    assert snapshot(elsewhere) == before and sorted(p.name for p in (root / "baseline").iterdir()) == ["version_0"]


def test_teacher_lookup_refuses_a_linked_teacher_run(linked, capsys):
    root, elsewhere, which = linked
    link = link_run(root, "teacher_resnet18", elsewhere, which)
    line = cli_error("exp1", smoke_args("exp1", root), capsys)
    assert f"{link} is a symbolic link" in line
    assert not (root / "exp1").exists()


def test_run_all_refuses_a_linked_run(linked, capsys):
    from kdbias.launch.run_all import main

    root, elsewhere, which = linked
    link = link_run(root, "teacher_resnet18", elsewhere, which)
    args = ["--smoke", "--seeds", "1", "--only", "teacher_resnet18", "--runs_dir", str(root)]
    assert main([*args, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run_all.py: error: ") and f"{link} is a symbolic link" in err[0]


def test_controls_refuse_a_linked_run_or_teacher(tmp_path, capsys):
    """``python -m kdbias.controls``: a baseline reached through a link is never locked or
    measured; a linked teacher run is refused where the controls look it up."""
    from kdbias.controls import main

    root, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = {"runs_dir": str(root), "analytics": {"cka_against": ["teacher_resnet18"]}}
    link = link_run(root, "baseline", elsewhere, "version_0", **settings)
    before = snapshot(elsewhere)
    assert main([str(link)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{link} is a symbolic link" in err[0], err
    assert snapshot(elsewhere) == before
    link_config = (link / "config.yaml").read_text()
    link.unlink()
    baseline = place_run(root, "baseline", _zeros).parent.parent
    (baseline / "config.yaml").write_text(yaml.safe_dump({**yaml.safe_load(link_config), **settings}))
    (elsewhere / "t").mkdir()
    teacher = link_run(root, "teacher_resnet18", elsewhere / "t", "version_0")
    assert main([str(baseline)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{teacher} is a symbolic link" in err[0], err
    assert json.loads((baseline / "summary.json").read_text()).get("cka") is None  # nothing measured


def test_the_report_skips_a_linked_run_naming_it(linked, capsys):
    """The report never reads through the link: the experiment is skipped with one warning
    line naming the link and the fix (one bad folder never stops the report)."""
    from kdbias.report.cli import main

    root, elsewhere, which = linked
    link = link_run(root, "baseline", elsewhere, which)
    out = root.parent / "R.md"
    assert main([str(root), "--out", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "symbolic link" in line]
    assert len(err) == 1 and str(link) in err[0] and "Replace the link" in err[0], err


def test_controls_refuse_a_linked_run_with_nothing_left_to_measure(tmp_path, capsys):
    """A linked run folder is refused before its controls are even looked at (never reported as
    "every control is measured already")."""
    from kdbias.controls import main

    root, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = link_run(root, "exp1", elsewhere, "version_0", runs_dir=str(root))
    assert main([str(link)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{link} is a symbolic link" in err[0], err
