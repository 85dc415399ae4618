"""Turn a finished worker into a :class:`PointResult`: papermill's verdict, the run it wrote, its metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning_lab.batch.grid import Point
from lightning_lab.batch.results import PointResult
from lightning_lab.batch.worker import cell_summary
from lightning_lab.runs import Run, list_runs

TRAIN_ERROR_PREFIX = "%%train:"


def runs_under(root: Path) -> set[Path]:
    """The run directories under a point's run root (to tell the runs a new execution adds)."""
    return {run.path for run in list_runs(root)}


def collect(point: Point, notebook: Path, root: Path, before: set[Path], outcome: dict[str, Any] | None,
            exitcode: int | None, log: Path, devices: str | None) -> PointResult:
    """The result of one execution.

    Args:
        point: The grid point.
        notebook: Its executed notebook.
        root: Its run root; the newest run added there during the execution is the point's run.
        before: The runs under ``root`` before the execution.
        outcome: What the worker reported (``None`` when it died without reporting).
        exitcode: The worker's exit code.
        log: The worker's log file (named in the error of a worker that died).
        devices: The ``CUDA_VISIBLE_DEVICES`` the kernel got.
    """
    new = [run for run in list_runs(root) if run.path not in before]
    run = new[-1] if new else None
    if outcome is None:
        status, error = "failed", f"worker process exited with code {exitcode} without a result; see {log}"
        outcome = {}
    else:
        status, error = outcome["status"], outcome.get("error")
    if status == "completed":
        # %%train reports its own errors (a missing model, a NaN loss) as a message, not an exception,
        # so papermill sees a completed notebook: the message and the run's status say otherwise.
        train_error = _train_error(notebook)
        if train_error is not None:
            status, error = "failed", train_error
        elif run is not None and run.status != "completed":
            status = "stopped" if run.status == "stopped" else "failed"
            info = run.error or {}
            error = f"run {run.status}: {info.get('type', '')}: {info.get('message', '')}".rstrip(": ")
    return PointResult(
        id=point.id, params=point.params, status=status, duration=outcome.get("duration"), error=error,
        notebook=notebook, run=run.path if run is not None else None, final=_final(run),
        grid_keys=point.grid_keys, attempts=outcome.get("attempts", 0), devices=devices,
    )


def _final(run: Run | None) -> dict[str, Any]:
    if run is None:
        return {}
    return {k: v for k, v in run.final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _train_error(notebook: Path) -> str | None:
    """The first ``%%train: ...`` error line in the executed notebook, with its cell."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return None
    for cell in cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream" or output.get("name") != "stderr":
                continue
            text = output.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            for line in text.splitlines():
                if line.startswith(TRAIN_ERROR_PREFIX):
                    return f"{cell_summary(cell)}: {line[len(TRAIN_ERROR_PREFIX):].strip()}"
    return None
