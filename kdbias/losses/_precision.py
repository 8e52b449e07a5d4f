"""Keep loss arithmetic in the dtype the losses choose, whatever the autocast state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor


@contextmanager
def autocast_disabled(*tensors: Tensor) -> Iterator[None]:
    """Turn autocast off for the device types of ``tensors`` inside the block.

    Autocast re-casts the float32 operands of matmul-like ops to bf16/fp16 even
    after an explicit ``.float()``; with it disabled, ops run in the dtype of
    their operands. Device types without autocast support are skipped.
    """
    with ExitStack() as stack:
        for device_type in sorted({t.device.type for t in tensors}):
            if torch.amp.is_autocast_available(device_type):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield
