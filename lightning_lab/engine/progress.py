"""Text progress outside notebooks: a one-line bar on a terminal, plain periodic lines in logs."""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING, Any

from lightning_lab.callbacks.base import Callback

if TYPE_CHECKING:
    from lightning_lab.engine.module import LabModule
    from lightning_lab.engine.trainer import Trainer


def _fmt(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in values.items())


class TextProgress(Callback):
    """Shows epoch, step, rate and the ``prog_bar`` metrics.

    ``mode="bar"`` redraws one line in place at most ``refresh_hz`` times a second (terminals);
    ``mode="lines"`` prints a new line at most every ``line_interval`` seconds and at each epoch
    end, so papermill outputs and CI logs stay readable. When training ends it prints where the
    time went and the advice (``show_insight=False`` leaves that out).
    """

    def __init__(self, mode: str = "lines", stream: IO[str] | None = None, refresh_hz: float = 8.0,
                 line_interval: float = 10.0, show_insight: bool = True) -> None:
        self.mode = mode
        self.show_insight = show_insight
        self.stream = stream or sys.stdout
        self.interval = 1.0 / refresh_hz if mode == "bar" else line_interval
        self._next = 0.0
        self._t0 = 0.0
        self._step0 = 0
        self._shown_step = -1

    def on_train_start(self, trainer: Trainer, module: LabModule) -> None:
        self._t0 = time.monotonic()
        self._step0 = trainer.global_step
        self._next = self._t0 + (self.interval if self.mode == "lines" else 0.0)

    def on_train_batch_end(self, trainer: Trainer, module: LabModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        self._show(trainer, batch_idx + 1, now)

    def on_validation_end(self, trainer: Trainer, module: LabModule) -> None:
        if self.mode == "lines" and trainer.state == "fit":
            values = {k: v for k, v in trainer.progress_metrics().items() if k.startswith("val")}
            if values:
                self._write(f"validation  epoch {trainer.current_epoch + 1}  step {trainer.global_step}  {_fmt(values)}\n")

    def on_train_epoch_end(self, trainer: Trainer, module: LabModule) -> None:
        self._show(trainer, trainer.num_training_batches, time.monotonic(), end=True)

    def on_train_end(self, trainer: Trainer, module: LabModule) -> None:
        if self.mode == "bar":
            self._write("\n")
        elif trainer.global_step != self._shown_step:  # stopped mid-epoch: say where it ended
            self._show(trainer, trainer._loop.batches_done, time.monotonic())
        if self.show_insight and trainer.insight is not None and trainer.insight.batches:
            self._write(trainer.insight.text() + "\n")

    def _show(self, trainer: Trainer, batch: int | None, now: float, end: bool = False) -> None:
        elapsed = max(now - self._t0, 1e-9)
        rate = (trainer.global_step - self._step0) / elapsed
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs is not None else ""
        total = trainer.num_training_batches
        head = f"epoch {trainer.current_epoch + 1}{epochs}"  # people count epochs from 1
        if self.mode == "bar" and total:
            done = min(batch or 0, total)
            filled = int(24 * done / total)
            head += f" [{'#' * filled}{'.' * (24 - filled)}] {done}/{total}"
        elif total:
            head += f"  batch {batch}/{total}"
        line = f"{head}  step {trainer.global_step}  {rate:.1f} steps/s  {_fmt(trainer.progress_metrics())}"
        self._shown_step = trainer.global_step
        if self.mode == "bar":
            self._write("\r" + line[:160].ljust(100) + ("\n" if end else ""))
        else:
            self._write(line + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
