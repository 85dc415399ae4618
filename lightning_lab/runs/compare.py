"""compare: one metric of several runs on one matplotlib figure (imported only when called)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from lightning_lab.errors import ConfigurationError
from lightning_lab.runs.reader import Run
from lightning_lab.runs.records import INDEX_KEYS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def compare(runs: Iterable[Run | str | os.PathLike[str]], metric: str) -> Figure:
    """Plot ``metric`` against the step for each run, one labelled line per run.

    Args:
        runs: Runs, or paths of run directories.
        metric: The metric to plot, e.g. ``"val_loss"``.

    Returns:
        A :class:`matplotlib.figure.Figure` (with an Agg canvas, so ``savefig`` works and no GUI
        backend or pyplot state is involved). Runs without ``metric`` get no line.

    Raises:
        ConfigurationError: No run logged ``metric`` (the message lists the metrics they did log).
        RunDirectoryError: A path is not a run directory.

    Example:
        >>> fig = compare(list_runs(name="mlp"), "val_loss")  # doctest: +SKIP
        >>> fig.savefig("val_loss.png")  # doctest: +SKIP
    """
    runs = [r if isinstance(r, Run) else Run(r) for r in runs]
    curves = [(run, *run.history(metric)) for run in runs]
    curves = [(run, steps, values) for run, steps, values in curves if steps]
    if not curves:
        logged = sorted({k for run in runs for record in run.metrics for k in record} - set(INDEX_KEYS))
        raise ConfigurationError(
            f"compare: no run has metric {metric!r}; the {len(runs)} run(s) given logged: "
            f"{', '.join(logged) or 'no metrics'}. Pass one of those names."
        )

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for run, steps, values in curves:
        ax.plot(steps, values, label=f"{run.name}/{run.id}")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig
