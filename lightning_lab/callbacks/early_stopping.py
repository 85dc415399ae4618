"""EarlyStopping: stop when a monitored metric stops improving (or stops being finite)."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

from lightning_lab.callbacks.base import Callback
from lightning_lab.callbacks.monitor import read_monitored
from lightning_lab.errors import ConfigurationError

if TYPE_CHECKING:
    from lightning_lab.engine.module import LabModule
    from lightning_lab.engine.trainer import Trainer


class EarlyStopping(Callback):
    """Checked after each validation (or each training epoch when there is no validation).

    Args:
        monitor: the metric to watch.
        mode: ``"min"`` or ``"max"``.
        patience: checks without improvement before stopping.
        min_delta: the smallest change that counts as an improvement.
        check_finite: stop at once when the metric becomes NaN or infinite.
    """

    def __init__(self, monitor: str, mode: str = "min", patience: int = 3, min_delta: float = 0.0,
                 check_finite: bool = True) -> None:
        if mode not in ("min", "max"):
            raise ConfigurationError(f"EarlyStopping(mode={mode!r}): choose 'min' or 'max'.")
        if not isinstance(patience, int) or patience < 0:
            raise ConfigurationError(f"EarlyStopping(patience={patience!r}): use a non-negative integer.")
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.check_finite = check_finite
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.reason: str | None = None

    @property
    def state_key(self) -> str:
        return f"EarlyStopping[{self.monitor}]"

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait, self.stopped_epoch = state["best"], state["wait"], state.get("stopped_epoch")

    def on_validation_end(self, trainer: Trainer, module: LabModule) -> None:
        self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, module: LabModule) -> None:
        if not trainer._val_loaders:
            self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        value = read_monitored(trainer, self.monitor, f"EarlyStopping(monitor={self.monitor!r})")
        value = trainer.engine.broadcast(value)  # every process must stop at the same step
        if not math.isfinite(value):
            if self.check_finite:
                self._stop(trainer, f"{self.monitor} = {value} is not finite")
            return
        improved = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if improved:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self._stop(trainer, f"{self.monitor} did not improve on {self.best:.4g} for {self.wait} checks")

    def _stop(self, trainer: Trainer, reason: str) -> None:
        trainer.should_stop = True
        self.stopped_epoch = trainer.current_epoch
        self.reason = reason
        if trainer.is_global_zero:
            print(f"EarlyStopping: {reason}; stopping at epoch {trainer.current_epoch}.", file=sys.stderr)
