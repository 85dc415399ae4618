"""The Logger interface: extra sinks that receive the same records as the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Logger:
    """Receives every record the trainer writes to ``metrics.jsonl`` (rank 0 only).

    ``setup`` is called when a run directory is opened, ``log_metrics`` per record (values may be
    floats or 0-dim tensors: keep this cheap), ``finalize`` when the stage ends.
    """

    def setup(self, run_dir: Path, info: dict[str, Any]) -> None:
        """A run started or resumed in ``run_dir``."""

    def log_metrics(self, record: dict[str, Any]) -> None:
        """One record: ``{"step", "epoch", "time", <metric>: value, ...}``."""

    def finalize(self, status: str) -> None:
        """The stage ended with ``status``; write anything still buffered."""
