"""What a notebook's ``parameters`` cell assigns, and the warnings a sweep over it deserves."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning_lab.errors import ConfigurationError

PARAMETERS_TAG = "parameters"


def read_notebook(path: Path) -> dict[str, Any]:
    """The notebook's JSON (cells and metadata), read without importing nbformat.

    Raises:
        ConfigurationError: The file is missing or is not a Jupyter notebook.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"notebook {path} does not exist.") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path} is not a readable Jupyter notebook ({exc}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ConfigurationError(f"{path} is not a Jupyter notebook (no 'cells' list).")
    return data


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def parameters_cell(notebook: dict[str, Any]) -> dict[str, Any] | None:
    """The first code cell tagged ``parameters`` (the one papermill injects after), or ``None``."""
    for cell in notebook["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "code" and PARAMETERS_TAG in tags:
            return cell
    return None


def assigned_names(source: str) -> list[str]:
    """Names a cell assigns at top level, in order (``a = b = 1``, ``a: int = 1``, ``a, b = 1, 2``).

    IPython lines (``%magic``, ``!shell``) are skipped; a cell that does not parse assigns nothing.
    """
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name) and sub.id not in names:
                    names.append(sub.id)
    return names


def parameter_warnings(path: Path, notebook: dict[str, Any], grid_keys: Iterable[str],
                       param_keys: Iterable[str]) -> list[str]:
    """Warnings about injecting these keys into this notebook (empty when all is well).

    * No cell is tagged ``parameters``: papermill then injects the values in a new first cell, so
      any later assignment in the notebook silently overrides them.
    * A key is not assigned in the parameters cell: the value is injected, but it may be a typo
      that nothing in the notebook reads.
    """
    grid_keys, param_keys = list(grid_keys), list(param_keys)
    cell = parameters_cell(notebook)
    if cell is None:
        keys = ", ".join(grid_keys + param_keys) or "the parameters"
        return [
            f"{path}: no cell is tagged 'parameters', so papermill injects the values in a new first cell "
            f"and any later assignment in the notebook overrides them. Tag the cell that assigns {keys} "
            "with 'parameters' (JupyterLab: property inspector ▸ Cell Tags)."
        ]
    assigned = assigned_names(_source(cell))
    shown = ", ".join(assigned) or "nothing"
    return [
        f"{path}: {option} key {key!r} is not assigned in the parameters cell (it assigns: {shown}); the value "
        f"is injected after that cell, but check that the notebook reads {key!r} (a typo of one of these?)."
        for option, keys in (("--grid", grid_keys), ("--param", param_keys))
        for key in keys
        if key not in assigned
    ]


def kernel_name(notebook: dict[str, Any]) -> str | None:
    """The kernel the notebook was saved with (``metadata.kernelspec.name``), if any."""
    spec = notebook.get("metadata", {}).get("kernelspec") or {}
    return spec.get("name") if isinstance(spec, dict) else None
