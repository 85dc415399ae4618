"""Graceful stop requests: Ctrl-C / kernel interrupt, a ``STOP`` file, and Slurm's preemption signal."""

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

    # Under DDP the ranks agree on a stop by an all-reduce (max) of these codes.
    _CODES = {None: 0, "stop file": 1, "requested": 1, "interrupt": 2, "preempted": 3}
    _REASONS = {1: "requested", 2: "interrupt", 3: "preempted"}

    def __init__(self, poll_interval: float = 0.5, preemptible: bool = False) -> None:
        self.reason: str | None = None
        self.preemptible = preemptible  # SIGUSR1 (Slurm's warning before the time limit) → "preempted"
        self.stop_file: Path | None = None
        self._poll_interval = poll_interval
        self._next_poll = 0.0
        self._previous: Any = None
        self._previous_usr1: Any = None
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

    def agree(self, engine: Any) -> str | None:
        """The stop reason all ranks agree on (one small all-reduce): any rank asking stops them all."""
        import torch

        sent = self._CODES.get(self.requested(), 1)
        agreed = int(engine.all_reduce(torch.tensor([sent], dtype=torch.int32), op="max").item())
        # Answer from the agreed code alone: a signal handled while the all-reduce ran (its handler
        # runs as it returns) set self.reason on this rank only. Stopping on it here would leave
        # the other ranks waiting in the next step's collectives; it counts at the next agreement.
        if agreed == 0:
            return None
        if agreed != sent:
            self.reason = self._REASONS[agreed]
        return self.reason

    def install(self) -> None:
        """Take over SIGINT, and SIGUSR1 when preemptible (main thread only; elsewhere signals cannot be handled)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
        if self.preemptible:
            self._previous_usr1 = signal.signal(signal.SIGUSR1, self._on_sigusr1)
            # Restart system calls the signal interrupts: a DDP collective blocked in gloo's socket I/O
            # would otherwise fail with EINTR and abort the process instead of saving.
            signal.siginterrupt(signal.SIGUSR1, False)
        self._installed = True

    def uninstall(self) -> None:
        """Give SIGINT (and SIGUSR1) back to whoever had them."""
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            if self.preemptible:
                signal.signal(signal.SIGUSR1, self._previous_usr1 if self._previous_usr1 is not None else signal.SIG_DFL)
            self._installed = False

    def _on_sigusr1(self, signum: int, frame: FrameType | None) -> None:
        self.reason = "preempted"  # overrides a plain stop: the job must come back
        print("\nlightning_lab: preemption signal (SIGUSR1): saving last.ckpt after this step, then requeueing.",
              file=sys.stderr, flush=True)

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
