"""What ``self.log`` records: per-step values and batch-size-weighted epoch means, per stage."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from lightning_lab.engine.data import batch_size_of
from lightning_lab.errors import UserCodeError

Scalar = float | torch.Tensor
_RESERVED = frozenset({"step", "epoch", "time"})
_STEP_HOOKS = frozenset({"training_step", "on_train_batch_start", "on_train_batch_end"})


class _Mean:
    """Running weighted mean, kept as python floats (exact and cheap on CPU) or device tensors."""

    __slots__ = ("total", "weight")

    def __init__(self, total: Scalar = 0.0, weight: float = 0.0) -> None:
        self.total = total
        self.weight = weight

    def add(self, value: Scalar, weight: float) -> None:
        self.total = self.total + value * weight
        self.weight += weight


class MetricCollector:
    """Receives ``self.log`` calls from the user's module during one stage of one epoch.

    The trainer sets :attr:`hook` (the method being run) before calling user code; that decides
    the Lightning defaults (per step inside ``training_step`` and the train-batch hooks, per
    epoch elsewhere) and the error messages. Tensors on the CPU become floats at once; CUDA
    tensors stay on the device until a view reads them, so logging never forces a sync.
    """

    def __init__(self, reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.hook = "training_step"
        self.stage = "train"
        self._checked: set[str] = set()  # names already validated
        self.owner = "LabModule"
        self.batch: Any = None  # the batch being processed; its size weighs epoch means
        self.reduce_mean = reduce_mean
        self.step_values: dict[str, Scalar] = {}
        self.means: dict[str, dict[str, _Mean]] = {"train": {}, "validate": {}, "test": {}, "predict": {}}
        self.latest: dict[str, Scalar] = {}
        self.prog_bar: set[str] = set()
        # The last CPU tensor logged per step and its float: the trainer's finiteness check of the
        # loss reuses it instead of reading the same tensor a second time.
        self.logged_tensor: torch.Tensor | None = None
        self.logged_value = 0.0

    def log(self, name: str, value: Any, on_step: bool | None, on_epoch: bool | None, prog_bar: bool,
            sync_dist: bool, batch_size: int | None) -> None:
        """Record one value (see ``LabModule.log`` for the semantics)."""
        if on_step is None or on_epoch is None:
            in_step = self.hook in _STEP_HOOKS
            if on_step is None:
                on_step = in_step
            if on_epoch is None:
                on_epoch = not in_step
        if name not in self._checked:
            self._check_name(name)
        # The common case first: a CPU tensor becomes a float here, once.
        if type(value) is torch.Tensor and value.is_cpu:
            try:
                number = value.item()
            except RuntimeError:  # several elements: _scalar says what to do instead
                value = self._scalar(name, value)
            else:
                self.logged_tensor = value
                value = self.logged_value = number
        else:
            value = self._scalar(name, value)
        if on_step:
            key = f"{name}_step" if on_epoch else name
            # Evaluation ranks may see different batch counts: reducing per step there could hang.
            if sync_dist and self.reduce_mean is not None and self.stage == "train":
                value = float(self.reduce_mean(torch.as_tensor(value, dtype=torch.float64)))
            self.step_values[key] = value
            self.latest[key] = value
        if on_epoch:
            key = f"{name}_epoch" if on_step else name
            means = self.means[self.stage]
            mean = means.get(key)
            if mean is None:
                mean = means[key] = _Mean()
            mean.add(value, float(batch_size) if batch_size is not None else batch_size_of(self.batch))
        if prog_bar:
            self.prog_bar.add(name)

    def _check_name(self, name: Any) -> None:
        if not isinstance(name, str) or name in _RESERVED:
            raise UserCodeError(
                f"self.log({name!r}, ...) in {self.owner}.{self.hook}: the name must be a string other "
                f"than {sorted(_RESERVED)}, which the run directory uses for its own fields."
            )
        self._checked.add(name)

    def _scalar(self, name: str, value: Any) -> Scalar:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise UserCodeError(
                    f"self.log({name!r}, ...) in {self.owner}.{self.hook} got a tensor of shape "
                    f"{tuple(value.shape)}; log a scalar, e.g. `value.mean()`."
                )
            if value.device.type == "cpu":
                return value.item()
            return value.detach().reshape(())
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if hasattr(value, "item") and getattr(value, "size", 2) == 1:  # numpy scalar
                return float(value.item())
            raise UserCodeError(
                f"self.log({name!r}, ...) in {self.owner}.{self.hook} got {type(value).__name__} "
                f"{value!r}; log a number or a one-element tensor."
            )
        return float(value)

    def compute_epoch(self, stage: str, sync: Callable[[dict[str, list[float]]], dict[str, list[float]]]
                      | None = None) -> dict[str, float]:
        """Finish ``stage``'s epoch: weighted means (totals summed over all processes by ``sync``)."""
        means, self.means[stage] = self.means[stage], {}
        pairs = {name: [float(m.total), m.weight] for name, m in means.items()}
        if sync is not None:
            pairs = sync(pairs)
        result = {n: (t / w if w else math.nan) for n, (t, w) in sorted(pairs.items())}
        self.latest.update(result)
        return result

    def state_dict(self) -> dict[str, Any]:
        """The open training-epoch accumulators (for mid-epoch checkpoints)."""
        return {k: [float(m.total), m.weight] for k, m in self.means["train"].items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.means["train"] = {k: _Mean(t, w) for k, (t, w) in state.items()}

    def callback_metrics(self) -> dict[str, float]:
        """The latest value of every metric, as plain floats."""
        return {k: float(v) for k, v in self.latest.items()}
