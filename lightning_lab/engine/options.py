"""Checking and resolving the Trainer's options: limits, intervals, default callbacks."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from lightning_lab.callbacks.base import Callback
from lightning_lab.errors import ConfigurationError


def default_callbacks(callbacks: Sequence[Callback] | Callback | None, checkpointing: bool,
                       progress: str | bool | Callback, is_zero: bool) -> list[Callback]:
    from lightning_lab.callbacks import ModelCheckpoint
    from lightning_lab.engine.progress import TextProgress

    result = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
    for callback in result:
        if not isinstance(callback, Callback):
            raise ConfigurationError(f"callbacks must be Callback instances, got {type(callback).__name__}.")
    if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in result):
        result.append(ModelCheckpoint())
    if isinstance(progress, Callback):
        result.append(progress)
    elif progress not in (False, None, "off"):
        if progress not in ("auto", "bar", "lines", True):
            raise ConfigurationError(f"progress={progress!r}; choose 'auto', 'bar', 'lines' or False.")
        if progress in ("auto", True):
            progress = "bar" if sys.stdout.isatty() else "lines"
        if is_zero:
            result.append(TextProgress(mode=progress))
    return result


def as_list(loaders: Any) -> list[Any]:
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


def batch_limit(limit: int | float | None, length: int | None) -> int | float:
    total = math.inf if length is None else length
    if limit is None:
        return total
    if isinstance(limit, float):
        return total if not math.isfinite(total) else int(total * limit)
    return min(limit, total)


def check_positive(option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{option} must be a positive integer, got {value!r}.")


def check_interval(value: Any) -> None:
    ok = (isinstance(value, float) and 0.0 < value <= 1.0) or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    if not ok:
        raise ConfigurationError(
            f"val_check_interval must be a fraction of an epoch in (0, 1] or a number of batches ≥ 1, got {value!r}."
        )


def check_limit(option: str, value: Any) -> None:
    if value is None:
        return
    ok = (isinstance(value, float) and 0.0 <= value <= 1.0) or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    if not ok:
        raise ConfigurationError(f"{option} must be a fraction in [0, 1], a number of batches, or None; got {value!r}.")
