"""Run, load_run, list_runs: the read-only view of run directories that every view uses."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning_lab.errors import RunDirectoryError
from lightning_lab.runs.insight import SYS_PREFIX
from lightning_lab.runs.records import INDEX_KEYS, RunLayout, parse_time, read_metrics, resolve_root

LAST_CHECKPOINT = "last.ckpt"


class Run:
    """One run directory, read from disk: what a trainer wrote, finished or still running.

    ``run.json`` is read when the ``Run`` is made and again on :meth:`refresh`; ``metrics`` is
    re-read from ``metrics.jsonl`` whenever that file changed.

    Example:
        >>> run = load_run("lab_runs/mlp/20261130-041512-3f9a")  # doctest: +SKIP
        >>> run.status, run.final["val_loss"]  # doctest: +SKIP
        ('completed', 0.31)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Read the run directory at ``path``.

        Args:
            path: A run directory, or the ``run.json`` inside one.

        Raises:
            RunDirectoryError: There is no readable ``run.json`` there.
        """
        path = Path(path)
        if path.name == "run.json" and not path.is_dir():
            path = path.parent
        self._layout = RunLayout(path)
        self._metrics: list[dict[str, Any]] = []
        self._metrics_key: tuple[int, int, int] | None = None
        self._info: dict[str, Any] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read ``run.json`` (status, end time, final metrics, ...).

        Raises:
            RunDirectoryError: ``run.json`` is missing or not a JSON object.
        """
        file = self._layout.run_json
        try:
            info = json.loads(file.read_bytes())
        except (OSError, ValueError) as exc:
            raise RunDirectoryError(
                f"{self._layout.path} is not a lightning_lab run directory: cannot read {file} ({exc})."
            ) from exc
        if not isinstance(info, dict):
            raise RunDirectoryError(
                f"{self._layout.path} is not a lightning_lab run directory: {file} is not a JSON object."
            )
        self._info = info

    # -- run.json -----------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The run directory."""
        return self._layout.path

    @property
    def id(self) -> str:
        """The run id (the folder name when ``run.json`` lacks one)."""
        return str(self._info.get("id") or self.path.name)

    @property
    def name(self) -> str:
        """The run name (the parent folder name when ``run.json`` lacks one)."""
        return str(self._info.get("name") or self.path.parent.name)

    @property
    def status(self) -> str:
        """``"running"``, ``"completed"``, ``"failed"`` or ``"stopped"`` (as of the last refresh)."""
        return str(self._info.get("status", "running"))

    @property
    def info(self) -> dict[str, Any]:
        """The whole ``run.json``."""
        return self._info

    @property
    def hparams(self) -> dict[str, Any]:
        """The model's hyperparameters."""
        return self._info.get("hparams") or {}

    @property
    def config(self) -> dict[str, Any]:
        """The trainer configuration."""
        return self._info.get("config") or {}

    @property
    def start_time(self) -> str | None:
        """When the run started, ISO-8601 UTC."""
        return self._info.get("start_time")

    @property
    def end_time(self) -> str | None:
        """When the run ended, ISO-8601 UTC; ``None`` while running."""
        return self._info.get("end_time")

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (to now while running); ``None`` if the times are unknown."""
        start = parse_time(self.start_time)
        if start is None:
            return None
        end = parse_time(self.end_time)
        if end is None:
            if self.status != "running":
                return None
            end = datetime.now(timezone.utc)
        return (end - start).total_seconds()

    @property
    def error(self) -> dict[str, Any] | None:
        """The failure summary (``{"type", "message", "traceback"}``) of a failed run, else ``None``."""
        return self._info.get("error")

    # -- metrics ------------------------------------------------------------------------------

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """Every metrics record in log order (re-read only when ``metrics.jsonl`` changed).

        The list is shared between calls until the file changes: copy it before mutating it.
        """
        try:
            st = self._layout.metrics.stat()
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            key = None
        if key != self._metrics_key:
            self._metrics = read_metrics(self._layout.metrics) if key is not None else []
            self._metrics_key = key
        return self._metrics

    @property
    def final(self) -> dict[str, Any]:
        """The last value of each metric the model logged.

        Taken from ``run.json["final"]`` once the run has ended, else computed from the metrics
        (leaving out the engine's ``sys/...`` timing values, as ``run.json["final"]`` does: where
        the time went is in :attr:`info` ``["insight"]``).
        """
        final = self._info.get("final")
        if final is not None and self.status != "running":
            return dict(final)
        last: dict[str, Any] = {}
        for record in self.metrics:
            for key, value in record.items():
                if key not in INDEX_KEYS and value is not None and not key.startswith(SYS_PREFIX):
                    last[key] = value
        return last

    def history(self, metric: str) -> tuple[list[int], list[float]]:
        """Steps and values of ``metric``, for plotting.

        Args:
            metric: A metric name, e.g. ``"val_loss"``.

        Returns:
            ``(steps, values)`` over the records that hold a non-``None`` value of ``metric``; a
            record without ``"step"`` counts by its position.
        """
        steps: list[int] = []
        values: list[float] = []
        for i, record in enumerate(self.metrics):
            value = record.get(metric)
            if value is not None:
                steps.append(record.get("step", i))
                values.append(value)
        return steps, values

    # -- checkpoints --------------------------------------------------------------------------

    @property
    def checkpoints(self) -> list[Path]:
        """The files in ``checkpoints/``: ``last.ckpt`` first, then the rest by name."""
        try:
            files = [
                p for p in self._layout.checkpoints.iterdir() if p.is_file() and not p.name.startswith(".")
            ]
        except FileNotFoundError:
            return []
        return sorted(files, key=lambda p: (p.name != LAST_CHECKPOINT, p.name))

    @property
    def last_checkpoint(self) -> Path | None:
        """``checkpoints/last.ckpt`` if it exists, else ``None``."""
        path = self._layout.checkpoints / LAST_CHECKPOINT
        return path if path.is_file() else None

    def __repr__(self) -> str:
        return f"Run(name={self.name!r}, id={self.id!r}, status={self.status!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read the run directory at ``path``.

    Args:
        path: A run directory, or the ``run.json`` inside one.

    Returns:
        The :class:`Run`.

    Raises:
        RunDirectoryError: ``path`` holds no readable ``run.json``.
    """
    return Run(path)


def list_runs(root: str | os.PathLike[str] | None = None, name: str | None = None) -> list[Run]:
    """Every run under ``root``, oldest first.

    Args:
        root: The runs root (see :func:`resolve_root`).
        name: Only runs of this name.

    Returns:
        The runs sorted by start time; folders without a readable ``run.json`` are skipped.
    """
    base = resolve_root(root)
    pattern = f"{_glob_escape(name)}/*/run.json" if name is not None else "*/*/run.json"
    runs = []
    for file in base.glob(pattern):
        try:
            runs.append(Run(file.parent))
        except RunDirectoryError:
            continue
    never = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(runs, key=lambda r: (parse_time(r.start_time) or never, r.id))


def find_last_checkpoint(root: str | os.PathLike[str] | None, name: str) -> Path | None:
    """The newest ``last.ckpt`` (by modification time) among the runs called ``name``.

    Args:
        root: The runs root (see :func:`resolve_root`).
        name: The run name.

    Returns:
        The checkpoint's path, or ``None`` when no run of that name has one.
    """
    newest: tuple[int, Path] | None = None
    for path in resolve_root(root).glob(f"{_glob_escape(name)}/*/checkpoints/{LAST_CHECKPOINT}"):
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            continue
        if newest is None or mtime > newest[0]:
            newest = (mtime, path)
    return newest[1] if newest else None


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
