"""The sweep's summary plot: the chosen metric per point (matplotlib's object API, no pyplot)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_lab.batch.grid import format_value
from lightning_lab.batch.results import PointResult, best_point, higher_is_better

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PLOT_FILE = "summary.png"


def summary_plot(points: Sequence[PointResult], metric: str | None, path: Path, title: str = "") -> Path | None:
    """Save a plot of ``metric`` for every completed point to ``path``.

    With a numeric grid key the metric is drawn against it (one line per combination of the other
    keys, a log axis for values spanning decades, like learning rates); otherwise one bar per
    point. The best point is marked.

    Returns:
        ``path``, or ``None`` when no completed point reports ``metric`` (nothing is written).
    """
    done = [p for p in points if p.status == "completed" and _number(p.final.get(metric)) is not None]
    if metric is None or not done:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x_key = _numeric_key(done)
    best = best_point(done, metric)
    if x_key is not None:
        _lines(ax, done, metric, x_key, best)
    else:
        _bars(ax, done, metric, best)
    direction = "higher is better" if higher_is_better(metric) else "lower is better"
    ax.set_ylabel(f"{metric} ({direction})")
    ax.grid(True, alpha=0.3)
    failed = len(points) - len([p for p in points if p.status == "completed"])
    note = f" · {failed} point(s) not completed" if failed else ""
    ax.set_title(f"{title}{' · ' if title else ''}final {metric} per point{note}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _numeric_key(points: Sequence[PointResult]) -> str | None:
    """The first grid key whose values are all numbers, with at least two distinct values."""
    for key in points[0].grid_keys:
        values = [p.params.get(key) for p in points]
        if all(_number(v) is not None for v in values) and len(set(values)) > 1:
            return key
    return None


def _lines(ax: Axes, points: Sequence[PointResult], metric: str, x_key: str, best: PointResult | None) -> None:
    series: dict[str, list[PointResult]] = {}
    for point in points:
        rest = " ".join(f"{k}={format_value(point.params[k])}" for k in point.grid_keys if k != x_key)
        series.setdefault(rest, []).append(point)
    for label, members in series.items():
        members = sorted(members, key=lambda p: float(p.params[x_key]))
        ax.plot([p.params[x_key] for p in members], [p.final[metric] for p in members], marker="o",
                label=label or None)
    xs = [float(p.params[x_key]) for p in points]
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    if best is not None:
        ax.plot([best.params[x_key]], [best.final[metric]], marker="*", markersize=16, color="gold",
                markeredgecolor="black", linestyle="none", label=f"best: {best.label}")
    ax.set_xlabel(x_key)
    ax.legend(fontsize=8)


def _bars(ax: Axes, points: Sequence[PointResult], metric: str, best: PointResult | None) -> None:
    labels = [p.label for p in points]
    colors = ["tab:orange" if p is best else "tab:blue" for p in points]
    ax.bar(range(len(points)), [p.final[metric] for p in points], color=colors)
    tilted = len(points) > 3
    ax.set_xticks(range(len(points)), labels, rotation=30 if tilted else 0, ha="right" if tilted else "center",
                  fontsize=8)
