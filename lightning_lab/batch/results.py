"""The outcome of a sweep: one record per point, kept in ``batch.json``, shown as results.csv and a table."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lightning_lab._io import atomic_write, atomic_write_json
from lightning_lab.batch.grid import format_value

MANIFEST = "batch.json"
RESULTS_CSV = "results.csv"
FIXED_COLUMNS = ("status", "duration", "error", "notebook", "run")
EXCLUDED_PREFIXES = ("sys/",)  # engine-internal measurements, not the model's metrics
_SNIPPET = re.compile(r"^(In \[\d+\]|cell) `.*?`:")
_HIGHER_IS_BETTER = re.compile(r"acc|f1|auc|precision|recall|score|iou|bleu|r2", re.IGNORECASE)


@dataclass
class PointResult:
    """One grid point's outcome.

    Attributes:
        id: The point's id (its notebook is ``notebooks/<id>.ipynb``, its runs under ``runs/<id>/``).
        params: The injected values.
        status: ``"completed"``, ``"failed"`` or ``"stopped"`` (interrupted by Ctrl-C).
        duration: Seconds the execution took (kernel start included).
        error: For a failed point: the failing cell and ``ename: evalue``.
        notebook: The executed notebook (kept also when the point failed).
        run: The run directory its ``%%train`` wrote (the last one, if it trained several times).
        final: The run's final metrics.
        grid_keys: The keys that vary across the grid.
        skipped: Taken from an earlier sweep in the same folder instead of executed again.
        attempts: Executions it took (2 when the kernel failed to start the first time).
        devices: The ``CUDA_VISIBLE_DEVICES`` its kernel got (``None``: inherited).
    """

    id: str
    params: dict[str, Any]
    status: str
    duration: float | None = None
    error: str | None = None
    notebook: Path | None = None
    run: Path | None = None
    final: dict[str, Any] = field(default_factory=dict)
    grid_keys: tuple[str, ...] = ()
    skipped: bool = False
    attempts: int = 0
    devices: str | None = None

    @property
    def label(self) -> str:
        """``lr=0.001 hidden=32``: the grid values."""
        keys = self.grid_keys or tuple(self.params)
        return " ".join(f"{k}={format_value(self.params[k])}" for k in keys) or "(notebook defaults)"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("skipped")
        data.update(notebook=_str(self.notebook), run=_str(self.run), grid_keys=list(self.grid_keys))
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PointResult:
        data = dict(data)
        for key in ("notebook", "run"):
            data[key] = Path(data[key]) if data.get(key) else None
        data["grid_keys"] = tuple(data.get("grid_keys") or ())
        known = {f for f in cls.__dataclass_fields__ if f != "skipped"}
        return cls(**{k: v for k, v in data.items() if k in known})


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def load_manifest(out: Path) -> dict[str, PointResult]:
    """The points recorded by earlier sweeps into ``out`` (empty when there were none)."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return {p["id"]: PointResult.from_json(p) for p in data.get("points", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def save(out: Path, notebook: Path, points: Sequence[PointResult], kept: Sequence[PointResult] = ()) -> Path:
    """Write ``results.csv`` (this sweep's ``points``) and ``batch.json`` atomically; returns the csv path.

    ``batch.json`` holds the exact values of ``points`` and also ``kept`` (points of earlier sweeps
    into the same folder that this sweep does not include), so any of them can be skipped later.
    """
    atomic_write_json(out / MANIFEST, {"version": 1, "notebook": str(notebook),
                                       "points": [p.to_json() for p in [*points, *kept]]})
    columns = _Columns.of(points)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns.header)
    writer.writerows(columns.row(p, lambda path: "" if path is None else str(path),
                                 lambda d: "" if d is None else f"{d:.1f}") for p in points)
    path = out / RESULTS_CSV
    atomic_write(path, lambda f: f.write(buffer.getvalue().encode()))
    return path


def metric_names(points: Iterable[PointResult]) -> list[str]:
    """Every final metric of these points, in the order they first appear (``sys/...`` left out)."""
    names: list[str] = []
    for point in points:
        for key in point.final:
            if key not in names and not key.startswith(EXCLUDED_PREFIXES):
                names.append(key)
    return names


@dataclass
class _Columns:
    """results.csv's columns: parameters, final metrics (renamed ``final_<m>`` if a name is taken), fixed ones."""

    params: list[str]
    metrics: list[str]

    @classmethod
    def of(cls, points: Sequence[PointResult]) -> _Columns:
        params: list[str] = []
        for point in points:
            params += [k for k in point.params if k not in params]
        return cls(params, metric_names(points))

    @property
    def header(self) -> list[str]:
        taken = set(self.params) | set(FIXED_COLUMNS)
        return [*self.params, *(f"final_{m}" if m in taken else m for m in self.metrics), *FIXED_COLUMNS]

    def row(self, point: PointResult, path_text: Callable[[Path | None], str],
            duration_text: Callable[[float | None], str]) -> list[str]:
        return [*(format_value(point.params[k]) if k in point.params else "" for k in self.params),
                *(_metric_text(point.final.get(m)) for m in self.metrics),
                point.status, duration_text(point.duration), point.error or "", path_text(point.notebook),
                path_text(point.run)]


def _metric_text(value: Any) -> str:
    return "" if value is None else format_value(value)


def higher_is_better(metric: str) -> bool:
    """Accuracy-like names (acc, f1, auc, score, ...) are maximised; everything else (losses) minimised."""
    return bool(_HIGHER_IS_BETTER.search(metric))


def choose_metric(points: Iterable[PointResult], requested: str | None = None) -> str | None:
    """``requested``, else ``val_loss`` when a point reports it, else the first metric every completed point reports."""
    if requested:
        return requested
    done = [p for p in points if p.status == "completed" and p.final]
    names = metric_names(done)
    if "val_loss" in names:
        return "val_loss"
    shared = [n for n in names if all(n in p.final for p in done)]
    return (shared or names or [None])[0]


def best_point(points: Iterable[PointResult], metric: str | None) -> PointResult | None:
    """The completed point with the best final ``metric`` (see :func:`higher_is_better`)."""
    if metric is None:
        return None
    scored = [p for p in points if p.status == "completed" and isinstance(p.final.get(metric), (int, float))]
    if not scored:
        return None
    sign = -1.0 if higher_is_better(metric) else 1.0
    return min(scored, key=lambda p: sign * float(p.final[metric]))


def format_table(points: Sequence[PointResult], out: Path, error_width: int = 70) -> str:
    """The results as aligned plain-text columns: paths relative to ``out``, errors without the cell's source line."""
    if not points:
        return "no points"
    columns = _Columns.of(points)

    def relative(path: Path | None) -> str:
        if path is None:
            return "-"
        try:
            return str(path.relative_to(out))
        except ValueError:
            return str(path)

    def short(row: list[str]) -> list[str]:
        cells = [_short_number(c) for c in row[: -len(FIXED_COLUMNS)]] + row[-len(FIXED_COLUMNS):]
        error = _SNIPPET.sub(r"\1:", cells[-3], count=1)  # the cell's first line stays in results.csv
        cells[-3] = error if len(error) <= error_width else error[: error_width - 1] + "…"
        return [c or "-" for c in cells]

    body = [short(columns.row(p, relative, lambda d: "-" if d is None else f"{d:.1f}s")) for p in points]
    widths = [max(len(c) for c in column) for column in zip(columns.header, *body, strict=True)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [columns.header, *body])


def _short_number(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        return text
    return text if "." not in text and "e" not in text.lower() else f"{value:.4g}"


@dataclass
class BatchResult:
    """What :func:`lightning_lab.batch.run` returns: every point's outcome and where the files are.

    Attributes:
        out: The output folder.
        points: The sweep's points in grid order (those skipped as already completed included).
        metric: The metric the plot and "best" use.
        results_csv: ``<out>/results.csv``.
        plot: The summary plot (``None`` when no completed point reported the metric).
        warnings: The warnings given about the notebook and its parameters.
    """

    out: Path
    points: list[PointResult]
    metric: str | None
    results_csv: Path
    plot: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every point completed."""
        return all(p.status == "completed" for p in self.points)

    @property
    def failed(self) -> list[PointResult]:
        return [p for p in self.points if p.status != "completed"]

    @property
    def skipped(self) -> list[PointResult]:
        return [p for p in self.points if p.skipped]

    def best(self) -> PointResult | None:
        """The completed point with the best final :attr:`metric`."""
        return best_point(self.points, self.metric)

    def table(self) -> str:
        """The printed results table (the same columns as results.csv)."""
        return format_table(self.points, self.out)
