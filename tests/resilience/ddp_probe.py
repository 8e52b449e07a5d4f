"""DDP probe (run as a script; Lightning re-launches it once per rank): 2 CPU processes, gloo.

    python tests/resilience/ddp_probe.py OUT_DIR

Trains a tiny KLDistillModule (student and TeacherModule teacher: DeiT p4, one block of
width 48) on a 64-image digits subset for 2 epochs with ``strategy="ddp"``, then each
rank writes ``OUT_DIR/rank<r>.json``: the training indices it drew, ``global_step``, the
logged (rank-reduced) validation metrics, the same metrics computed by this rank alone
over the whole held-out split, and a checksum of its student weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from kdbias.callbacks.nonfinite import NonFiniteGuard
from kdbias.callbacks.rng import RNGStateCallback
from kdbias.data import CIFARDataModule
from kdbias.data import datamodule as datamodule_module
from kdbias.modules import KLDistillModule, Optimization, TeacherModule

N_TRAIN, BATCH, EPOCHS, DEVICES = 64, 8, 2, 2
TINY = dict(depth=1, embed_dim=48, num_heads=3, drop_path_rate=0.0)

seen: list[int] = []
_getitems = datamodule_module.TensorBatchDataset.__getitems__


def _recording_getitems(self, indices):
    if len(self) == N_TRAIN:  # the training subset (the held-out split has 144 images)
        seen.extend(int(i) for i in indices)
    return _getitems(self, indices)


datamodule_module.TensorBatchDataset.__getitems__ = _recording_getitems


def main(out: Path) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0)
    dm = CIFARDataModule("digits", batch_size=BATCH, val_batch_size=60, train_subset=N_TRAIN, seed=0)
    optim = Optimization(lr=1e-3, warmup_epochs=0.0)
    teacher = TeacherModule("deit_tiny_p4", num_classes=10, dataset="digits", arch_kwargs=TINY, optim=optim)
    module = KLDistillModule(
        arch="deit_tiny_p4", teacher=teacher, num_classes=10, dataset="digits", arch_kwargs=TINY, optim=optim
    )
    trainer = L.Trainer(
        default_root_dir=out.parent,
        accelerator="cpu",
        devices=DEVICES,
        strategy="ddp",
        max_epochs=EPOCHS,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[NonFiniteGuard(check_every_n_steps=1), RNGStateCallback()],
    )
    trainer.fit(module, datamodule=dm)

    logged = {name: float(value) for name, value in trainer.callback_metrics.items()}
    dm.setup()
    module.eval()
    with torch.no_grad():
        images = dm.normalize_images(dm.val_images)
        student, teacher_logits = module(images), module.teacher.logits(images)
    full = {
        "val/acc": (student.argmax(1) == dm.val_labels).double().mean().item(),
        "val/loss": F.cross_entropy(student, dm.val_labels).item(),
        "val/teacher_acc": (teacher_logits.argmax(1) == dm.val_labels).double().mean().item(),
    }
    report = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "indices": seen,
        "logged": logged,
        "full": full,
        "num_val": len(dm.val_labels),
        "weights": sum(p.double().sum().item() for p in module.model.parameters()),
        "teacher_in_state_dict": any(k.startswith("teacher.") for k in module.state_dict()),
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))
    trainer.strategy.barrier()  # both files exist before rank 0 (the launching process) exits


if __name__ == "__main__":
    main(Path(sys.argv[1]))
