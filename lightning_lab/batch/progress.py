"""Plain progress lines while a sweep runs: points done/running/failed and the best metric so far."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from lightning_lab.batch.grid import Point
from lightning_lab.batch.results import PointResult, best_point, choose_metric

PREFIX = "batch:"


class Progress:
    """Prints one line per event (start, finish, skip) and a status line; nothing when ``enabled`` is false.

    Lines only, no carriage returns: they read the same in a terminal, a CI log and a notebook.
    """

    def __init__(self, total: int, metric: str | None = None, stream: TextIO | None = None,
                 enabled: bool = True) -> None:
        self.total = total
        self.metric = metric
        self.stream = stream
        self.enabled = enabled
        self.results: list[PointResult] = []
        self.running: dict[str, tuple[Point, float]] = {}

    def say(self, text: str) -> None:
        """Print one line (to stderr unless a stream was given)."""
        if self.enabled:
            print(f"{PREFIX} {text}", file=self.stream or sys.stderr, flush=True)

    def skipped(self, skipped: Sequence[PointResult]) -> None:
        """Record points completed by an earlier sweep, and name them."""
        self.results += skipped
        for point in skipped:
            self.say(f"skipped {point.label} (completed in an earlier sweep; --rerun to run it again)")

    def started(self, point: Point, worker: int, devices: str | None) -> None:
        self.running[point.id] = (point, time.monotonic())
        where = f"worker {worker + 1}" + (f", CUDA_VISIBLE_DEVICES={devices}" if devices is not None else "")
        self.say(f"started {point.label} ({where})")

    def finished(self, result: PointResult) -> None:
        self.running.pop(result.id, None)
        self.results.append(result)
        metric = choose_metric(self.results, self.metric)
        value = result.final.get(metric) if metric else None
        shown = f", {metric}={value:.4g}" if isinstance(value, (int, float)) else ""
        took = f" in {result.duration:.1f}s" if result.duration is not None else ""
        retried = " (its kernel failed to start once)" if result.attempts > 1 else ""
        if result.status == "completed":
            self.say(f"completed {result.label}{took}{shown}{retried}")
        else:
            self.say(f"{result.status} {result.label}{took}{retried}: {result.error or 'no error recorded'}")
        self.say(self.status())

    def heartbeat(self) -> None:
        """The status line with how long each running point has been running."""
        now = time.monotonic()
        running = ", ".join(f"{p.label} {now - t:.0f}s" for p, t in self.running.values())
        self.say(f"{self.status()}" + (f" [running: {running}]" if running else ""))

    def status(self) -> str:
        """``5/8 done · 2 running · 1 failed · best val_loss 0.2412 (lr=0.003 hidden=64)``."""
        failed = sum(r.status == "failed" for r in self.results)
        stopped = sum(r.status == "stopped" for r in self.results)
        parts = [f"{len(self.results)}/{self.total} done", f"{len(self.running)} running", f"{failed} failed"]
        if stopped:
            parts.append(f"{stopped} stopped")
        metric = choose_metric(self.results, self.metric)
        best = best_point(self.results, metric)
        if best is not None and metric is not None:
            parts.append(f"best {metric} {best.final[metric]:.4g} ({best.label})")
        return " · ".join(parts)
