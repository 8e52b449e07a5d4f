"""Suite-wide settings: never wait on the network, keep CPU threads predictable."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def digits_dm():
    """The digits datamodule, set up once (uint8 tensors; cheap to share)."""
    from kdbias.data import CIFARDataModule

    dm = CIFARDataModule("digits", batch_size=32, num_workers=0)
    dm.setup("fit")
    return dm
