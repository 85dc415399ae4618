"""The run-directory format: file names, root resolution, run ids and metrics.jsonl parsing."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RUN_STATUSES = ("running", "completed", "failed", "stopped")
"""Every value ``run.json["status"]`` may hold."""

INDEX_KEYS = ("step", "epoch", "time")
"""Keys of a metrics record that locate it rather than measure something."""

ROOT_ENV = "LIGHTNING_LAB_ROOT"
DEFAULT_ROOT = "lab_runs"


@dataclass(frozen=True)
class RunLayout:
    """Where each file of the run directory ``path`` lives; the one place these names are spelled."""

    path: Path

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def source(self) -> Path:
        return self.path / "source"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def discarded_metrics(self) -> Path:
        return self.logs / "discarded-metrics.jsonl"


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the absolute folder that holds all runs.

    Args:
        root: An explicit root. When ``None``, the environment variable ``LIGHTNING_LAB_ROOT`` is
            used, and when that is unset or empty, ``./lab_runs``.

    Returns:
        The root as an absolute path (it need not exist yet).

    Example:
        >>> resolve_root("/tmp/runs")
        PosixPath('/tmp/runs')
    """
    if root is None:
        root = os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    return Path(os.path.abspath(Path(root).expanduser()))


def new_run_id() -> str:
    """Return a new run id: UTC time to the second plus 4 random hex digits.

    Ids sort by creation time (to the second). Within one process they never repeat; across
    processes a clash is unlikely, and :meth:`RunWriter.create` takes another id if its folder exists.

    Returns:
        An id such as ``"20261130-041512-3f9a"``.
    """
    with _recent_lock:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        if _recent and not next(iter(_recent)).startswith(stamp):
            _recent.clear()
        run_id = f"{stamp}-{secrets.token_hex(2)}"
        while run_id in _recent:
            run_id = f"{stamp}-{secrets.token_hex(2)}"
        _recent.add(run_id)
        return run_id


_recent_lock = threading.Lock()
_recent: set[str] = set()  # ids this process gave out during the current second


def utc_now() -> str:
    """Return the current time as an ISO-8601 UTC string, e.g. ``"2026-11-30T04:15:12.345678+00:00"``."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def parse_time(value: str | None) -> datetime | None:
    """Parse a time written by :func:`utc_now`; ``None`` (or an unreadable value) gives ``None``."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def decode_line(line: bytes) -> dict[str, Any] | None:
    """Decode one metrics.jsonl line; ``None`` when it is blank, torn or not a JSON object."""
    line = line.strip()
    if not line:
        return None
    try:
        record = json.loads(line)  # also reads the NaN/Infinity tokens the writer emits
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from it
        return None
    return record if isinstance(record, dict) else None


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read every record of a ``metrics.jsonl`` file, in log order.

    The file may be in the middle of being written: blank lines, a torn last line and (never
    expected, but tolerated) a malformed line in the middle are skipped, never raised on. An
    unterminated last line that decodes to a whole JSON object is kept.

    Args:
        path: The ``metrics.jsonl`` file.

    Returns:
        The records as dicts; ``[]`` when the file does not exist (yet).
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in raw.split(b"\n"):
        record = decode_line(line)
        if record is not None:
            records.append(record)
    return records


class MetricsTail:
    """Incremental reader of a growing ``metrics.jsonl``, for live views.

    Each :meth:`read_new` returns only the records appended since the previous call. A line whose
    newline has not arrived yet is held back until it does. If the file is replaced or shrinks
    (a resumed run rewrites it), reading starts over from the beginning and :attr:`restarted` is
    set, so a view knows to clear what it drew.

    Example:
        >>> tail = MetricsTail(run.path / "metrics.jsonl")  # doctest: +SKIP
        >>> for record in tail.read_new(): ...  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Follow the file at ``path``.

        Args:
            path: The ``metrics.jsonl`` file; it need not exist yet.
        """
        self.path = Path(path)
        self.restarted = False
        self._offset = 0
        self._file_id: tuple[int, int] | None = None

    def read_new(self) -> list[dict[str, Any]]:
        """Return the complete records appended since the last call (all of them on the first).

        Returns:
            The new records in log order; ``[]`` when there are none or the file does not exist.
        """
        self.restarted = False
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                file_id = (st.st_dev, st.st_ino)
                if st.st_size < self._offset or (self._file_id is not None and file_id != self._file_id):
                    self.restarted = self._offset > 0
                    self._offset = 0
                self._file_id = file_id
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        records = []
        for line in chunk[:end].split(b"\n"):
            record = decode_line(line)
            if record is not None:
                records.append(record)
        return records
