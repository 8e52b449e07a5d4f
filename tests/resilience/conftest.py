"""One intra-op thread for the in-process runs: on a shared 2-core machine, oversubscribed
OpenMP threads make tiny CPU fits several times slower (and timing-dependent)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
