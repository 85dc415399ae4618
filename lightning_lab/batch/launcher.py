"""The launcher: one small process that imports papermill once, then forks a worker per grid point.

Run as a script (``python launcher.py WORKER_FILE``) by :mod:`lightning_lab.batch.pool`; it and the
worker use only the standard library and papermill, so neither pays for importing torch, and it
never re-imports the caller's main module (as multiprocessing's spawn and forkserver do). It is
single-threaded, which keeps forking safe. Started in its own session, so Ctrl-C in a terminal
reaches only the batch process, which decides what stops.

Protocol, one JSON object per line:

* stdin, from the batch: ``{"task": {...}}`` starts a worker for that task; end of input stops
  every worker (SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`) and the launcher.
* stdout, to the batch: ``{"ready": true}`` once papermill is imported, ``{"id", "pid"}`` when a
  worker started, ``{"id", "exit"}`` when it ended (``exit`` is the return code, negative for a
  signal), ``{"error": "..."}`` if the launcher cannot work.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import signal
import sys
import time
from typing import Any

STOP_GRACE_S = 15.0


def _send(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _load_worker(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("lightning_lab_batch_worker", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the batch worker from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _fork(worker: Any, task: dict[str, Any]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)  # the protocol pipes belong to the launcher
        os.dup2(devnull, 1)
        worker.execute_point(task)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()  # into the point's log: the worker redirected stderr first thing
    finally:
        os._exit(code)


def _reap(running: dict[int, str]) -> None:
    while running:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        point = running.pop(pid, None)
        if point is not None:
            _send({"id": point, "exit": os.waitstatus_to_exitcode(status)})


def _stop(running: dict[int, str]) -> None:
    for pid in running:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_S
    while running and time.monotonic() < deadline:
        _reap(running)
        time.sleep(0.05)
    for pid in list(running):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while running:
        _reap(running)
        time.sleep(0.05)


def main(worker_file: str) -> None:
    """Serve tasks from stdin until it closes (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the batch process decides; it sends SIGTERM to workers
    try:
        import papermill  # noqa: F401 - imported once here, inherited by every worker

        worker = _load_worker(worker_file)
    except Exception as exc:
        _send({"error": f"{type(exc).__name__}: {exc}"})
        return
    running: dict[int, str] = {}
    signal.signal(signal.SIGTERM, lambda signum, frame: (_stop(running), os._exit(0)))
    _send({"ready": True})
    buffer = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.1)
        _reap(running)
        if not readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:  # the batch closed our input (finished, stopping, or died)
            _stop(running)
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                task = json.loads(line)["task"]
                pid = _fork(worker, task)
                running[pid] = task["id"]
                _send({"id": task["id"], "pid": pid})


if __name__ == "__main__":
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # our folder's modules (cli, plot, ...) must not shadow anything papermill imports
    main(sys.argv[1])
