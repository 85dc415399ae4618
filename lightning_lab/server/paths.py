"""Paths a request names, confined to the server root; where the runs of a project live."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from lightning_lab.server.errors import RequestError

ROOT_ENV = "LIGHTNING_LAB_ROOT"
DEFAULT_RUNS = "lab_runs"


def inside_root(root: Path, relative: object, what: str) -> Path:
    """The real path of ``relative`` (a path under the server root, as the file browser shows it).

    Args:
        root: The server root (the contents manager's ``root_dir``).
        relative: The path from the request body, e.g. ``"notebooks/01_quickstart.ipynb"``.
        what: The request field, as messages name it (``"path"``, ``"output"``).

    Returns:
        The resolved absolute path (symlinks followed); it need not exist.

    Raises:
        RequestError: 400 for a missing, absolute or ``..`` path; 403 for a path that resolves
            outside the root (through a symlink).
    """
    if not isinstance(relative, str) or not relative.strip():
        raise RequestError(400, f"{what}: expected a path relative to the server root (e.g. "
                                f"'notebooks/01_quickstart.ipynb'), got {relative!r}.")
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or os.path.isabs(relative):
        raise RequestError(400, f"{what} {relative!r} is absolute; give it relative to the server root "
                                "(as the file browser shows it).")
    if ".." in pure.parts:
        raise RequestError(400, f"{what} {relative!r} contains '..'; only paths inside the server root are "
                                "allowed.")
    base = root.resolve()
    real = (base / pure).resolve()
    if not real.is_relative_to(base):
        raise RequestError(403, f"{what} {relative!r} resolves to {real}, outside the server root "
                                "(a symbolic link out of it); refused.")
    return real


def relative_to_root(root: Path, path: Path) -> str:
    """``path`` as the file browser names it (relative, ``/``-separated), or absolute when outside the root."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def runs_root(server_root: Path) -> Path:
    """The folder the Runs sidebar lists: ``$LIGHTNING_LAB_ROOT`` when set, else ``<server root>/lab_runs``.

    A relative ``$LIGHTNING_LAB_ROOT`` is taken relative to the server root. The root is the
    operator's choice (not a request's), so it may lie outside the server root.
    """
    configured = os.environ.get(ROOT_ENV)
    if not configured:
        return server_root.resolve() / DEFAULT_RUNS
    path = Path(configured).expanduser()
    return (path if path.is_absolute() else server_root / path).resolve()


def run_dir(runs: Path, name: str, run_id: str) -> Path:
    """The directory of run ``<name>/<run_id>`` under ``runs``.

    Raises:
        RequestError: 400 for a part that is not one folder name; 404 when there is no such run
            (or it resolves outside ``runs``).
    """
    for label, part in (("run name", name), ("run id", run_id)):
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise RequestError(400, f"{label} {part!r} is not a folder name; a run is addressed as "
                                    "runs/<name>/<run id> (e.g. runs/mlp/20261130-041512-3f9a).")
    base = runs.resolve()
    path = (base / name / run_id).resolve()
    if not path.is_relative_to(base) or not (path / "run.json").is_file():
        raise RequestError(404, f"no run {name}/{run_id} under {base} (GET /lightning-lab/runs lists them).")
    return path
