"""The runs of a project as the Runs sidebar shows them: JSON summaries, details and a curves PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning_lab.errors import RunDirectoryError
from lightning_lab.runs import Run, list_runs, load_run
from lightning_lab.server.errors import RequestError

_HIDDEN_PREFIX = "sys/"  # engine measurements: the run detail lists them, the sidebar table does not


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def summary(run: Run) -> dict[str, Any]:
    """What the sidebar shows of one run: key, name, id, status, times, duration, final metrics.

    ``key`` is ``<name folder>/<run id folder>``, how the routes address a run (unique under one root).
    """
    final = {k: n for k, v in run.final.items() if not k.startswith(_HIDDEN_PREFIX) and (n := _number(v)) is not None}
    return {"key": f"{run.path.parent.name}/{run.path.name}", "name": run.name, "id": run.id,
            "status": run.status, "start_time": run.start_time, "end_time": run.end_time,
            "duration": run.duration, "final": final}


def list_summaries(runs_root: Path) -> list[dict[str, Any]]:
    """Every run under ``runs_root``, newest first."""
    return [summary(run) for run in reversed(list_runs(runs_root))]


def detail(path: Path) -> dict[str, Any]:
    """One run in full: the summary, hparams, trainer config, error, metric names, checkpoints, record count."""
    run = _load(path)
    records = run.metrics
    names = sorted({k for record in records for k in record} - {"step", "epoch", "time"})
    return {**summary(run), "hparams": run.hparams, "config": run.config, "error": run.error,
            "metric_names": names, "records": len(records),
            "checkpoints": [p.name for p in run.checkpoints], "path": str(run.path)}


def curves_png(path: Path) -> bytes:
    """The run's curves (every logged metric against the step, grouped like the live widget) as PNG bytes."""
    from lightning_lab.notebook.curves import CurvePlot  # matplotlib: only when a plot is asked for

    plot = CurvePlot(dpi=80)  # its own Figure and Agg canvas (no pyplot): safe in a worker thread
    plot.add(_load(path).metrics)
    return plot.render_png()


def write_stop(path: Path) -> Path:
    """Ask the live run at ``path`` to stop: the engine polls its ``STOP`` file and stops gracefully.

    Raises:
        RequestError: 409 when the run is not running.
    """
    run = _load(path)
    if run.status != "running":
        raise RequestError(409, f"run {run.name}/{run.id} is not running (status {run.status!r}); "
                                "only a running run can be stopped.")
    stop = path / "STOP"
    stop.write_text("stop requested from JupyterLab\n", encoding="utf-8")
    return stop


def _load(path: Path) -> Run:
    try:
        return load_run(path)
    except RunDirectoryError as exc:
        raise RequestError(404, str(exc)) from None
