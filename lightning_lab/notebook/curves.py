"""Metric curves of one run as a PNG: grouping of metrics onto axes, thinning, off-screen drawing.

Matplotlib is used through its object-oriented API only (``Figure`` + ``FigureCanvasAgg``): no
pyplot, no figure manager, no inline-backend leak into the notebook. It is imported on the first
render, so importing this module stays light.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterable
from typing import Any

from lightning_lab.runs.records import INDEX_KEYS

EXCLUDED_PREFIXES = ("sys/",)
"""Metric-name prefixes that are never plotted (system metrics have their own views)."""

_STAGE_PREFIXES = ("train_", "val_", "test_", "train/", "val/", "test/")
_PHASE_SUFFIXES = ("_step", "_epoch")
_STAGE_ORDER = {"train": 0, "": 1, "val": 2, "test": 3}

_CELL_INCHES = (4.2, 3.0)  # one axes with its labels
_MAX_COLUMNS = 3
# Fixed margins in inches, the same for every grid size: cheaper than a layout engine, which
# would draw every frame twice.
_LEFT, _RIGHT, _BOTTOM, _TOP = 0.62, 0.15, 0.45, 0.35
_WSPACE, _HSPACE = 0.72, 0.75
_MARKER_MAX_POINTS = 40


def metric_group(name: str) -> str | None:
    """Return the name of the axes a metric is drawn on, or ``None`` when it is not plotted.

    A leading ``train_``/``val_``/``test_`` (or ``train/``...) and a trailing ``_step``/``_epoch``
    are stripped, so train and validation values of one quantity share an axes; learning rates
    logged as ``lr-<Optimizer>`` share the ``"lr"`` axes. Index keys (``step``, ``epoch``,
    ``time``) and ``sys/...`` metrics are not plotted.

    Example:
        >>> metric_group("val_loss"), metric_group("train/acc_epoch"), metric_group("lr-SGD")
        ('loss', 'acc', 'lr')
    """
    if name in INDEX_KEYS or name.startswith(EXCLUDED_PREFIXES):
        return None
    base = name
    for prefix in _STAGE_PREFIXES:
        if base.startswith(prefix) and len(base) > len(prefix):
            base = base[len(prefix):]
            break
    for suffix in _PHASE_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
            break
    if base == "lr" or base.startswith("lr-"):
        return "lr"
    return base


def _stage(name: str) -> str:
    for stage in ("train", "val", "test"):
        if name.startswith((stage + "_", stage + "/")):
            return stage
    return ""


def _group_order(group: str) -> tuple[int, str]:
    return (0 if group == "loss" else 1, group)


def _as_float(value: Any) -> float | None:
    """The value as a finite float, or ``None`` (None, bools, strings, NaN and inf are not drawn)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class _Series:
    """The points of one line, thinned by halving so at most ``max_points`` are kept.

    Kept points are every ``stride``-th point received (a uniform density), plus the latest point
    when it is not one of those (the "tail"), so the line always ends at the newest value.
    """

    __slots__ = ("xs", "ys", "stride", "seen", "tail", "max_points")

    def __init__(self, max_points: int) -> None:
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.stride = 1
        self.seen = 0
        self.tail = False
        self.max_points = max_points

    def append(self, x: float, y: float) -> None:
        if self.tail:
            self.xs.pop()
            self.ys.pop()
        self.tail = self.seen % self.stride != 0
        self.seen += 1
        self.xs.append(x)
        self.ys.append(y)
        if len(self.xs) > self.max_points:
            self._halve()

    def _halve(self) -> None:
        n_grid = len(self.xs) - self.tail
        last = (self.xs[-1], self.ys[-1])
        self.xs = self.xs[:n_grid:2]
        self.ys = self.ys[:n_grid:2]
        self.stride *= 2
        # The newest point survives halving: as the tail if it is no longer on the grid.
        self.tail = self.tail or (n_grid - 1) % 2 == 1
        if self.tail:
            self.xs.append(last[0])
            self.ys.append(last[1])


class CurvePlot:
    """Curves of a run's metrics against the step, drawn off screen into PNG bytes.

    Metrics are grouped onto axes by :func:`metric_group` (``train_loss`` and ``val_loss`` share
    the ``loss`` axes, each as its own line with a legend); ``loss`` comes first, then the other
    groups alphabetically, at most ``max_axes`` of them. :meth:`add` only stores numbers, so it is
    cheap enough for the training loop; matplotlib objects are created on the first
    :meth:`render_png` and then updated in place (``Line2D.set_data``).

    Args:
        max_points: Most points kept per line; a longer history is thinned by halving.
        max_axes: Most axes drawn; further metric groups are named in a note instead.
        dpi: Resolution of the PNG.

    Example:
        >>> plot = CurvePlot()
        >>> plot.add([{"step": 1, "epoch": 0, "train_loss": 0.9}, {"step": 1, "epoch": 0, "val_loss": 1.0}])
        >>> plot.render_png()[:4]
        b'\\x89PNG'
    """

    def __init__(self, max_points: int = 1500, max_axes: int = 6, dpi: float = 90) -> None:
        if max_points < 2:
            raise ValueError(f"CurvePlot(max_points={max_points!r}): keep at least 2 points per line.")
        self.max_points = max_points
        self.max_axes = max_axes
        self.dpi = dpi
        self.last_draw_seconds = 0.0
        """Seconds the last :meth:`render_png` took (syncing lines, drawing and PNG encoding)."""
        self.version = 0
        """Grows whenever :meth:`add` stores a point; a view redraws only when it changed."""
        self._series: dict[str, _Series] = {}
        self._groups: dict[str, list[str]] = {}  # group -> metric names, in line order
        self._dirty: set[str] = set()
        self._unplotted: set[str] = set()  # names metric_group() left out, so it runs once per name
        self._figure: Any = None
        self._canvas: Any = None
        self._axes: dict[str, Any] = {}
        self._lines: dict[str, Any] = {}
        self._layout: tuple[str, ...] = ()
        self._note: Any = None

    @property
    def empty(self) -> bool:
        """``True`` until a plottable point has been added."""
        return not self._series

    @property
    def figure(self) -> Any:
        """The ``matplotlib.figure.Figure`` drawn into (``None`` before the first render)."""
        return self._figure

    def groups(self) -> dict[str, list[str]]:
        """Each metric group in axes order, with the metrics drawn as its lines (all groups,
        including those beyond ``max_axes``)."""
        return {g: list(self._groups[g]) for g in sorted(self._groups, key=_group_order)}

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        """Append the points of metrics records (``{"step": int, "<metric>": float, ...}``).

        Each numeric metric value becomes the point ``(record["step"], value)``; a record without
        a numeric ``step``, ``None``/non-numeric/non-finite values and ``sys/...`` metrics are skipped.

        Args:
            records: Records as read from ``metrics.jsonl`` (see ``MetricsTail``).
        """
        for record in records:
            x = _as_float(record.get("step"))
            if x is None:
                continue
            for name, value in record.items():
                if name in INDEX_KEYS:
                    continue
                y = _as_float(value)
                if y is None:
                    continue
                series = self._series.get(name)
                if series is None:
                    if name in self._unplotted:
                        continue
                    group = metric_group(name)
                    if group is None:
                        self._unplotted.add(name)
                        continue
                    series = self._series[name] = _Series(self.max_points)
                    members = self._groups.setdefault(group, [])
                    members.append(name)
                    members.sort(key=lambda m: (_STAGE_ORDER[_stage(m)], m))
                series.append(x, y)
                self._dirty.add(name)
                self.version += 1

    def points(self, metric: str) -> tuple[list[float], list[float]]:
        """The kept ``(steps, values)`` of one metric (after thinning); empty lists if unknown."""
        series = self._series.get(metric)
        return (list(series.xs), list(series.ys)) if series else ([], [])

    def clear(self) -> None:
        """Forget every point and axes (e.g. when ``MetricsTail.restarted`` says the file was rewritten)."""
        self._series.clear()
        self._groups.clear()
        self._dirty.clear()
        for ax in self._axes.values():
            ax.remove()
        self._axes.clear()
        self._lines.clear()
        self._layout = ()
        self.version += 1

    def render_png(self) -> bytes:
        """Draw the curves and return them as PNG bytes; measures :attr:`last_draw_seconds`.

        With no data yet the image says so instead of showing empty axes.

        Returns:
            The PNG file contents.
        """
        start = time.perf_counter()
        self._sync()
        buffer = io.BytesIO()
        self._canvas.print_png(buffer, pil_kwargs={"compress_level": 1})  # fast zlib: the bytes stay local
        self.last_draw_seconds = time.perf_counter() - start
        return buffer.getvalue()

    # -- matplotlib side -------------------------------------------------------------------------

    def _sync(self) -> None:
        """Bring the figure up to date with the stored points: layout, new lines, changed data."""
        if self._figure is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            self._figure = Figure(figsize=_CELL_INCHES, dpi=self.dpi)
            self._canvas = FigureCanvasAgg(self._figure)
            self._note = self._figure.text(0.5, 0.5, "", color="0.5")
        ordered = sorted(self._groups, key=_group_order)
        shown = tuple(ordered[: self.max_axes])
        if shown != self._layout or not shown:
            self._relayout(shown, ordered[self.max_axes:])
        for group in shown:
            ax = self._axes[group]
            changed = False
            for name in self._groups[group]:
                line = self._lines.get(name)
                if line is None:
                    (line,) = ax.plot([], [], label=name, linewidth=1.2, markersize=3)
                    self._lines[name] = line
                    ax.legend(fontsize=7, loc="best", frameon=False)
                    self._dirty.add(name)
                if name in self._dirty:
                    series = self._series[name]
                    line.set_data(series.xs, series.ys)
                    # Sparse lines (validation, epoch metrics) show their points; dense ones stay clean.
                    line.set_marker("o" if len(series.xs) <= _MARKER_MAX_POINTS else "None")
                    changed = True
            if changed:
                if group == "lr":
                    self._update_lr_scale(ax)
                ax.relim()
                ax.autoscale_view()
        self._dirty.clear()

    def _relayout(self, shown: tuple[str, ...], hidden: list[str]) -> None:
        from matplotlib.gridspec import GridSpec

        for group in set(self._axes) - set(shown):  # pushed out by groups sorting before it
            self._axes.pop(group).remove()
            for name in self._groups.get(group, ()):
                self._lines.pop(name, None)
        n = max(len(shown), 1)
        ncols = min(n, _MAX_COLUMNS)
        nrows = math.ceil(n / ncols)
        width, height = _CELL_INCHES[0] * ncols, _CELL_INCHES[1] * nrows
        self._figure.set_size_inches(width, height)
        grid = GridSpec(nrows, ncols, figure=self._figure,
                        left=_LEFT / width, right=1 - _RIGHT / width,
                        bottom=_BOTTOM / height, top=1 - _TOP / height,
                        wspace=_WSPACE / ((width - _LEFT - _RIGHT) / ncols),
                        hspace=_HSPACE / ((height - _BOTTOM - _TOP) / nrows))
        for index, group in enumerate(shown):
            ax = self._axes.get(group)
            if ax is None:
                ax = self._axes[group] = self._figure.add_subplot(grid[index])
                ax.set_title(group, fontsize=10, y=1.0)  # a fixed y skips a costly auto-placement per draw
                ax.set_xlabel("step", fontsize=8)
                ax.tick_params(labelsize=8)
                # Few ticks: creating tick labels is about half of a draw's time.
                from matplotlib.ticker import MaxNLocator

                ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
                ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
                ax.grid(True, alpha=0.3)
            else:
                ax.set_subplotspec(grid[index])
        if not shown:
            self._note.set(text="waiting for metrics…", x=0.5, y=0.5, ha="center", va="center", fontsize=10)
        else:
            self._note.set(text=f"not shown: {', '.join(hidden)}" if hidden else "",
                           x=1 - 0.05 / width, y=1 - 0.04 / height, ha="right", va="top", fontsize=7)
        self._layout = shown

    def _update_lr_scale(self, ax: Any) -> None:
        values = [y for name in self._groups["lr"] for y in self._series[name].ys]
        low, high = min(values), max(values)
        scale = "log" if low > 0 and high > 10 * low else "linear"
        if ax.get_yscale() != scale:
            ax.set_yscale(scale)
