"""A tiny LightningModule for DDP tests, in its own module so that ``ddp_spawn`` can pickle it
and the sweep tests' worker processes need not import Lightning: one linear layer trained on
anything; validation logs the constant ``score`` as ``val_score`` (synchronised over ranks)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch


class ConstantScore(pl.LightningModule):
    def __init__(self, score: float):
        super().__init__()
        self.score = score
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, _):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, _):
        self.log("val_score", torch.tensor(self.score), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> torch.utils.data.DataLoader:
    """8 samples of 2 features, batches of 2."""
    data = torch.utils.data.TensorDataset(torch.arange(16.0).reshape(8, 2))
    return torch.utils.data.DataLoader(data, batch_size=2)
