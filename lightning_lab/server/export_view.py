"""``POST /lightning-lab/export``: export a notebook under the server root to a training script."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_lab.server.errors import RequestError
from lightning_lab.server.paths import inside_root, relative_to_root


def export(root: Path, body: dict[str, Any]) -> dict[str, Any]:
    """Export the notebook ``body["path"]`` (relative to ``root``) and describe the script.

    Args:
        root: The server root.
        body: ``{"path": "nb.ipynb", "output": "train.py" (optional), "cell": 3 (optional)}``.

    Returns:
        ``{"script", "notebook", "train_cell", "kept_cells", "dropped_cells", "dropped_lines",
        "options", "summary"}``; ``script`` is relative to the root, as the file browser opens it.

    Raises:
        RequestError: 400 for a bad field, 404 for a missing notebook, 422 when the exporter refuses
            the notebook (its message names the cell and the fix).
    """
    from lightning_lab.export import ExportError, export_notebook

    notebook = inside_root(root, body.get("path"), "path")
    if notebook.suffix != ".ipynb":
        raise RequestError(400, f"path {body.get('path')!r} is not a notebook (.ipynb); export works on notebooks.")
    if not notebook.is_file():
        raise RequestError(404, f"notebook {body.get('path')!r} does not exist under the server root.")
    output = inside_root(root, body["output"], "output") if body.get("output") is not None else None
    cell = body.get("cell")
    if cell is not None and (isinstance(cell, bool) or not isinstance(cell, int) or cell < 1):
        raise RequestError(400, f"cell must be the number of a %%train cell (counting from 1), got {cell!r}.")
    try:
        result = export_notebook(notebook, output, cell)
    except ExportError as exc:
        raise RequestError(422, str(exc)) from None
    assert result.output is not None  # written: write=True
    return {
        "script": relative_to_root(root, result.output),
        "notebook": relative_to_root(root, notebook),
        "train_cell": result.train_cell,
        "kept_cells": result.kept_cells,
        "dropped_cells": result.dropped_cells,
        "dropped_lines": [line.describe() for line in result.dropped_lines],
        "options": [option.flag for option in result.options],
        "summary": result.summary(),
    }
