"""Graceful stop requests: Ctrl-C / kernel interrupt, and a ``STOP`` file in the run directory."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

STOP_FILE = "STOP"


class StopRequests:
    """Turns the first SIGINT into "stop after this step"; a second one interrupts at once.

    Also polls ``<run dir>/STOP`` (written by the CLI or the Lab plugin) at most every
    ``poll_interval`` seconds, so the per-step cost is one clock read.
    """

    def __init__(self, poll_interval: float = 0.5) -> None:
        self.reason: str | None = None
        self.stop_file: Path | None = None
        self._poll_interval = poll_interval
        self._next_poll = 0.0
        self._previous: Any = None
        self._installed = False

    def request(self, reason: str) -> None:
        """Ask the loop to stop at the next step boundary."""
        if self.reason is None:
            self.reason = reason

    def requested(self) -> str | None:
        """The reason a stop was asked for, or ``None`` (cheap: call it every step)."""
        if self.reason is None and self.stop_file is not None:
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + self._poll_interval
                if self.stop_file.exists():
                    self.reason = "stop file"
        return self.reason

    def install(self) -> None:
        """Take over SIGINT (main thread only; elsewhere signals cannot be handled)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
        self._installed = True

    def uninstall(self) -> None:
        """Give SIGINT back to whoever had it."""
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.reason == "interrupt":
            raise KeyboardInterrupt
        self.reason = "interrupt"
        print(
            "\nlightning_lab: stopping after the current step and saving last.ckpt "
            "(interrupt again to abort at once).",
            file=sys.stderr,
            flush=True,
        )
