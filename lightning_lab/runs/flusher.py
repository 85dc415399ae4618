"""One background thread that flushes every open :class:`~lightning_lab.runs.writer.RunWriter`.

A thread per writer would cost every fit a thread start and, at its end, a join that waits for
that thread to be scheduled again — milliseconds on a busy machine, for a few microseconds of
work. This thread is started once per process and drains each registered writer's queue every
``flush_interval`` seconds of that writer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Flusher:
    """Calls each registered ``drain`` callable every ``interval`` seconds on one daemon thread."""

    def __init__(self) -> None:
        self._due: dict[Callable[[], None], tuple[float, float]] = {}  # drain -> (next time, interval)
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, drain: Callable[[], None], interval: float) -> None:
        """Start calling ``drain`` every ``interval`` seconds."""
        with self._wake:
            self._due[drain] = (time.monotonic() + interval, interval)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lightning_lab-metrics", daemon=True)
                self._thread.start()
            self._wake.notify()

    def remove(self, drain: Callable[[], None]) -> None:
        """Stop calling ``drain`` (a call in progress finishes)."""
        with self._wake:
            self._due.pop(drain, None)

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                ready = [d for d, (at, _) in self._due.items() if at <= now]
                for drain in ready:
                    self._due[drain] = (now + self._due[drain][1], self._due[drain][1])
                if not ready:
                    soonest = min((at for at, _ in self._due.values()), default=None)
                    self._wake.wait(None if soonest is None else soonest - now)
                    continue
            for drain in ready:
                try:
                    drain()
                except Exception:  # noqa: BLE001 - a writer keeps its own error; the thread must live on
                    pass


FLUSHER = Flusher()
