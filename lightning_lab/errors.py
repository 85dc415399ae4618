"""The one exception hierarchy users see: every message names their code, the value and the fix."""

from __future__ import annotations


class LabError(Exception):
    """Base of every error lightning_lab raises on purpose.

    The CLI and the ``%%train`` magic print a ``LabError`` as one paragraph (no traceback):
    its message must say what was wrong, where (the user's method or option) and how to fix it.
    """


class ConfigurationError(LabError, ValueError):
    """A Trainer/Engine option, CLI flag or callback argument has a value that cannot work."""


class UserCodeError(LabError, TypeError):
    """A user hook (``training_step``, ``configure_optimizers``, ...) returned something unusable."""


class CheckpointError(LabError, RuntimeError):
    """A checkpoint is missing, corrupt, truncated or was not written by lightning_lab."""


class NonFiniteError(LabError, FloatingPointError):
    """The loss or a gradient became NaN/inf; the message says at which step, batch and parameter."""


class RunDirectoryError(LabError, OSError):
    """A run directory is missing or its files cannot be read."""
