"""Callbacks: hooks into the training loop (checkpointing, early stopping, LR monitoring)."""

from lightning_lab.callbacks.base import Callback
from lightning_lab.callbacks.checkpoint import ModelCheckpoint
from lightning_lab.callbacks.early_stopping import EarlyStopping
from lightning_lab.callbacks.lr_monitor import LearningRateMonitor

__all__ = ["Callback", "EarlyStopping", "LearningRateMonitor", "ModelCheckpoint"]
