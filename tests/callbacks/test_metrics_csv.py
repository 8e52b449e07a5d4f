"""metrics.csv: one row per epoch with the epoch-level metrics; a resumed run has each epoch once."""

import csv

import lightning as L
import torch
from torch import nn

from kdbias.callbacks import EpochMetricsCSV


class _Logs(L.LightningModule):
    """Logs known epoch-level values: train/loss = 1 / (epoch + 1), val/acc = epoch / 10."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean() * 0 + 1.0 / (self.current_epoch + 1)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss + 0 * self.layer.weight.sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", torch.tensor(self.current_epoch / 10))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _loader():
    data = torch.utils.data.TensorDataset(torch.randn(8, 2))
    return torch.utils.data.DataLoader(data, batch_size=4)


def _trainer(tmp_path, epochs):
    return L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[EpochMetricsCSV(tmp_path)],
    )


def _rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_one_row_per_epoch_with_the_logged_values(tmp_path):
    trainer = _trainer(tmp_path, 3)
    trainer.fit(_Logs(), _loader(), _loader())
    rows = _rows(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and [r["step"] for r in rows] == ["2", "4", "6"]
    for epoch, row in enumerate(rows):
        assert float(row["train/loss"]) == torch.tensor(1.0 / (epoch + 1)).item()
        assert float(row["val/acc"]) == torch.tensor(epoch / 10).item()
    assert list(rows[0]) == ["epoch", "step", "train/loss", "val/acc"]


def test_rows_of_a_resumed_epoch_are_replaced(tmp_path):
    stale = "epoch,step,val/acc\n1,2,0.5\n2,4,0.6\n3,6,0.7\n"
    (tmp_path / "metrics.csv").write_text(stale)
    trainer = _trainer(tmp_path, 2)
    trainer.fit(_Logs(), _loader(), _loader())
    rows = _rows(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [float(r["val/acc"]) for r in rows] == [0.0, torch.tensor(0.1).item()]
