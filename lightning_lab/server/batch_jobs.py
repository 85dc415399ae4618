"""``POST /lightning-lab/batch`` and ``GET /lightning-lab/batch/<id>``: sweeps started from JupyterLab.

A sweep runs in its own process (``python -m lightning_lab.server.batch_job``, in its own session:
it finishes even if the server stops), so the request returns at once and the server never forks
its own threads into batch workers. Progress is read
from the sweep's output folder (``batch.json``, rewritten after every point), the one record the
batch runner keeps.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_lab.errors import LabError
from lightning_lab.server.errors import RequestError
from lightning_lab.server.paths import inside_root, relative_to_root

_LOG_TAIL = 2000  # characters of the sweep's log a failed job reports


@dataclass
class BatchJob:
    """One sweep started by the server: its process, its points and where it writes."""

    id: str
    notebook: Path
    out: Path
    point_ids: list[str]
    workers: int
    log: Path
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.time)

    def progress(self, root: Path) -> dict[str, Any]:
        """``{"id", "status", "total", "done", "failed", "points", "best", "out", "results_csv", ...}`` right now.

        ``status`` is ``running``, ``completed`` (every point completed) or ``failed`` (a point
        failed, or the sweep could not start: ``message`` then says why).
        """
        from lightning_lab.batch.results import RESULTS_CSV, best_point, choose_metric, load_manifest

        code = self.process.poll()
        recorded = load_manifest(self.out)
        points = [recorded[i] for i in self.point_ids if i in recorded]
        failed = [p.id for p in points if p.status != "completed"]
        status = "running" if code is None else ("completed" if code == 0 else "failed")
        reply: dict[str, Any] = {
            "id": self.id, "status": status, "exit_code": code, "notebook": relative_to_root(root, self.notebook),
            "out": relative_to_root(root, self.out), "total": len(self.point_ids), "done": len(points),
            "failed": failed, "workers": self.workers, "elapsed": time.time() - self.started,
            "points": [{"id": p.id, "label": p.label, "status": p.status, "final": p.final,
                        "error": p.error} for p in points],
            "log": relative_to_root(root, self.log),
        }
        metric = choose_metric(points)
        best = best_point(points, metric)
        reply["best"] = {"label": best.label, "metric": metric, "value": best.final[metric]} if best else None
        csv = self.out / RESULTS_CSV
        reply["results_csv"] = relative_to_root(root, csv) if code is not None and csv.is_file() else None
        if status == "failed":
            reply["message"] = _tail(self.log)
        return reply


class BatchJobs:
    """The sweeps this server started, by id (kept in memory for the server's lifetime)."""

    def __init__(self) -> None:
        self._jobs: dict[str, BatchJob] = {}

    def start(self, root: Path, body: dict[str, Any]) -> BatchJob:
        """Check the request, then start the sweep in a new process.

        Args:
            root: The server root.
            body: ``{"path": "nb.ipynb", "grid": {"lr": [0.001, 0.003]} or ["lr=1e-3,3e-3"],
                "params": {"max_epochs": 1} or ["max_epochs=1"], "workers": 2, "out": "lab_batch/x",
                "rerun": false}``; only ``path`` is required.

        Raises:
            RequestError: 400 for bad input (the message names the field and the fix), 404 for a
                missing notebook.
        """
        from lightning_lab.batch.grid import expand
        from lightning_lab.batch.parameters import read_notebook

        notebook = inside_root(root, body.get("path"), "path")
        if notebook.suffix != ".ipynb" or not notebook.is_file():
            raise RequestError(404 if notebook.suffix == ".ipynb" else 400,
                               f"path {body.get('path')!r} is not a notebook under the server root.")
        out = inside_root(root, body["out"], "out") if body.get("out") else root.resolve() / "lab_batch" / notebook.stem
        workers = body.get("workers", 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= (os.cpu_count() or 1) * 4:
            raise RequestError(400, f"workers must be a whole number from 1 to {(os.cpu_count() or 1) * 4}, "
                                    f"got {workers!r}.")
        try:
            grid, params = _grid(body.get("grid")), _params(body.get("params"))
            read_notebook(notebook)
            points = expand(grid, params)
        except LabError as exc:
            raise RequestError(400, str(exc)) from None
        job_id = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"
        log = out / "logs" / f"jupyterlab-{job_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        spec = {"notebook": str(notebook), "grid": grid, "params": params, "workers": workers, "out": str(out),
                "rerun": bool(body.get("rerun", False))}
        with log.open("wb") as stream:
            process = subprocess.Popen([sys.executable, "-m", "lightning_lab.server.batch_job", json.dumps(spec)],
                                       cwd=notebook.parent, stdin=subprocess.DEVNULL, stdout=stream,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        job = BatchJob(job_id, notebook, out, [p.id for p in points], workers, log, process)
        self._jobs[job_id] = job
        return job

    def get(self, job_id: str) -> BatchJob:
        """The job ``job_id``.

        Raises:
            RequestError: 404 when this server started no such sweep.
        """
        try:
            return self._jobs[job_id]
        except KeyError:
            raise RequestError(404, f"no batch {job_id!r} was started by this server "
                                    f"(known: {', '.join(self._jobs) or 'none'}).") from None


def _grid(value: Any) -> dict[str, list[Any]]:
    from lightning_lab.batch.grid import parse_grid_options

    if value is None:
        return {}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return parse_grid_options(value, ())[0]
    if isinstance(value, dict):
        return dict(value)
    raise RequestError(400, f"grid must be {{\"key\": [values]}} or [\"key=v1,v2\", ...], got {value!r}.")


def _params(value: Any) -> dict[str, Any]:
    from lightning_lab.batch.grid import parse_grid_options

    if value is None:
        return {}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return parse_grid_options((), value)[1]
    if isinstance(value, dict):
        return dict(value)
    raise RequestError(400, f"params must be {{\"key\": value}} or [\"key=value\", ...], got {value!r}.")


def _tail(log: Path) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-_LOG_TAIL:].strip()
