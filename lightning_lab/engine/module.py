"""LabModule and LabDataModule: the user-facing programming model (Lightning's hooks, our engine)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightning_lab.errors import LabError, UserCodeError

if TYPE_CHECKING:
    from lightning_lab.engine.trainer import Trainer


class AttributeDict(dict):
    """A dict whose keys read as attributes: ``self.hparams.lr``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(f"hparams has no {key!r}; it holds {sorted(self)}") from err

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


class LabModule(nn.Module):
    """A ``torch.nn.Module`` that knows how to train itself, in Lightning's vocabulary.

    Override ``training_step`` and ``configure_optimizers``; optionally ``validation_step``,
    ``test_step``, ``predict_step`` and the ``on_*`` hooks. Inside a step call ``self.log(...)``.

    Example::

        class Classifier(LabModule):
            def __init__(self, lr=1e-3):
                super().__init__()
                self.save_hyperparameters()
                self.net = nn.Linear(64, 10)

            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = F.cross_entropy(self.net(x), y)
                self.log("train_loss", loss)
                return loss

            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Plain attributes (not registered as submodules/buffers).
        object.__setattr__(self, "_trainer", None)
        object.__setattr__(self, "hparams", AttributeDict())

    # ------------------------------------------------------------------ state the trainer provides
    @property
    def trainer(self) -> Trainer:
        """The Trainer this module is being trained by."""
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            raise LabError(
                f"{type(self).__name__} is not attached to a Trainer: `self.trainer` exists only inside "
                "trainer.fit/validate/test/predict."
            )
        return trainer

    @property
    def device(self) -> torch.device:
        """The device of the module's first parameter or buffer (cpu for an empty module)."""
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def current_epoch(self) -> int:
        """The epoch being trained (0-based); 0 outside training."""
        trainer = getattr(self, "_trainer", None)
        return trainer.current_epoch if trainer is not None else 0

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far; 0 outside training."""
        trainer = getattr(self, "_trainer", None)
        return trainer.global_step if trainer is not None else 0

    # ------------------------------------------------------------------ logging
    def log(
        self,
        name: str,
        value: float | torch.Tensor,
        *,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        prog_bar: bool = False,
        sync_dist: bool = False,
        batch_size: int | None = None,
    ) -> None:
        """Record a scalar metric.

        Defaults follow Lightning: inside ``training_step`` a value is recorded per step; inside
        validation/test steps and epoch hooks it is averaged over the epoch, weighted by batch
        size. With both ``on_step`` and ``on_epoch`` the names become ``<name>_step`` and
        ``<name>_epoch``. ``sync_dist`` averages training step values over all processes; epoch
        values are always reduced over all processes (weighted sums, so uneven shards are exact).
        Outside a Trainer this is a no-op, so a step can be called by hand while debugging.

        Raises:
            UserCodeError: the value is not a scalar (a tensor with more than one element, a string...).
        """
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return
        trainer._metrics.log(name, value, on_step, on_epoch, prog_bar, sync_dist, batch_size)

    def log_dict(self, metrics: Mapping[str, float | torch.Tensor], **kwargs: Any) -> None:
        """Call :meth:`log` for every item of ``metrics`` with the same options."""
        for name, value in metrics.items():
            self.log(name, value, **kwargs)

    def save_hyperparameters(self, *names: str, ignore: str | list[str] | None = None) -> None:
        """Store the ``__init__`` arguments in ``self.hparams`` (and in the run's ``run.json``).

        Call it from ``__init__``. With ``names``, only those arguments are kept; ``ignore`` drops some.
        """
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        if caller is None or caller.f_code.co_name != "__init__":
            raise UserCodeError(
                f"{type(self).__name__}.save_hyperparameters() must be called from __init__, "
                "where the arguments to save are local variables."
            )
        info = inspect.getargvalues(caller)
        values: dict[str, Any] = {a: info.locals[a] for a in info.args if a not in ("self", "__class__")}
        if info.varargs and info.locals.get(info.varargs):
            values[info.varargs] = list(info.locals[info.varargs])
        if info.keywords:
            values.update(info.locals.get(info.keywords) or {})
        skip = {ignore} if isinstance(ignore, str) else set(ignore or ())
        unknown = [n for n in names if n not in values]
        if unknown:
            raise UserCodeError(
                f"{type(self).__name__}.save_hyperparameters got {unknown}, which are not arguments of "
                f"__init__ (it has {sorted(values)})."
            )
        keep = names or tuple(values)
        self.hparams.update({k: values[k] for k in keep if k not in skip})

    # ------------------------------------------------------------------ hooks users override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | Mapping[str, Any]:
        """Compute and return the loss for one batch (or a dict holding ``"loss"``)."""
        raise UserCodeError(
            f"{type(self).__name__} does not define training_step(self, batch, batch_idx): "
            "add one that returns the loss tensor."
        )

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        """Evaluate one validation batch; log metrics with ``self.log``."""

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        """Evaluate one test batch; log metrics with ``self.log``."""

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """Return predictions for one batch. By default: ``self(x)`` for ``x`` the batch or its first item."""
        if isinstance(batch, (list, tuple)):
            batch = batch[0]
        return self(batch)

    def configure_optimizers(self) -> Any:
        """Return an optimizer; or ``(optimizers, schedulers)``; or ``{"optimizer": .., "lr_scheduler": ..}``."""
        raise UserCodeError(
            f"{type(self).__name__} does not define configure_optimizers(self): add one that returns an "
            "optimizer, e.g. `return torch.optim.Adam(self.parameters(), lr=1e-3)`."
        )

    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None: ...
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...


class LabDataModule:
    """Bundles the data of an experiment: ``setup(stage)`` then the ``*_dataloader()`` methods.

    ``stage`` is ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``. A method that is not
    overridden returns ``None`` (no such data).
    """

    def setup(self, stage: str) -> None:
        """Build datasets for ``stage``; called on every process before its loaders are requested."""

    def train_dataloader(self) -> Any:
        """The training DataLoader."""
        return None

    def val_dataloader(self) -> Any:
        """The validation DataLoader (or a list of them)."""
        return None

    def test_dataloader(self) -> Any:
        """The test DataLoader (or a list of them)."""
        return None

    def predict_dataloader(self) -> Any:
        """The prediction DataLoader."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Extra state to keep in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def is_overridden(obj: object, name: str, base: type) -> bool:
    """Whether ``type(obj)`` defines ``name`` itself rather than inheriting ``base``'s default."""
    method = getattr(type(obj), name, None)
    return method is not None and method is not getattr(base, name, None)
