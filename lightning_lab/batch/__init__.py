"""Batch: execute a notebook over a hyperparameter grid with papermill, N points at a time.

``lightning_lab.batch.run(notebook, grid={...}, workers=2)`` and ``lightning-lab batch NOTEBOOK
--grid KEY=V1,V2 ...`` (:func:`main_batch`). Importing this package is light: papermill runs in
the worker processes only and matplotlib is imported when the summary plot is drawn.
"""

from __future__ import annotations

from lightning_lab.batch.api import BatchWarning, parse_gpus, run
from lightning_lab.batch.cli import build_parser, main_batch
from lightning_lab.batch.grid import Point, expand, parse_grid_options, parse_value
from lightning_lab.batch.results import BatchResult, PointResult

__all__ = [
    "BatchResult",
    "BatchWarning",
    "Point",
    "PointResult",
    "build_parser",
    "expand",
    "main_batch",
    "parse_gpus",
    "parse_grid_options",
    "parse_value",
    "run",
]
