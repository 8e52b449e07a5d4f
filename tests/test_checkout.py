"""The suite leaves the checkout as it found it (``conftest._checkout_stays_clean``)."""

import subprocess


def test_the_clean_checkout_check_sees_new_and_ignored_files(tmp_path):
    """``helpers.checkout_files``, which fails the session when a test writes into the
    checkout: a new file, a new ignored file and a changed file show; caches do not."""
    from helpers import checkout_files

    assert checkout_files(tmp_path) is None  # not a git checkout: the check is skipped
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/lightning_logs/\n")
    before = checkout_files(tmp_path)
    (tmp_path / "lightning_logs").mkdir()
    (tmp_path / "lightning_logs" / "events").write_text("x")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch=2-step=3.ckpt").write_text("x")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "m.pyc").write_text("x")
    new = checkout_files(tmp_path) - before
    assert new == {"!! lightning_logs/events", "?? checkpoints/epoch=2-step=3.ckpt"}
