"""Handwritten digits (sklearn's 8×8 images, 1797 samples) with a small MLP — the demo's model."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lab.engine.module import LabDataModule, LabModule
from lightning_lab.errors import ConfigurationError


class DigitsClassifier(LabModule):
    """An MLP over the 64 pixels of a digit, trained with Adam; logs loss and accuracy."""

    def __init__(self, hidden: int = 64, lr: float = 3e-3, dropout: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_acc", (self(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class DigitsData(LabDataModule):
    """sklearn's digits, scaled to [0, 1], split 80/20 into train/val with a fixed split seed."""

    def __init__(self, batch_size: int = 64, split_seed: int = 0) -> None:
        self.batch_size = batch_size
        self.split_seed = split_seed
        self.train: TensorDataset | None = None
        self.val: TensorDataset | None = None

    def setup(self, stage: str) -> None:
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise ConfigurationError(
                "the digits example needs scikit-learn: `pip install scikit-learn` (or `make demo`, which "
                "installs it)."
            ) from err
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        cut = int(0.8 * len(x))
        self.train = TensorDataset(x[order[:cut]], y[order[:cut]])
        self.val = TensorDataset(x[order[cut:]], y[order[cut:]])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
