"""RunWriter: the engine's (global rank 0's) only way to write a run directory."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import threading
from collections import deque
from pathlib import Path
from typing import IO, Any

from lightning_lab._io import atomic_write, atomic_write_json, sync_later
from lightning_lab.errors import ConfigurationError, RunDirectoryError
from lightning_lab.runs.encoding import encode_records
from lightning_lab.runs.flusher import FLUSHER
from lightning_lab.runs.records import (
    RUN_STATUSES,
    RunLayout,
    decode_line,
    new_run_id,
    resolve_root,
    utc_now,
)


class RunWriter:
    """Writes one run directory: ``run.json`` atomically, ``metrics.jsonl`` append-only.

    :meth:`log` only queues a record; a daemon thread (one for all writers) encodes and appends the queue every
    ``flush_interval`` seconds, so a live view sees a record within about that time and the
    training loop never waits for JSON or the disk. Tensor values become floats there, once.

    Non-finite floats are written as the tokens ``NaN``, ``Infinity`` and ``-Infinity``: not
    strict JSON, but what Python's :mod:`json` (and so every reader here) reads back as floats.

    Example:
        >>> w = RunWriter.create(resolve_root(), "mlp", {"hparams": {"lr": 0.1}})  # doctest: +SKIP
        >>> w.log({"step": 0, "epoch": 0, "loss": 0.7})  # doctest: +SKIP
        >>> w.close("completed", final={"loss": 0.7})  # doctest: +SKIP
    """

    def __init__(self, path: Path, info: dict[str, Any], records: int, flush_interval: float) -> None:
        # Use create() or open(); this assumes the directory and metrics.jsonl are ready.
        self._layout = RunLayout(Path(path))
        self._info = info
        self._count = records
        self._flush_interval = float(flush_interval)
        self._pending: deque[dict[str, Any]] = deque()
        self._io_lock = threading.Lock()  # held by flush paths only, never by log()
        self._backlog = b""  # what a failed write left unwritten, retried on the next flush
        self._write_error: OSError | None = None
        self._closed = False
        # Unbuffered: each flush is one write() straight to the OS, visible to readers at once.
        self._file: IO[bytes] = open(self._layout.metrics, "ab", buffering=0)
        FLUSHER.add(self._drain, self._flush_interval)  # one shared thread flushes every open writer
        # If the engine never reaches close() (an uncaught error at exit), still save the queue.
        atexit.register(self._drain)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path,
        name: str,
        info: dict[str, Any],
        run_id: str | None = None,
        flush_interval: float = 0.5,
    ) -> RunWriter:
        """Make a new run directory ``<root>/<name>/<id>/`` and start writing it.

        Args:
            root: The folder holding all runs (see :func:`resolve_root`); made absolute.
            name: The run's name, one folder name (no path separators).
            info: Further ``run.json`` fields (hparams, config, backend, world_size, host,
                versions, source, ...), written as given after the fixed fields.
            run_id: The id to use; by default a new one from :func:`new_run_id`.
            flush_interval: Seconds between background flushes of ``metrics.jsonl``.

        Returns:
            A writer of the new run, whose ``run.json`` says ``"status": "running"``.

        Raises:
            ConfigurationError: ``name`` or ``run_id`` is not a usable folder name, or
                ``flush_interval`` <= 0.
            RunDirectoryError: ``run_id`` was given and that run directory already holds a run
                (a directory a launcher prepared, without ``run.json``, is taken over).
        """
        _check_folder_name("name", name)
        if run_id is not None:
            _check_folder_name("run_id", run_id)
        _check_interval(flush_interval)
        parent = resolve_root(root) / name
        parent.mkdir(parents=True, exist_ok=True)
        while True:
            rid = run_id if run_id is not None else new_run_id()
            path = parent / rid
            try:
                path.mkdir()
                break
            except FileExistsError:
                if run_id is not None and not RunLayout(path).run_json.exists():
                    break  # prepared by a launcher (logs/ already there), not yet a run: take it
                if run_id is not None:
                    raise RunDirectoryError(
                        f"Run directory {path} already exists; pick another run_id, "
                        "or continue that run with RunWriter.open(path)."
                    ) from None
        layout = RunLayout(path)
        for folder in (layout.checkpoints, layout.source, layout.logs):
            folder.mkdir(exist_ok=True)
        # metrics.jsonl exists before run.json, so a view that found run.json can tail it.
        layout.metrics.touch()
        data = {"id": rid, "name": name, "status": "running", "start_time": utc_now(), "end_time": None}
        data.update(info)
        atomic_write_json(layout.run_json, data)
        return cls(path, data, 0, flush_interval)

    @classmethod
    def open(cls, path: Path, flush_interval: float = 0.5, keep_records: int | None = None) -> RunWriter:
        """Continue writing an existing run directory (resume).

        The status goes back to ``"running"``, ``end_time`` to ``None``, the previous ``final``
        and ``error`` are removed, and the time is appended to ``run.json["resumes"]``. A torn
        last line of ``metrics.jsonl`` is moved out so new records start on a line of their own.

        Args:
            path: The run directory (the folder holding ``run.json``).
            flush_interval: Seconds between background flushes of ``metrics.jsonl``.
            keep_records: When given and ``metrics.jsonl`` holds more records than this (they were
                logged after the checkpoint being resumed from), keep only the first
                ``keep_records``; the rest are appended to ``logs/discarded-metrics.jsonl``.

        Returns:
            A writer continuing the run; :attr:`records_logged` counts the records kept.

        Raises:
            RunDirectoryError: ``path/run.json`` is missing or unreadable.
            ConfigurationError: ``keep_records`` is negative or ``flush_interval`` <= 0.
        """
        _check_interval(flush_interval)
        if keep_records is not None and keep_records < 0:
            raise ConfigurationError(f"RunWriter.open: keep_records must be >= 0, got {keep_records!r}.")
        layout = RunLayout(Path(path))
        try:
            data = json.loads(layout.run_json.read_bytes())
        except (OSError, ValueError) as exc:
            raise RunDirectoryError(
                f"Cannot resume run directory {layout.path}: {layout.run_json} is missing or unreadable "
                f"({exc}). Pass the folder of an existing lightning_lab run."
            ) from exc
        if not isinstance(data, dict):
            raise RunDirectoryError(f"Cannot resume {layout.path}: {layout.run_json} is not a JSON object.")
        for folder in (layout.checkpoints, layout.source, layout.logs):
            folder.mkdir(exist_ok=True)
        records = _trim_metrics(layout, keep_records)
        data["status"] = "running"
        data["end_time"] = None
        data.pop("final", None)
        data.pop("error", None)
        data["resumes"] = [*data.get("resumes", []), utc_now()]
        atomic_write_json(layout.run_json, data)
        return cls(layout.path, data, records, flush_interval)

    # -- properties ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The run directory."""
        return self._layout.path

    @property
    def id(self) -> str:
        """The run id."""
        return self._info["id"]

    @property
    def name(self) -> str:
        """The run name."""
        return self._info["name"]

    @property
    def info(self) -> dict[str, Any]:
        """A copy of ``run.json`` as last written."""
        return dict(self._info)

    @property
    def records_logged(self) -> int:
        """Records accepted so far, including those kept from before a resume."""
        return self._count

    # -- metrics ------------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        """Queue one metrics record; it is written by the background flusher.

        Called once per training step, so it does no encoding, I/O or locking. The record is
        encoded later: do not mutate it after logging it.

        Args:
            record: ``{"step": .., "epoch": .., "time": .., "<metric>": value, ...}``; values are
                numbers, strings, ``None`` or 0-dim tensors (written as floats).

        Raises:
            RunDirectoryError: The writer was closed.
        """
        if self._closed:
            raise RunDirectoryError(f"RunWriter for {self.path} is closed; records can no longer be logged.")
        self._pending.append(record)
        self._count += 1

    def flush(self) -> None:
        """Write every queued record to ``metrics.jsonl`` now.

        Raises:
            RunDirectoryError: ``metrics.jsonl`` could not be written.
        """
        self._drain()
        if self._write_error is not None:
            raise RunDirectoryError(
                f"Cannot write {self._layout.metrics}: {self._write_error}. "
                "The records are kept in memory and retried on the next flush."
            ) from self._write_error

    def _drain(self) -> None:
        with self._io_lock:
            if self._file.closed:  # the flusher's last call, after close() wrote everything
                return
            batch = []
            pending = self._pending
            while pending:
                batch.append(pending.popleft())
            data = self._backlog + encode_records(batch).encode() if batch else self._backlog
            try:
                while data:
                    data = data[self._file.write(data) :]
            except OSError as exc:
                self._backlog, self._write_error = data, exc
            else:
                self._backlog, self._write_error = b"", None

    # -- run.json and files -------------------------------------------------------------------

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into ``run.json`` and rewrite it atomically.

        Args:
            **fields: Top-level ``run.json`` fields to set (replacing any previous value).
        """
        self._info.update(fields)
        atomic_write_json(self._layout.run_json, self._info)

    def add_source(self, path: Path, arcname: str | None = None) -> None:
        """Copy a file into the run's ``source/`` folder.

        Args:
            path: The file to copy (a script, exported notebook cells, a config, ...).
            arcname: Its path inside ``source/``; by default its file name.

        Raises:
            ConfigurationError: ``arcname`` is absolute or leaves ``source/``.
            RunDirectoryError: ``path`` cannot be read.
        """
        path = Path(path)
        rel = Path(arcname) if arcname is not None else Path(path.name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ConfigurationError(
                f"RunWriter.add_source: arcname must be a relative path inside source/, got {arcname!r}."
            )
        dest = self._layout.source / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(path, dest)
        except OSError as exc:
            raise RunDirectoryError(f"Cannot copy {path} into {self._layout.source}: {exc}") from exc

    def close(
        self,
        status: str,
        *,
        final: dict[str, float] | None = None,
        error: dict[str, Any] | None = None,
        **more: Any,
    ) -> None:
        """Flush the metrics, stop the flusher and record how the run ended in ``run.json``.

        Calling it again only updates the status (and ``final``/``error`` when given).

        Args:
            status: One of :data:`RUN_STATUSES`: ``"completed"``, ``"failed"``, ``"stopped"``
                (or ``"running"``).
            final: Final value of each metric, written as floats.
            error: Summary of the failure, e.g. ``{"type", "message", "traceback"}``.
            **more: Further ``run.json`` fields to set in the same write (e.g. ``insight``).

        Raises:
            ConfigurationError: ``status`` is not one of :data:`RUN_STATUSES`.
            RunDirectoryError: Queued records could not be written to ``metrics.jsonl`` (``run.json``
                is still updated).
        """
        if status not in RUN_STATUSES:
            raise ConfigurationError(
                f"RunWriter.close: status {status!r} is not one of {', '.join(RUN_STATUSES)}."
            )
        fields: dict[str, Any] = {"status": status, **more}
        if final is not None:
            fields["final"] = {k: _to_float(v) for k, v in final.items()}
        if error is not None:
            fields["error"] = error
        if self._closed:
            self.update(**fields)
            return
        self._closed = True
        FLUSHER.remove(self._drain)
        atexit.unregister(self._drain)
        self._drain()
        with self._io_lock:
            self._file.close()
        sync_later(self._layout.metrics)  # durable moments later, without holding up the caller
        self.update(end_time=utc_now(), **fields)
        if self._write_error is not None:
            lost = self._backlog.count(b"\n")
            raise RunDirectoryError(
                f"Cannot write {self._layout.metrics}: {self._write_error}; {lost} records were not saved."
            ) from self._write_error

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RunWriter(name={self.name!r}, id={self.id!r}, {state})"


def _check_folder_name(what: str, value: str) -> None:
    if not isinstance(value, str) or value.strip(".") == "" or "/" in value or "\\" in value:
        raise ConfigurationError(
            f"Run {what} {value!r} cannot be a folder name: use a non-empty name without '/' or '\\', "
            "e.g. name='mlp'."
        )


def _check_interval(flush_interval: float) -> None:
    if not flush_interval > 0:
        raise ConfigurationError(
            f"RunWriter: flush_interval must be a positive number of seconds, got {flush_interval!r}."
        )


def _to_float(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return value


def _trim_metrics(layout: RunLayout, keep_records: int | None) -> int:
    """Make ``metrics.jsonl`` ready for appending; return how many records it then holds.

    Everything after the ``keep_records``-th record, and a torn last line, is moved to
    ``logs/discarded-metrics.jsonl`` (nothing is deleted); the file is rewritten atomically.
    """
    try:
        raw = layout.metrics.read_bytes()
    except FileNotFoundError:
        layout.metrics.touch()
        return 0
    count, keep_end, torn_start, pos = 0, 0, None, 0
    while pos < len(raw):
        newline = raw.find(b"\n", pos)
        end = len(raw) if newline < 0 else newline + 1
        line = raw[pos:end]
        if decode_line(line) is not None:
            count += 1
            if count == keep_records:
                keep_end = end
        elif newline < 0 and line.strip():
            torn_start = pos  # unterminated and undecodable: a write cut short by a crash
        pos = end
    if keep_records is not None and count > keep_records:
        cut, count = keep_end, keep_records
    elif torn_start is not None:
        cut = torn_start
    else:
        cut = len(raw)
    head, tail = raw[:cut], raw[cut:]
    if head and not head.endswith(b"\n"):
        head += b"\n"  # a whole record whose newline was never written
    if tail.strip():
        if not tail.endswith(b"\n"):
            tail += b"\n"
        with open(layout.discarded_metrics, "ab") as f:
            f.write(tail)
            f.flush()
            os.fsync(f.fileno())
    if head != raw:
        atomic_write(layout.metrics, lambda f: f.write(head))
    return count
