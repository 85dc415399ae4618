"""TensorBoardLogger: the run's records as TensorBoard scalars (needs the ``tensorboard`` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lightning_lab.errors import ConfigurationError
from lightning_lab.loggers.base import Logger

_SKIP = frozenset({"step", "epoch", "time"})


class TensorBoardLogger(Logger):
    """Writes event files to ``<run dir>/tensorboard`` (or ``save_dir``); view them with
    ``tensorboard --logdir <root>``.

    Raises:
        ConfigurationError: the ``tensorboard`` package is not installed (the message says how to get it).
    """

    def __init__(self, save_dir: str | Path | None = None) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigurationError(
                "TensorBoardLogger needs the tensorboard package, which is not installed. Install it with "
                "`pip install 'lightning-lab[tensorboard]'` (or `pip install tensorboard`), or drop the logger: "
                "the run directory already records every metric."
            )
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self._writer: Any = None

    def setup(self, run_dir: Path, info: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(self.save_dir if self.save_dir is not None else run_dir / "tensorboard"))

    def log_metrics(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            return
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key not in _SKIP:
                self._writer.add_scalar(key, float(value), step)

    def finalize(self, status: str) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
