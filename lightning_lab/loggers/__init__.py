"""Optional extra metric sinks; the run directory is always written regardless."""

from lightning_lab.loggers.base import Logger
from lightning_lab.loggers.csv_logger import CSVLogger
from lightning_lab.loggers.tensorboard_logger import TensorBoardLogger

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger"]
