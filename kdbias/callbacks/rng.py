"""Keep the random number generators in the checkpoint, so ``--resume`` continues the same streams."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

__all__ = ["RNGStateCallback"]


class RNGStateCallback(Callback):
    """Save the global random number generators' states in checkpoints; restore them on resume.

    Lightning 2.x checkpoints hold the loops', optimisers', schedulers', callbacks' and
    datamodule's state but no random state, so a resumed run would replay its seed's
    first draws (drop-path masks, any other use of the global generators). This callback
    stores, in its ``state_dict``:

    - ``torch``: ``torch.get_rng_state()`` (CPU), and ``cuda`` (every visible GPU) once
      CUDA is initialised;
    - ``numpy`` and ``python``: ``np.random`` and ``random`` states, as tensors and plain
      ints so that checkpoints load with ``torch.load(weights_only=True)``.

    (The data order and augmentation stream are :class:`~kdbias.data.CIFARDataModule`'s
    own state.) The states are applied in ``on_train_start``: after Lightning's restore,
    the model and loader set-up, before the first resumed batch. Each rank saves its own
    state but rank 0 writes the file, so after a multi-process resume every rank
    continues from rank 0's stream (as after ``seed_everything``, which seeds all ranks
    alike).
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @property
    @override
    def state_key(self) -> str:
        return "RNGStateCallback"

    @override
    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        numpy = state["numpy"]
        np.random.set_state(
            ("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["gauss"])
        )
        python = state["python"]
        random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
