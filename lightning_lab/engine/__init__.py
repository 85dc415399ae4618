"""The training engine: LabModule, Trainer and the Engine they run on."""

from lightning_lab.engine.engine import Engine
from lightning_lab.engine.module import LabDataModule, LabModule
from lightning_lab.engine.seed import seed_everything
from lightning_lab.engine.trainer import Trainer

__all__ = ["Engine", "LabDataModule", "LabModule", "Trainer", "seed_everything"]
