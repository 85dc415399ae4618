"""Follow a run from outside its processes: tail ``metrics.jsonl`` (the same reader live views use)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from lightning_lab.runs.records import INDEX_KEYS, MetricsTail


class ProgressPrinter:
    """Prints one compact line per ``interval`` seconds: step, epoch and the latest metrics."""

    def __init__(self, interval: float = 2.0, stream: TextIO | None = None, max_metrics: int = 4) -> None:
        self.interval = interval
        self.stream = stream or sys.stdout
        self.max_metrics = max_metrics
        self.latest: dict[str, Any] = {}
        self._unshown = False
        self._next = 0.0

    def __call__(self, records: list[dict[str, Any]], final: bool = False) -> None:
        for record in records:
            self.latest.update(record)
        self._unshown = self._unshown or bool(records)
        now = time.monotonic()
        if not self._unshown or (now < self._next and not final):
            return
        self._next, self._unshown = now + self.interval, False
        values = [(k, v) for k, v in self.latest.items() if k not in INDEX_KEYS and not k.startswith("sys/")]
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in values[: self.max_metrics])
        step, epoch = self.latest.get("step"), self.latest.get("epoch")
        print(f"  step {step}  epoch {epoch + 1 if isinstance(epoch, int) else epoch}  {shown}",
              file=self.stream, flush=True)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_status(run_dir: Path) -> str | None:
    """``run.json["status"]`` of the run at ``run_dir`` (``None`` before the engine wrote it)."""
    try:
        return json.loads((Path(run_dir) / "run.json").read_bytes()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def follow(run_dir: Path, alive: Callable[[], bool],
           on_records: Callable[[list[dict[str, Any]]], None] | None = None,
           poll: float = 0.5, printer: Callable[..., None] | None = None) -> None:
    """Tail ``<run_dir>/metrics.jsonl`` every ``poll`` seconds until ``alive()`` is false.

    Args:
        run_dir: The run directory (``metrics.jsonl`` need not exist yet).
        alive: Whether the processes (or job) producing the run are still going.
        on_records: Called with each batch of new records (a live view).
        poll: Seconds between reads.
        printer: Called like ``on_records``, and once more at the end with ``final=True``
            (e.g. a :class:`ProgressPrinter`).
    """
    tail = MetricsTail(Path(run_dir) / "metrics.jsonl")
    while True:
        running = alive()
        records = tail.read_new()  # read after alive(): the last records written are never missed
        if records:
            if on_records is not None:
                on_records(records)
            if printer is not None:
                printer(records)
        if not running:
            break
        time.sleep(poll)
    if printer is not None:
        printer([], final=True)


def end_summary(run_dir: Path) -> str:
    """One line on how the run ended: status, final metrics, or the error and where its log is."""
    try:
        info = json.loads((Path(run_dir) / "run.json").read_bytes())
    except (OSError, ValueError):
        return f"run {run_dir}: no run.json (the program ended before training started; see {Path(run_dir) / 'logs'})"
    status = info.get("status")
    line = f"run {info.get('name')}/{info.get('id')}: {status}"
    final = {k: v for k, v in (info.get("final") or {}).items() if not k.startswith("sys/")}
    if final:
        line += "  " + " ".join(f"{k}={_fmt(v)}" for k, v in list(final.items())[:6])
    error = info.get("error")
    if status == "failed" and isinstance(error, dict):
        where = f" (rank {error['rank']}, log {error.get('log')})" if "rank" in error else ""
        line += f"  {error.get('type')}: {error.get('message')}{where}"
    return line
