"""The notebook side of a training run: the live view fed from the run directory, final curves, %runs."""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any

from lightning_lab.callbacks.base import Callback
from lightning_lab.runs import MetricsTail

if TYPE_CHECKING:
    from lightning_lab.engine.module import LabModule
    from lightning_lab.engine.trainer import Trainer

NO_WIDGET_ENV = "LIGHTNING_LAB_NO_WIDGET"  # set by headless runners (batch workers, CI)


def widget_available() -> bool:
    """Whether a live widget can be shown: inside an IPython kernel, with ipywidgets, not headless."""
    if os.environ.get(NO_WIDGET_ENV, "") not in ("", "0"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class NotebookProgress(Callback):
    """Drives a :class:`~lightning_lab.notebook.live.LiveView` from the run's ``metrics.jsonl``.

    The view reads the run directory, exactly as it would follow a run in another process; this
    callback only decides when to look (at most ``poll_hz`` times a second, by wall clock).
    """

    def __init__(self, background: bool = False, poll_hz: float = 2.0) -> None:
        self.background = background
        self.interval = 1.0 / poll_hz
        self.view: Any = None
        self._trainer: Trainer | None = None
        self._tail: MetricsTail | None = None
        self._next = 0.0

    def show(self, trainer: Trainer) -> None:
        """Display the view now, in the cell that starts training (a background thread cannot)."""
        from lightning_lab.notebook.live import LiveView

        self._trainer = trainer
        self.view = LiveView("starting…", max_epochs=trainer.max_epochs, total_steps=None,
                             on_stop=lambda: trainer.request_stop("stop button"), interrupt=not self.background,
                             min_redraw_interval=2.0, max_draw_fraction=0.015)
        self.view.show()

    def on_train_start(self, trainer: Trainer, module: LabModule) -> None:
        if self.view is None or self._trainer is not trainer:
            self.show(trainer)
        self.view.run_name = f"{trainer.run_dir.parent.name}/{trainer.run_dir.name}"
        self.view.total_steps = _total_steps(trainer)
        self._tail = MetricsTail(trainer.run_dir / "metrics.jsonl")
        self._next = 0.0
        self._update(trainer)

    def on_train_batch_end(self, trainer: Trainer, module: LabModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self._update(trainer)

    def on_validation_end(self, trainer: Trainer, module: LabModule) -> None:
        self._update(trainer)

    def on_train_end(self, trainer: Trainer, module: LabModule) -> None:
        status = "stopped" if trainer._stops.reason is not None else "completed"
        self._finish(trainer, status, None)

    def on_exception(self, trainer: Trainer, module: LabModule, exception: BaseException) -> None:
        if self.view is not None:
            self._finish(trainer, "failed", f"{type(exception).__name__}: {exception}")

    def _update(self, trainer: Trainer) -> None:
        if self.view is not None and self._tail is not None:
            self.view.update(self._tail.read_new(), step=trainer.global_step, epoch=trainer.current_epoch)

    def _finish(self, trainer: Trainer, status: str, message: str | None) -> None:
        from lightning_lab.notebook.live import show_static_png

        trainer._recorder.flush()
        self._update(trainer)
        insight = trainer.insight if trainer.insight is not None and trainer.insight.batches else None
        if insight is not None:
            self.view.show_insight(insight)
        png = self.view.finish(status, message)
        self.view = None
        # Saved notebooks (GitHub, nbviewer, papermill) show this image where widgets do not render.
        # A background run's cell has returned: its final curves stay in the widget's image.
        if png is not None and not self.background:
            show_static_png(png)
        if insight is not None and not self.background:
            show_insight_html(insight)


def _total_steps(trainer: Trainer) -> int | None:
    if trainer.max_steps >= 0:
        return trainer.max_steps
    batches = trainer.num_training_batches
    if trainer.max_epochs is None or not math.isfinite(batches):
        return None
    return trainer.max_epochs * math.ceil(batches / trainer.accumulate_grad_batches)


def show_insight_html(insight: Any) -> None:
    """Display where a run's time went as plain HTML, which saved notebooks keep (unlike widgets)."""
    from IPython.display import HTML, display

    from lightning_lab.notebook.insight_view import html_from_insight

    display(HTML(html_from_insight(insight)))
    if insight.profile:
        from lightning_lab.notebook.insight_view import profile_html

        display(HTML(profile_html(insight.profile)))


def curves_png(run: Any) -> bytes | None:
    """The curves of ``run`` (a :class:`~lightning_lab.runs.Run`) as PNG bytes; ``None`` when nothing is plotted."""
    from lightning_lab.notebook.curves import CurvePlot

    if run is None:
        return None
    plot = CurvePlot()
    plot.add(run.metrics)
    return None if plot.empty else plot.render_png()


def show_final_curves(trainer: Trainer) -> None:
    """Display the run's curves as a static PNG (text-progress runs, papermill outputs)."""
    from lightning_lab.notebook.live import show_static_png

    png = curves_png(trainer.run)
    if png is not None:
        show_static_png(png)


def show_runs(root: str | None, name: str | None, metric: str | None) -> None:
    """Print the runs table and show an overlay of ``metric`` (default: val_loss, else a shared metric)."""
    from lightning_lab.notebook.live import show_static_png
    from lightning_lab.runs import list_runs
    from lightning_lab.runs.table import runs_table

    runs = list_runs(root, name=name)
    print(runs_table(runs))
    if not runs:
        return
    metric = metric or _default_metric(runs)
    if metric is None:
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from lightning_lab.runs import compare

    figure = compare(runs, metric)
    canvas = FigureCanvasAgg(figure)
    import io

    buffer = io.BytesIO()
    canvas.print_png(buffer)
    show_static_png(buffer.getvalue())


def _default_metric(runs: list[Any]) -> str | None:
    keys = [set(run.final) for run in runs]
    shared = set.intersection(*keys) if keys else set()
    for preferred in ("val_loss", "val/loss", "train_loss", "loss"):
        if preferred in shared:
            return preferred
    candidates = sorted(shared or set.union(*keys))
    return candidates[0] if candidates else None


__all__ = ["NotebookProgress", "show_final_curves", "show_runs", "widget_available"]
