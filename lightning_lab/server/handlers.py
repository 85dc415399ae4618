"""The ``/lightning-lab/...`` routes: thin tornado handlers, one call into the core each.

Every method is ``@tornado.web.authenticated`` (Jupyter's token/identity provider); an
unauthenticated request gets 403. A :class:`RequestError` or a tornado ``HTTPError`` becomes a
JSON reply ``{"message": ...}`` with its 4xx status (``APIHandler.write_error``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.ioloop import IOLoop

from lightning_lab.errors import LabError
from lightning_lab.server import batch_jobs, export_view, runs_view
from lightning_lab.server.errors import RequestError
from lightning_lab.server.paths import run_dir, runs_root

T = TypeVar("T")
PREFIX = "lightning-lab"
_RUN = r"/runs/(?P<name>[^/]+)/(?P<run_id>[^/]+)"


def refused(status: int, message: str) -> tornado.web.HTTPError:
    """An HTTP error whose JSON reply is ``{"message": message}`` (``%%train`` stays ``%%train``)."""
    return tornado.web.HTTPError(status, "%s", message)


class LabHandler(APIHandler):
    """Base of the routes: the server root, the JSON body and the error mapping."""

    @property
    def root(self) -> Path:
        """The server root (the contents manager's ``root_dir``)."""
        return Path(self.contents_manager.root_dir).resolve()

    @property
    def jobs(self) -> batch_jobs.BatchJobs:
        return self.settings["lightning_lab_jobs"]

    def body(self) -> dict[str, Any]:
        """The request's JSON object (400 when it is not one)."""
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise refused(400, f"the request body is not JSON ({exc}).") from None
        if not isinstance(data, dict):
            raise refused(400, f"the request body must be a JSON object, got {type(data).__name__}.")
        return data

    async def call(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in a worker thread (file reads, matplotlib, exports stay off the event loop);
        a :class:`RequestError` becomes its HTTP status, any other ``LabError`` (a user mistake the core
        explains) a 400."""
        try:
            return await IOLoop.current().run_in_executor(None, work, *args)
        except RequestError as exc:
            raise refused(exc.status, exc.message) from None
        except LabError as exc:
            raise refused(400, str(exc)) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """``{"message": ...}``; the message of a :func:`refused` error exactly as written (``%`` kept)."""
        error = (kwargs.get("exc_info") or (None, None, None))[1]
        if isinstance(error, tornado.web.HTTPError) and error.args:
            self.finish(json.dumps({"message": error.log_message % error.args, "reason": error.reason}))
            return
        super().write_error(status_code, **kwargs)

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))


class ExportHandler(LabHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        """Export a notebook to a training script: ``{"path": ...}`` → ``{"script": ..., "dropped_lines": [...]}``."""
        self.reply(await self.call(export_view.export, self.root, self.body()))


class RunsHandler(LabHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        """``{"root": ..., "runs": [summary, ...]}``, newest first."""
        root = runs_root(self.root)
        self.reply({"root": str(root), "runs": await self.call(runs_view.list_summaries, root)})


class RunHandler(LabHandler):
    @tornado.web.authenticated
    async def get(self, name: str, run_id: str) -> None:
        """One run in full (hparams, config, error, metric names, checkpoints)."""
        self.reply(await self.call(lambda: runs_view.detail(run_dir(runs_root(self.root), name, run_id))))


class RunPlotHandler(LabHandler):
    @tornado.web.authenticated
    async def get(self, name: str, run_id: str) -> None:
        """The run's curves as a PNG image."""
        png = await self.call(lambda: runs_view.curves_png(run_dir(runs_root(self.root), name, run_id)))
        self.set_header("Cache-Control", "no-store")  # a live run's curves change
        self.finish(png, set_content_type="image/png")


class RunStopHandler(LabHandler):
    @tornado.web.authenticated
    async def post(self, name: str, run_id: str) -> None:
        """Write the run's STOP file; the engine stops the run gracefully at its next check."""
        stop = await self.call(lambda: runs_view.write_stop(run_dir(runs_root(self.root), name, run_id)))
        self.reply({"key": f"{name}/{run_id}", "stop_file": str(stop)}, status=202)


class BatchHandler(LabHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        """Start a sweep; answers 202 with its progress (``id`` for ``GET /lightning-lab/batch/<id>``)."""
        job = await self.call(self.jobs.start, self.root, self.body())
        self.reply(job.progress(self.root), status=202)


class BatchProgressHandler(LabHandler):
    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        """The sweep's progress: status, points done of total, each finished point's final metrics."""
        job = await self.call(self.jobs.get, job_id)
        self.reply(await self.call(job.progress, self.root))


def setup_handlers(web_app: Any) -> None:
    """Add the routes under ``<base_url>lightning-lab/``."""
    base = url_path_join(web_app.settings["base_url"], PREFIX)
    web_app.settings["lightning_lab_jobs"] = batch_jobs.BatchJobs()
    routes: list[tuple[str, type[LabHandler]]] = [
        ("/export", ExportHandler),
        ("/runs", RunsHandler),
        (_RUN, RunHandler),
        (_RUN + r"/plot\.png", RunPlotHandler),
        (_RUN + "/stop", RunStopHandler),
        ("/batch", BatchHandler),
        (r"/batch/(?P<job_id>[^/]+)", BatchProgressHandler),
    ]
    web_app.add_handlers(".*$", [(base + pattern + "/?$", handler) for pattern, handler in routes])

