"""Shared helpers of the callback tests: tiny models, short real fits, TensorBoard read-back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from helpers import DIGITS, TINY_RESNET, TINY_VIT, images, scalars
from helpers import OPTIM as _OPTIM
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

OPTIM = {"optim": _OPTIM, **DIGITS}  # keyword arguments of every tiny module below


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, two OpenMP threads contending with
    other processes made the double backward up to 50x slower (measured); one is steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ModeProbe(Callback):
    """Records, in ``hooks``, the train/eval flag of every module of the student and teacher.

    Put one probe before and one after the callback under test: equal records mean the
    callback left every module's mode as it found it. Also records whether the hook ran
    with autograd off (``no_grad`` in fit's validation, ``inference_mode`` in ``validate``),
    under inference mode, and during the sanity check.
    """

    def __init__(self, hooks=("on_validation_end", "on_train_end")) -> None:
        self.records: list[tuple[str, dict[str, bool]]] = []
        self.inference: list[bool] = []
        self.no_grad: list[bool] = []
        self.sanity: list[bool] = []
        for hook in hooks:
            setattr(self, hook, self._make(hook))

    def _make(self, hook):
        def record(trainer, pl_module):
            modes = {f"student.{n}": m.training for n, m in pl_module.named_modules()}
            teacher = pl_module.teacher  # outside the module tree: listed on its own
            if teacher is not None:
                modes.update({f"teacher.{n}": m.training for n, m in teacher.named_modules()})
            self.records.append((hook, modes))
            self.inference.append(torch.is_inference_mode_enabled())
            self.no_grad.append(not torch.is_grad_enabled())
            self.sanity.append(trainer.sanity_checking)

        return record


def _datamodule(**kw):
    from kdbias.data import CIFARDataModule

    args = dict(dataset="digits", batch_size=16, train_subset=64, seed=0, num_workers=0)
    args.update(kw)
    return CIFARDataModule(**args)


def _fit(module, callbacks, root: Path, max_epochs: int = 1, datamodule=None, seed: int = 0, **trainer_kw):
    """A real, short ``Trainer.fit`` on digits: 2 train batches and 1 val batch per epoch."""
    L.seed_everything(seed, verbose=False)
    datamodule = datamodule if datamodule is not None else _datamodule()
    kw = dict(
        default_root_dir=root,
        max_epochs=max_epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(root), name="run"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    kw.update(trainer_kw)
    trainer = L.Trainer(callbacks=list(callbacks), **kw)
    trainer.fit(module, datamodule=datamodule)
    return trainer


@pytest.fixture
def kit():
    """Helpers for the callback tests, as one namespace."""
    return SimpleNamespace(
        TINY_VIT=TINY_VIT,
        TINY_RESNET=TINY_RESNET,
        OPTIM=OPTIM,
        ModeProbe=ModeProbe,
        datamodule=_datamodule,
        fit=_fit,
        scalars=scalars,
        images=images,
    )


@pytest.fixture
def tiny_vit_module():
    """A fresh tiny DeiT (p4, dim 32, depth 2, 2 heads, drop-path) trained with CE."""

    def make(seed: int = 0):
        from kdbias.modules import TeacherModule

        torch.manual_seed(seed)  # same weights on every call: runs can be compared
        return TeacherModule("deit_tiny_p4", arch_kwargs=dict(TINY_VIT), **OPTIM)

    return make
