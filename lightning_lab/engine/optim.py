"""Reading what ``configure_optimizers`` returns into one optimizer and its scheduler configs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lightning_lab.errors import UserCodeError

_FORMS = (
    "an optimizer; ([optimizer], [scheduler]); or "
    '{"optimizer": optimizer, "lr_scheduler": scheduler | {"scheduler": s, "interval": "epoch"|"step", '
    '"frequency": n, "monitor": metric}}'
)


@dataclass
class SchedulerConfig:
    """A learning-rate scheduler and when the trainer steps it."""

    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None

    @property
    def needs_metric(self) -> bool:
        """Whether ``step`` takes a metric value (ReduceLROnPlateau)."""
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def parse_optimizers(result: Any, owner: str) -> tuple[torch.optim.Optimizer, list[SchedulerConfig]]:
    """Normalise ``configure_optimizers()``'s return value.

    Raises:
        UserCodeError: nothing usable was returned, or several optimizers (automatic optimization
            steps one optimizer; put parameter groups in it instead).
    """
    where = f"{owner}.configure_optimizers"
    optimizers: list[Any]
    schedulers: list[Any] = []
    if isinstance(result, torch.optim.Optimizer):
        optimizers = [result]
    elif isinstance(result, Mapping):
        optimizers = [result.get("optimizer")]
        if result.get("lr_scheduler") is not None:
            schedulers = [result["lr_scheduler"]]
    elif (isinstance(result, Sequence) and not isinstance(result, str) and len(result) == 2
          and isinstance(result[0], Sequence) and isinstance(result[1], Sequence)):
        optimizers, schedulers = list(result[0]), list(result[1])
    elif isinstance(result, Sequence) and not isinstance(result, str):
        optimizers = list(result)
    else:
        raise UserCodeError(f"{where} returned {_describe(result)}. Return {_FORMS}.")
    if len(optimizers) != 1:
        raise UserCodeError(
            f"{where} returned {len(optimizers)} optimizers; the Trainer steps exactly one. "
            "Use one optimizer with several parameter groups instead."
        )
    optimizer = optimizers[0]
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise UserCodeError(f"{where} returned {_describe(optimizer)} where an optimizer was expected. Return {_FORMS}.")
    return optimizer, [_scheduler_config(s, where) for s in schedulers]


def _scheduler_config(item: Any, where: str) -> SchedulerConfig:
    if isinstance(item, Mapping):
        if "scheduler" not in item:
            raise UserCodeError(f'{where}: an lr_scheduler dict needs a "scheduler" key, got keys {sorted(item)}.')
        config = SchedulerConfig(
            item["scheduler"], item.get("interval", "epoch"), int(item.get("frequency", 1)), item.get("monitor")
        )
    else:
        config = SchedulerConfig(item)
    if config.interval not in ("epoch", "step"):
        raise UserCodeError(f'{where}: lr_scheduler interval must be "epoch" or "step", got {config.interval!r}.')
    if not hasattr(config.scheduler, "step") or not hasattr(config.scheduler, "state_dict"):
        raise UserCodeError(f"{where} returned {_describe(config.scheduler)} where a learning-rate scheduler was expected.")
    if config.needs_metric and not config.monitor:
        raise UserCodeError(
            f'{where}: ReduceLROnPlateau needs a metric: return {{"scheduler": s, "monitor": "val_loss"}}.'
        )
    return config


def _describe(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__} ({value!r:.80})"
