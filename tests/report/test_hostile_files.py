"""No single file under runs/ can hang, crash or deface the report."""

from __future__ import annotations

import io
import json
import os
import threading

import numpy as np
import pytest
from report_fixtures import write_run

from kdbias.report import ReportWarning, load_runs, render_report


def _load(runs):
    with pytest.warns(ReportWarning) as record:
        loaded = load_runs(runs)
    return loaded, [str(w.message) for w in record]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_summary_json_does_not_hang(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "baseline", val_acc=0.8)
    fifo_dir = runs / "exp1" / "version_0"
    fifo_dir.mkdir(parents=True)
    os.mkfifo(fifo_dir / "summary.json")
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=_load(runs)), daemon=True)
    worker.start()
    worker.join(60)  # generous: a hang never returns
    assert not worker.is_alive(), "load_runs hung on a FIFO"
    loaded, messages = result["out"]
    assert [r["experiment"] for r in loaded] == ["baseline"]
    assert any("exp1/version_0/summary.json: not a regular file" in m for m in messages)


def test_huge_numbers_deep_nesting_and_oversized_files_are_skipped(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "baseline", val_acc=0.8)
    write_run(runs, "exp1", seed=0, raw='{"status": "complete", "seed": 0, "dataset": "digits", "preset": "smoke", '
              '"test_acc": ' + "9" * 401 + "}")  # fmt: skip
    write_run(runs, "exp1", seed=1, raw="[" * 200_000 + "]" * 200_000)
    write_run(runs, "exp2", seed=0, raw=b" " * (5 * 1024 * 1024))
    write_run(runs, "exp3", seed=0, val_acc=0.8, hessian_trace=10**401, train_time_s=-(10**401))
    loaded, messages = _load(runs)
    assert sorted(r["experiment"] for r in loaded) == ["baseline", "exp3"]
    text = " ".join(messages)
    assert "test_acc=99999" in text and "nested too deeply" in text and "larger than" in text
    (exp3,) = [r for r in loaded if r["experiment"] == "exp3"]
    assert "hessian_trace" not in exp3 and "train_time_s" not in exp3
    render_report(loaded)  # and the report renders


def test_symlinked_summary_is_not_followed(tmp_path):
    runs = tmp_path / "runs"
    real = write_run(tmp_path / "elsewhere", "baseline", val_acc=0.8) / "summary.json"
    target = runs / "baseline" / "version_0"
    target.mkdir(parents=True)
    (target / "summary.json").symlink_to(real)
    loaded, messages = _load(runs)
    assert loaded == [] and "not a regular file" in messages[0]


def test_strings_are_checked_or_escaped(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "baseline", val_acc=0.8)
    write_run(runs, "exp1", seed=0, val_acc=0.7, method={"temperature": "hot", "alpha": [1]})  # left out
    write_run(
        runs,
        "exp2",
        seed=0,
        val_acc=0.7,
        teacher={"name": "<script>x</script>", "family": "a|b", "source": "<img src=x onerror=alert(1)>|\n# h"},
        selection="<b>best</b>",
    )
    loaded, messages = _load(runs)
    assert sorted(r["experiment"] for r in loaded) == ["baseline", "exp2"]
    assert any("exp1" in m and "its recorded method does not validate" in m for m in messages)
    text = render_report(loaded)
    assert (
        "τ=hot" not in text
        and "hot," not in text
        and "<script>" not in text
        and "<img" not in text
        and "<b>" not in text
    )
    for line in text.splitlines():
        if line.startswith("| **EXP-2**"):
            assert line.count(" | ") == 9  # ten cells: the table is not broken


def test_predictions_files_that_are_crafted_or_stale_are_ignored(tmp_path):
    runs = tmp_path / "runs"
    good = write_run(runs, "baseline", seed=0, val_acc=0.8)
    pickled = write_run(runs, "baseline", seed=1, val_acc=0.8)
    buffer = io.BytesIO()
    np.savez(buffer, index=np.arange(3), label=np.zeros(3, int), pred=np.zeros(3, int),
             correct=np.array([object()] * 3), checkpoint=np.array("checkpoints/best.ckpt"))  # fmt: skip
    (pickled / "test_predictions.npz").write_bytes(buffer.getvalue())
    stale = write_run(runs, "baseline", seed=2, val_acc=0.8)
    summary = json.loads((stale / "summary.json").read_text())
    (stale / "summary.json").write_text(json.dumps({**summary, "selected_checkpoint": "checkpoints/other.ckpt"}))
    torn = write_run(runs, "baseline", seed=3, val_acc=0.8)
    (torn / "test_predictions.npz").write_bytes(b"PK\x03\x04 torn")
    loaded, messages = _load(runs)
    by_seed = {r["seed"]: r for r in loaded}
    assert by_seed[0]["predictions"] is not None and good.name == "version_0"
    assert all(by_seed[s]["predictions"] is None for s in (1, 2, 3))
    text = " ".join(messages)
    assert "version_1/test_predictions.npz: not a readable .npz file" in text
    assert "not of the selected 'checkpoints/other.ckpt'" in text
    assert "version_3/test_predictions.npz" in text
