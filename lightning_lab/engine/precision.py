"""Precision plugins: how forward runs (autocast), how backward and the optimizer step are done."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from lightning_lab.errors import ConfigurationError

_NO_CONTEXT = nullcontext()  # reusable: the per-step path allocates nothing for full precision

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
_ALIASES = {"32": "32-true", 32: "32-true", "bf16": "bf16-mixed", "16": "16-mixed", 16: "16-mixed"}


class Precision:
    """Full float32: no autocast, plain backward and step."""

    name = "32-true"

    def forward_context(self) -> AbstractContextManager[Any]:
        """Context the forward pass (the user's step) runs in."""
        return _NO_CONTEXT

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss``."""
        loss.backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients to their true scale before clipping or inspecting them."""

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply the gradients."""
        optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """State kept in checkpoints (the grad scaler's, if any)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class MixedPrecision(Precision):
    """``torch.autocast`` to bf16 or fp16; fp16 also scales the loss with a ``GradScaler``."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = name
        self.device_type = device.type
        self.dtype = torch.bfloat16 if name == "bf16-mixed" else torch.float16
        self.scaler = torch.amp.GradScaler(device.type) if name == "16-mixed" else None
        self._unscaled: set[int] = set()

    def forward_context(self) -> AbstractContextManager[Any]:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None and id(optimizer) not in self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled.add(id(optimizer))

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()
        self._unscaled.discard(id(optimizer))

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def normalize_precision(value: Any) -> str:
    """Map a precision option (``"bf16-mixed"``, ``"bf16"``, ``16``...) to its canonical name.

    Raises:
        ConfigurationError: unknown value; the message lists the valid ones.
    """
    name = _ALIASES.get(value, value)
    if name not in PRECISIONS:
        raise ConfigurationError(
            f"precision={value!r} is not supported. Choose one of {', '.join(map(repr, PRECISIONS))}."
        )
    return name


def make_precision(value: Any, device: torch.device) -> Precision:
    """Build the plugin for ``value`` on ``device``."""
    name = normalize_precision(value)
    return Precision() if name == "32-true" else MixedPrecision(name, device)
