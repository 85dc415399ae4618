"""The Jupyter server extension: ``/lightning-lab/...`` routes for the JupyterLab plugin.

Enabled by ``jupyter-config/server-config/lightning_lab.json`` (installed with the package).
Routes (all authenticated, paths confined to the server root, errors as ``{"message": ...}``):

- ``POST /lightning-lab/export`` ``{"path": "nb.ipynb"}`` → the script path and the dropped lines
- ``GET  /lightning-lab/runs`` → the runs under the runs root, newest first
- ``GET  /lightning-lab/runs/<name>/<run id>`` → one run in full
- ``GET  /lightning-lab/runs/<name>/<run id>/plot.png`` → its curves
- ``POST /lightning-lab/runs/<name>/<run id>/stop`` → writes its ``STOP`` file
- ``POST /lightning-lab/batch`` ``{"path", "grid", "params", "workers"}`` → starts a sweep (202)
- ``GET  /lightning-lab/batch/<id>`` → the sweep's progress

The runs root is ``$LIGHTNING_LAB_ROOT`` when set, else ``<server root>/lab_runs``; the server
sets ``LIGHTNING_LAB_ROOT`` to it for the kernels it starts, so every notebook's runs show in the sidebar.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning_lab.server.paths import ROOT_ENV, runs_root


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "lightning_lab.server"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Add the routes to a running ``ServerApp`` (called by jupyter_server)."""
    from lightning_lab.server.handlers import setup_handlers

    root = Path(server_app.contents_manager.root_dir)
    runs = runs_root(root)
    os.environ[ROOT_ENV] = str(runs)  # kernels started by this server write where the sidebar looks
    setup_handlers(server_app.web_app)
    server_app.log.info("lightning_lab: /lightning-lab/ routes added; runs root %s", runs)
