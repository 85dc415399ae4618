"""The Callback base class: hooks named like the module's, each receiving ``(trainer, module)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_lab.engine.module import LabModule
    from lightning_lab.engine.trainer import Trainer


class Callback:
    """Override the hooks you need. A callback with state returns it from :meth:`state_dict`
    (kept in checkpoints, restored on resume under :attr:`state_key`)."""

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint (class name by default)."""
        return type(self).__qualname__

    def state_dict(self) -> dict[str, Any]:
        """State to keep in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def uses_hook(self, hook: str) -> bool:
        """Whether the trainer should call ``hook`` on this callback (by default: if overridden).

        The trainer asks once per hook; per-step hooks that return ``False`` cost nothing.
        """
        method = getattr(type(self), hook, None)
        return method is not None and method is not getattr(Callback, hook, None)

    def on_fit_start(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_fit_end(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_train_start(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_train_end(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_train_epoch_start(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_train_epoch_end(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_train_batch_start(self, trainer: Trainer, module: LabModule, batch: Any, batch_idx: int) -> None: ...
    def on_train_batch_end(self, trainer: Trainer, module: LabModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None: ...
    def on_validation_start(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_validation_end(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_validation_epoch_start(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_validation_epoch_end(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_test_epoch_start(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_test_epoch_end(self, trainer: Trainer, module: LabModule) -> None: ...
    def on_exception(self, trainer: Trainer, module: LabModule, exception: BaseException) -> None: ...
