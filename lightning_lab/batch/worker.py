"""The worker process of one grid point: set the kernel's environment, run papermill, report.

Runs in a process of its own (forked by the launcher, which has papermill imported), so the
environment set here — ``CUDA_VISIBLE_DEVICES``, the run root, the run name, headless
``%%train`` — is the kernel's from its first instruction, and nothing leaks between points or
into the caller's process. Output (papermill's log, the kernel's own stderr) goes to the point's
log file; the outcome goes to a small JSON file the batch reads.

Standard library and papermill only: the launcher loads this file without importing
``lightning_lab`` (and so torch).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TypedDict

STOP_WAIT_S = 10.0  # how long a stopped ``%%train`` may take to save its checkpoint and mark its run


class Task(TypedDict):
    """What the parent hands a worker: absolute paths only (the worker never changes directory)."""

    id: str
    input: str          # the source notebook
    output: str         # the executed notebook to write
    params: dict[str, Any]
    env: dict[str, str]  # the complete environment of the kernel
    cwd: str            # the kernel's working directory (the source notebook's folder, as in Jupyter)
    kernel: str | None
    timeout: float | None  # seconds a cell may run (papermill's execution timeout)
    start_timeout: float
    log: str
    result: str
    stop: str           # exists once the parent is stopping the batch: never retry then
    parent_pid: int


def execute_point(task: Task) -> None:
    """Execute one point's notebook with papermill (the entry point of the worker process).

    A kernel that fails to start (a port race, "Kernel didn't respond in 60 seconds") is retried
    once; an error raised by the notebook is not. Writes ``{"status", "error", "attempts",
    "duration"}`` to ``task["result"]``.
    """
    _redirect_output(Path(task["log"]))
    os.environ.clear()
    os.environ.update(task["env"])
    _stop_on_sigterm(Path(task["env"]["LIGHTNING_LAB_ROOT"]))
    _exit_with_parent(task["parent_pid"])
    started = time.monotonic()
    outcome: dict[str, Any] = {"status": "failed", "error": None}
    attempts = 0
    while True:
        attempts += 1
        try:
            _papermill(task)
            outcome = {"status": "completed", "error": None}
        except Exception as exc:  # every failure becomes data in the results table
            if attempts == 1 and _kernel_start_failure(exc, Path(task["output"])) and not Path(task["stop"]).exists():
                logging.getLogger("lightning_lab.batch").warning(
                    "kernel did not start (%s: %s); retrying once", type(exc).__name__, exc)
                continue
            outcome = {"status": "failed", "error": describe_failure(exc, Path(task["output"]))}
        break
    outcome.update(attempts=attempts, duration=round(time.monotonic() - started, 3))
    result = Path(task["result"])
    partial = result.with_name(result.name + ".partial")
    partial.write_text(json.dumps(outcome), encoding="utf-8")
    os.replace(partial, result)  # the batch reads a whole result or none


def _papermill(task: Task) -> None:
    import papermill

    papermill.execute_notebook(
        task["input"], task["output"], parameters=task["params"], kernel_name=task["kernel"],
        progress_bar=False, log_output=True, start_timeout=math.ceil(task["start_timeout"]),
        execution_timeout=math.ceil(task["timeout"]) if task["timeout"] else None,
        # nbclient starts the kernel in resources.metadata.path: papermill's cwd= would chdir this process
        resources={"metadata": {"path": task["cwd"]}},
    )


def _redirect_output(log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)  # the kernel inherits these: its own stderr lands in the log too
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _stop_on_sigterm(root: Path) -> None:
    """SIGTERM (the parent stopping the batch) stops the kernel the way the ■ button does.

    The kernel gets SIGINT, so a running ``%%train`` finishes its step, saves ``last.ckpt`` and
    marks its run ``stopped``; once no run this execution started is still running (at most
    :data:`STOP_WAIT_S`), the kernel is killed and the worker exits. SIGINT itself is ignored:
    the batch process alone decides what stops.
    """
    before = _running_runs(root)

    def stop(signum: int, frame: object) -> None:
        kernels = _child_pids()
        for pid in kernels:
            _signal(pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_WAIT_S
        while kernels and _running_runs(root) - before and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in kernels:
            _signal(pid, signal.SIGKILL)
        logging.getLogger("lightning_lab.batch").warning("stopped by the batch (signal %d)", signum)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _running_runs(root: Path) -> set[Path]:
    running = set()
    for file in root.glob("*/*/run.json"):
        try:
            if json.loads(file.read_bytes()).get("status") == "running":
                running.add(file.parent)
        except (OSError, ValueError, AttributeError):
            continue
    return running


def _child_pids() -> list[int]:
    """This process's children (the kernel; Linux /proc; elsewhere none, and the kernel exits with us)."""
    pids: list[int] = []
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        try:
            pids += [int(pid) for pid in children.read_text().split()]
        except (OSError, ValueError):
            continue
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_with_parent(parent_pid: int) -> None:
    """If the batch's process dies (kill -9), stop too, as if it had asked (see :func:`_stop_on_sigterm`)."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            except PermissionError:
                continue

    threading.Thread(target=watch, daemon=True, name="lightning_lab-batch-parent-watch").start()


def _cells(notebook: Path) -> list[dict[str, Any]]:
    try:
        return json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return []


def _started(cell: dict[str, Any]) -> bool:
    # not "status": papermill marks every pending cell "completed" when it gives up on a notebook
    return cell.get("metadata", {}).get("papermill", {}).get("start_time") is not None


def _kernel_start_failure(exc: BaseException, output: Path) -> bool:
    """Whether ``exc`` is the kernel failing to start (worth one retry), not the notebook failing.

    papermill saves the output notebook before starting the kernel and again as each cell starts,
    so "no cell has a start time" tells the two apart, whatever the message says.
    """
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        return False
    kernel_like = (
        isinstance(exc, (RuntimeError, TimeoutError, ConnectionError))
        or (isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE)
        or type(exc).__module__.startswith("zmq")  # ZMQError: the port was taken between choosing and binding
    )
    return kernel_like and not any(_started(cell) for cell in _cells(output))


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_failure(exc: BaseException, output: Path) -> str:
    """``In [5] `raise ValueError(…)`: ValueError: boom`` — the failing cell, then ename and evalue."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        where = cell_summary({"execution_count": exc.exec_count, "source": exc.source})
        return _one_line(f"{where}: {exc.ename}: {exc.evalue}")
    started = [cell for cell in _cells(output) if _started(cell)]
    if not started:
        return _one_line(f"kernel did not start: {type(exc).__name__}: {exc}")
    # the cell being executed when it failed (a timeout, a kernel that died): the last one started
    return _one_line(f"{cell_summary(started[-1])}: {type(exc).__name__}: {exc}")


def cell_summary(cell: dict[str, Any], width: int = 40) -> str:
    """``In [5] `if fail: raise …```: how a failing cell is named in results (execution count, first line)."""
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else str(source)
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    if len(first) > width:
        first = first[: width - 1] + "…"
    count = cell.get("execution_count")
    where = f"In [{count}]" if count is not None else "cell"
    return f"{where} `{first}`" if first else where
