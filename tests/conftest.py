"""Suite-wide settings: never wait on the network, keep CPU threads predictable, leave the
checkout as it was."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import helpers` from any test module

import pytest
import torch
from helpers import checkout_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _checkout_stays_clean():
    """Fail the session when the tests leave a new file in the checkout (tests write under
    ``tmp_path``; every Trainer gets ``default_root_dir=tmp_path``). Skipped outside git."""
    before = checkout_files(ROOT)
    yield
    after = checkout_files(ROOT) if before is not None else None
    if after is not None and after - before:
        pytest.fail(f"the tests left files in the checkout: {sorted(after - before)}", pytrace=False)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _restore_rank_zero():
    """A test that plays a DDP rank (``cluster_environment.set_global_rank``) sets Lightning's
    process-wide ``rank_zero_only.rank``; left at 1, every later in-process run would skip
    its rank-0 work (no events, no hparams.yaml, no checkpoints dir)."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    saved = getattr(rank_zero_only, "rank", 0)
    yield
    rank_zero_only.rank = saved


@pytest.fixture(scope="session")
def digits_dm():
    """The digits datamodule, set up once (uint8 tensors; cheap to share)."""
    from kdbias.data import CIFARDataModule

    dm = CIFARDataModule("digits", batch_size=32, num_workers=0)
    dm.setup("fit")
    return dm


@pytest.fixture(autouse=True)
def _default_study():
    """A test that activates a study of its own (``registry.activate``) leaves the shipped one
    active for the next."""
    from kdbias import registry

    study = registry.active()
    yield
    if registry.active() is not study:
        registry.activate(study)
