"""CSVLogger: the run's records as a spreadsheet-friendly ``metrics.csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lightning_lab._io import atomic_write
from lightning_lab.loggers.base import Logger


class CSVLogger(Logger):
    """Writes ``metrics.csv`` (one row per record, one column per metric) into the run directory,
    or into ``save_dir`` when given. The file is rewritten atomically at each epoch's records and at
    the end, so columns that appear later are never lost.
    """

    def __init__(self, save_dir: str | Path | None = None, flush_every: int = 100) -> None:
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.flush_every = flush_every
        self.path: Path | None = None
        self.rows: list[dict[str, Any]] = []
        self._unsaved = 0

    def setup(self, run_dir: Path, info: dict[str, Any]) -> None:
        folder = self.save_dir if self.save_dir is not None else run_dir
        self.path = folder / "metrics.csv"
        if self.path.is_file():  # a resumed run: keep what was written
            with self.path.open(newline="") as f:
                self.rows = list(csv.DictReader(f))

    def log_metrics(self, record: dict[str, Any]) -> None:
        self.rows.append(dict(record))
        self._unsaved += 1
        if self._unsaved >= self.flush_every:
            self.save()

    def finalize(self, status: str) -> None:
        self.save()

    def save(self) -> None:
        """Rewrite ``metrics.csv`` with every row so far."""
        if self.path is None:
            return
        columns: dict[str, None] = {}
        for row in self.rows:
            columns.update(dict.fromkeys(row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns))
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: float(v) if hasattr(v, "item") else v for k, v in row.items()})
        data = buffer.getvalue().encode()
        atomic_write(self.path, lambda f: f.write(data))
        self._unsaved = 0
