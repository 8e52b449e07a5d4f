"""Suite-wide settings: never wait on the network, keep CPU threads predictable."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import helpers` from any test module

import pytest
import torch


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
