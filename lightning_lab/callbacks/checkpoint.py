"""ModelCheckpoint: ``last.ckpt`` always at hand, and the best ``k`` by a monitored metric."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_lab.callbacks.base import Callback
from lightning_lab.callbacks.monitor import read_monitored
from lightning_lab.errors import ConfigurationError

if TYPE_CHECKING:
    from lightning_lab.engine.module import LabModule
    from lightning_lab.engine.trainer import Trainer


class ModelCheckpoint(Callback):
    """Saves checkpoints into the run's ``checkpoints/`` folder (or ``dirpath``).

    Args:
        monitor: metric that ranks checkpoints (``None``: only ``last.ckpt`` is kept).
        mode: ``"min"`` or ``"max"``: which direction is better.
        save_top_k: how many ``best-*.ckpt`` to keep (``-1``: all, ``0``: none).
        save_last: keep ``last.ckpt`` current at each epoch end, every ``every_n_train_steps``
            and when training ends or is stopped — what ``ckpt_path="last"`` resumes.
        every_n_train_steps: also save ``last.ckpt`` every that many optimizer steps.
        dirpath: another folder for the files.

    Raises:
        ConfigurationError: bad ``mode``/``save_top_k``, or ``monitor`` names a metric that is never logged.
    """

    def __init__(self, monitor: str | None = None, mode: str = "min", save_top_k: int = 1, save_last: bool = True,
                 every_n_train_steps: int | None = None, dirpath: str | Path | None = None) -> None:
        if mode not in ("min", "max"):
            raise ConfigurationError(f"ModelCheckpoint(mode={mode!r}): choose 'min' or 'max'.")
        if not isinstance(save_top_k, int) or save_top_k < -1:
            raise ConfigurationError(f"ModelCheckpoint(save_top_k={save_top_k!r}): use -1 (all), 0 or a positive count.")
        if every_n_train_steps is not None and (not isinstance(every_n_train_steps, int) or every_n_train_steps < 1):
            raise ConfigurationError(
                f"ModelCheckpoint(every_n_train_steps={every_n_train_steps!r}): use a positive integer or None.")
        self.monitor = monitor
        self.mode = mode
        self.save_top_k = save_top_k
        self.save_last = save_last
        self.every_n_train_steps = every_n_train_steps
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.best_k: dict[str, float] = {}
        self.best_model_path = ""
        self.best_model_score: float | None = None
        self.last_model_path = ""
        self._last_saved_step = -1

    @property
    def state_key(self) -> str:
        return f"ModelCheckpoint[{self.monitor}]"

    def state_dict(self) -> dict[str, Any]:
        return {"best_k": dict(self.best_k), "best_model_path": self.best_model_path,
                "best_model_score": self.best_model_score, "last_model_path": self.last_model_path}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_k = dict(state.get("best_k", {}))
        self.best_model_path = state.get("best_model_path", "")
        self.best_model_score = state.get("best_model_score")
        self.last_model_path = state.get("last_model_path", "")

    def uses_hook(self, hook: str) -> bool:
        if hook == "on_train_batch_end":
            return self.every_n_train_steps is not None
        return super().uses_hook(hook)

    # -- when to save
    def on_train_batch_end(self, trainer: Trainer, module: LabModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0 and trainer._micro == 0 and trainer.global_step != self._last_saved_step:
            self._save_last(trainer)

    def on_validation_end(self, trainer: Trainer, module: LabModule) -> None:
        if self.monitor is not None:
            self._save_best(trainer)

    def on_train_epoch_end(self, trainer: Trainer, module: LabModule) -> None:
        if self.monitor is not None and not trainer._val_loaders:
            self._save_best(trainer)
        self._save_last(trainer)

    def on_train_end(self, trainer: Trainer, module: LabModule) -> None:
        if trainer.global_step != self._last_saved_step or not self.last_model_path:
            self._save_last(trainer)

    # -- how
    def _folder(self, trainer: Trainer) -> Path:
        return self.dirpath if self.dirpath is not None else trainer.checkpoint_dir

    # Every process takes the same decisions and calls save_checkpoint (it gathers each rank's
    # open epoch totals); only rank 0 touches files.
    def _save_last(self, trainer: Trainer) -> None:
        if not self.save_last:
            return
        path = self._folder(trainer) / "last.ckpt"
        self.last_model_path = str(path)
        self._last_saved_step = trainer.global_step
        trainer.save_checkpoint(path, wait=False)  # written by a background thread

    def _save_best(self, trainer: Trainer) -> None:
        if self.save_top_k == 0:
            return
        score = read_monitored(trainer, self.monitor, f"ModelCheckpoint(monitor={self.monitor!r})")
        score = trainer.engine.broadcast(score)  # an unsynced metric differs per rank: rank 0 decides
        if math.isnan(score):
            return
        worst = None
        if self.save_top_k != -1 and len(self.best_k) >= self.save_top_k:
            worst = max(self.best_k, key=self.best_k.get) if self.mode == "min" else min(self.best_k, key=self.best_k.get)
            if not self._better(score, self.best_k[worst]):
                return
        safe = self.monitor.replace("/", "-")
        path = self._folder(trainer) / f"best-epoch={trainer.current_epoch}-step={trainer.global_step}-{safe}={score:.4g}.ckpt"
        trainer.save_checkpoint(path)
        if worst is not None:  # removed only once its replacement is safely on disk
            del self.best_k[worst]
            if trainer.is_global_zero:
                Path(worst).unlink(missing_ok=True)
        self.best_k[str(path)] = score
        pick = min if self.mode == "min" else max
        self.best_model_path = pick(self.best_k, key=self.best_k.get)
        self.best_model_score = self.best_k[self.best_model_path]

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b
