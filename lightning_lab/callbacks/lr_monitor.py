"""LearningRateMonitor: records the optimizer's learning rate(s) in the run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_lab.callbacks.base import Callback

if TYPE_CHECKING:
    from lightning_lab.engine.module import LabModule
    from lightning_lab.engine.trainer import Trainer


class LearningRateMonitor(Callback):
    """Logs ``lr-<Optimizer>`` (``/pg<i>`` per parameter group when there are several) at each
    epoch start, and after every optimizer step when a scheduler steps per step."""

    def on_train_epoch_start(self, trainer: Trainer, module: LabModule) -> None:
        self._log(trainer)

    def on_train_batch_end(self, trainer: Trainer, module: LabModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer._micro == 0 and any(c.interval == "step" for c in trainer.lr_scheduler_configs):
            self._log(trainer)

    def _log(self, trainer: Trainer) -> None:
        optimizer = trainer.optimizer
        groups = optimizer.param_groups
        base = f"lr-{type(optimizer).__name__}"
        values = {base if len(groups) == 1 else f"{base}/pg{i}": float(g["lr"]) for i, g in enumerate(groups)}
        trainer.log_metrics(values)
