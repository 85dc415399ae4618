"""A run directory seen from a launcher: prepared before the workers start, settled after they end.

A launcher (``python train.py --devices 2``, ``lightning-lab run``, Slurm, ``%%train --devices``)
picks the run directory before any worker exists, so it can collect the workers' logs there and
record a failure the engine could not record itself (a worker killed, a script that crashed
before training). The engine writes ``run.json`` when it starts (``LIGHTNING_LAB_RUN_DIR``); the
launcher's own facts (command, Slurm job id, ...) go to ``launch.json`` beside it, a file the
engine never rewrites.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lightning_lab._io import atomic_write_json
from lightning_lab.runs.records import RUN_STATUSES, RunLayout, new_run_id, resolve_root, utc_now

LAUNCH_FILE = "launch.json"
_TRACEBACK_START = "Traceback (most recent call last):"
_PREFIX = re.compile(r"^(?:\[[\w]+\]: ?)+", re.MULTILINE)


def new_run_dir(root: str | Path | None, name: str) -> Path:
    """Choose ``<root>/<name>/<new run id>`` and create it (with ``logs/`` and ``source/``)."""
    parent = resolve_root(root) / name
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = parent / new_run_id()
        try:
            path.mkdir()
        except FileExistsError:
            continue
        prepare_run_dir(path)
        return path


def prepare_run_dir(path: Path) -> None:
    """Make sure ``path``, ``path/logs`` and ``path/source`` exist (an existing run is left as it is)."""
    layout = RunLayout(Path(path))
    for folder in (layout.path, layout.logs, layout.source):
        folder.mkdir(parents=True, exist_ok=True)


def read_launch(path: Path) -> dict[str, Any]:
    """The launcher's facts about the run at ``path`` (``{}`` when there are none)."""
    try:
        data = json.loads((Path(path) / LAUNCH_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_launch(path: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``<run>/launch.json`` (rewritten atomically) and return all of it."""
    data = read_launch(path)
    data.update(fields)
    atomic_write_json(Path(path) / LAUNCH_FILE, data)
    return data


def finish_run(path: Path, status: str, error: dict[str, Any] | None = None, *, force_error: bool = False,
               create: bool = True) -> bool:
    """Record how a run ended when its engine could not: the workers died, or never started training.

    ``run.json`` is changed only while it still says ``"running"`` (the engine closes runs it
    finished itself), or, with ``force_error``, to replace the error of a ``failed`` run by the
    failure a launcher knows better (the first rank that failed, rather than the rank that lost
    its peer). When ``run.json`` does not exist yet and ``create`` is true, a minimal one is
    written so the failure is visible in every view.

    Returns:
        Whether ``run.json`` was written.
    """
    if status not in RUN_STATUSES:
        raise ValueError(f"finish_run: status must be one of {RUN_STATUSES}, got {status!r}")
    layout = RunLayout(Path(path))
    try:
        info = json.loads(layout.run_json.read_bytes())
    except FileNotFoundError:
        if not create:
            return False
        info = {"id": layout.path.name, "name": layout.path.parent.name, "status": "running",
                "start_time": read_launch(layout.path).get("start_time", utc_now()), "end_time": None}
        info.update({k: v for k, v in read_launch(layout.path).items() if k in ("backend", "world_size", "source")})
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict):
        return False
    current = info.get("status")
    if current == "running":
        info.update(status=status, end_time=utc_now())
        if error is not None:
            info["error"] = error
    elif force_error and current == "failed" and status == "failed" and error is not None:
        info["error"] = error
    else:
        return False
    layout.metrics.touch(exist_ok=True)
    atomic_write_json(layout.run_json, info)
    return True


def failure_from_log(path: Path, limit: int = 4000) -> dict[str, Any] | None:
    """The last Python traceback in the log file at ``path``: ``{"type", "message", "traceback"}``.

    ``None`` when the file is missing or holds no traceback.
    """
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    text = _PREFIX.sub("", text)  # torch.distributed prefixes an uncaught error's lines with "[rank1]: "
    start = text.rfind(_TRACEBACK_START)
    if start < 0:
        return None
    lines = text[start:].splitlines()
    body = [lines[0]]
    for line in lines[1:]:
        body.append(line)
        if line and not line[0].isspace():
            break  # the exception line ends the traceback
    last = body[-1]
    match = re.match(r"([\w.]+)(?::\s?(.*))?$", last)
    kind, message = (match.group(1), match.group(2) or "") if match else ("Error", last)
    return {"type": kind.rsplit(".", 1)[-1], "message": message, "traceback": "\n".join(body)[-limit:]}
