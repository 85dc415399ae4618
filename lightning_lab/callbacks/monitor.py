"""Reading a monitored metric, with the error every monitoring callback gives when it is missing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_lab.errors import ConfigurationError

if TYPE_CHECKING:
    from lightning_lab.engine.trainer import Trainer


def read_monitored(trainer: Trainer, metric: str, owner: str) -> float:
    """The latest value of ``metric``.

    Raises:
        ConfigurationError: the metric was never logged; the message lists the ones that were.
    """
    metrics = trainer.callback_metrics
    if metric not in metrics:
        logged = ", ".join(sorted(metrics)) or "none yet"
        raise ConfigurationError(
            f"{owner} monitors {metric!r}, but no metric of that name was logged (logged: {logged}). "
            f"Log it with self.log({metric!r}, ...) in validation_step or training_step, or monitor one of those."
        )
    return metrics[metric]
