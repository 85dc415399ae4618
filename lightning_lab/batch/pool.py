"""Run grid points on N worker processes at once; Ctrl-C stops the workers and their kernels.

Workers are forked by the launcher (:mod:`lightning_lab.batch.launcher`), a process that has
imported papermill once, so a point costs no interpreter start and no import, yet shares nothing
with the others. Worker slot ``k`` gives its kernels ``gpus[k % len(gpus)]``: two points running at
once never share a GPU while ``workers <= len(gpus)``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_lab.batch import launcher, worker
from lightning_lab.batch.collect import collect, runs_under
from lightning_lab.batch.grid import Point
from lightning_lab.batch.progress import Progress
from lightning_lab.batch.results import PointResult
from lightning_lab.batch.worker import Task
from lightning_lab.errors import LabError

HEARTBEAT_S = 30.0


class BatchError(LabError, RuntimeError):
    """The batch machinery itself cannot work (papermill missing, the launcher died)."""


class Launcher:
    """The launcher process, seen from the batch: start it early, hand it tasks, read its events."""

    def __init__(self) -> None:
        """Start the launcher (it imports papermill while the caller goes on planning)."""
        self.process = subprocess.Popen(
            [sys.executable, launcher.__file__, worker.__file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in the terminal reaches the batch only; it stops the workers
        )
        self._buffer = b""
        self._ready = False

    def start(self, task: Task) -> None:
        """Fork a worker for ``task`` (its pid arrives as an event)."""
        self._wait_ready()
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"task": task}) + "\n").encode())
        self.process.stdin.flush()

    def events(self, timeout: float) -> list[dict[str, Any]]:
        """The launcher's messages that arrive within ``timeout`` seconds (``[]`` if none).

        Raises:
            BatchError: The launcher reported an error or exited while workers were expected.
        """
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:
            return []
        chunk = os.read(fd, 65536)
        if not chunk:
            raise BatchError(f"the batch launcher exited unexpectedly (exit code {self.process.wait()}); "
                             "the points' logs are under <out>/logs.")
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        messages = [json.loads(line) for line in lines if line.strip()]
        for message in messages:
            if "error" in message:
                raise BatchError(f"the batch launcher cannot run papermill: {message['error']}. "
                                 "Install the package's dependencies (pip install papermill).")
        return messages

    def _wait_ready(self) -> None:
        while not self._ready:
            for message in self.events(1.0):
                self._ready = self._ready or bool(message.get("ready"))

    def close(self, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Close the launcher's input: it stops any worker still running (SIGTERM, then SIGKILL), then exits.

        Events that arrive meanwhile (workers' exits) go to ``on_event``. A second Ctrl-C while
        waiting kills the launcher and its workers at once.
        """
        try:
            if self.process.stdin is not None and not self.process.stdin.closed:
                self.process.stdin.close()
            deadline = time.monotonic() + launcher.STOP_GRACE_S + 5.0
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    messages = self.events(0.2)
                except BatchError:
                    break
                for message in messages:
                    if on_event is not None:
                        on_event(message)
        except KeyboardInterrupt:
            pass
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)  # the workers share its process group
            self.process.wait()


@dataclass
class _Job:
    point: Point
    task: Task
    root: Path
    before: set[Path]
    devices: str | None
    slot: int


def execute(points: Sequence[Point], make_task: Callable[[Point, int], tuple[Task, Path, str | None]],
            workers: int, progress: Progress, stop_file: Path, on_result: Callable[[PointResult], None],
            launch: Launcher | None = None) -> list[PointResult]:
    """Execute ``points``, at most ``workers`` at a time, in order.

    Args:
        points: The points to execute.
        make_task: ``(point, slot) -> (task, run root, CUDA_VISIBLE_DEVICES)`` for a worker slot.
        workers: How many points run at once.
        progress: Where progress lines go.
        stop_file: Created when stopping, so that no worker retries a kernel it saw die.
        on_result: Called with each point's result as it finishes (to save results as they come).
        launch: A :class:`Launcher` started earlier (one is started when ``None``); closed on return.

    Returns:
        The results in the order the points finished.

    Raises:
        KeyboardInterrupt: After stopping every running worker (and so its kernel); the points that
            were running are reported to ``on_result`` as ``stopped``.
    """
    launch = launch or Launcher()
    pending = deque(points)
    free = list(range(workers))
    running: dict[str, _Job] = {}
    results: list[PointResult] = []

    def finish(point_id: str, exitcode: int | None, stopped: bool = False) -> None:
        job = running.pop(point_id)
        outcome = _read_outcome(Path(job.task["result"]))
        result = collect(job.point, Path(job.task["output"]), job.root, job.before, outcome, exitcode,
                         Path(job.task["log"]), job.devices)
        if stopped and result.status != "completed":
            result.status, result.error = "stopped", "stopped by Ctrl-C before it finished"
        free.append(job.slot)
        free.sort()
        results.append(result)
        on_result(result)
        progress.finished(result)

    try:
        last_line = time.monotonic()
        while pending or running:
            while pending and free:
                point, slot = pending.popleft(), free.pop(0)
                task, root, devices = make_task(point, slot)
                Path(task["result"]).unlink(missing_ok=True)
                running[point.id] = _Job(point, task, root, runs_under(root), devices, slot)
                launch.start(task)
                progress.started(point, slot, devices)
                last_line = time.monotonic()
            for event in launch.events(5.0):
                if "exit" in event:
                    finish(event["id"], event["exit"])
                    last_line = time.monotonic()
            if time.monotonic() - last_line > HEARTBEAT_S:
                progress.heartbeat()
                last_line = time.monotonic()
    except KeyboardInterrupt:
        stop_file.parent.mkdir(parents=True, exist_ok=True)
        stop_file.touch()
        if running:
            progress.say(f"interrupted: stopping {len(running)} running point(s) and their kernels")

        def stopped(event: dict[str, Any]) -> None:
            if "exit" in event and event["id"] in running:
                finish(event["id"], event["exit"], stopped=True)

        launch.close(stopped)
        for point_id in list(running):  # no exit event came (the launcher was killed)
            finish(point_id, None, stopped=True)
        raise
    finally:
        launch.close()
    return results


def _read_outcome(path: Path) -> dict[str, Any] | None:
    try:
        outcome = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path.unlink(missing_ok=True)
    return outcome if isinstance(outcome, dict) else None
