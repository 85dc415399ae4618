"""The live training widget: header, progress, latest metrics and curves, redrawn at a bounded cost.

The view is fed metrics records (as read from the run's ``metrics.jsonl``) and the step/epoch
counters; it only ever sets widget values after :meth:`LiveView.show`, never re-displays. Curves
are redrawn by wall clock, at most once per ``min_redraw_interval`` and rarely enough that drawing
takes at most ``max_draw_fraction`` of the time. ipywidgets and IPython are imported on use.
"""

from __future__ import annotations

import html
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from lightning_lab.notebook.curves import CurvePlot
from lightning_lab.notebook.insight_view import html_from_insight, html_from_record
from lightning_lab.notebook.stop_button import make_stop_button
from lightning_lab.runs.insight import SYS_BATCH_MS, Insight, is_sys_metric
from lightning_lab.runs.records import INDEX_KEYS

RATE_WINDOW_SECONDS = 10.0
"""Steps/s is measured over roughly this much recent wall time."""

_STATUS_COLORS = {
    "running": "#1f77b4",
    "stopping…": "#7f7f7f",
    "completed": "#2ca02c",
    "stopped": "#ff7f0e",
    "failed": "#d62728",
}
_BAR_STYLES = {"completed": "success", "stopped": "warning", "failed": "danger"}


def show_static_png(png: bytes) -> None:
    """Display PNG bytes as a plain image output, which saved notebooks, nbviewer and papermill
    outputs keep (unlike widgets).

    Args:
        png: The PNG file contents, e.g. from :meth:`LiveView.finish` or :meth:`CurvePlot.render_png`.
    """
    from IPython.display import Image, display

    display(Image(data=png, format="png"))


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _format_rate(rate: float) -> str:
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.3g}"


class LiveView:
    """The ipywidgets view of one training run.

    Args:
        run_name: Shown in the header, e.g. ``"mnist/20261130-041512-3f9a"``.
        max_epochs: Epochs the run will train for, when known (header and progress).
        total_steps: Optimizer steps the run will take, when known (progress bar and ETA).
        on_stop: Called once when the Stop button is clicked; the button is hidden when ``None``.
        min_redraw_interval: Fewest seconds between two redraws of the curves.
        max_draw_fraction: Largest share of wall time spent drawing the curves: after a draw that
            took ``d`` seconds the next one waits at least ``d / max_draw_fraction`` seconds.
        clock: Monotonic clock in seconds used for rates and redraw timing (a test seam).
        interrupt: The Stop button also interrupts the kernel through the Jupyter server, so it
            works while the training cell is busy (see :mod:`lightning_lab.notebook.stop_button`).

    Raises:
        ValueError: ``min_redraw_interval`` is negative or ``max_draw_fraction`` not in (0, 1].

    Example:
        >>> view = LiveView("demo/run-1", max_epochs=3, total_steps=300, on_stop=trainer_stop)  # doctest: +SKIP
        >>> view.show()  # doctest: +SKIP
        >>> view.update(tail.read_new(), step=trainer.global_step, epoch=trainer.current_epoch)  # doctest: +SKIP
        >>> show_static_png(view.finish("completed"))  # doctest: +SKIP
    """

    def __init__(self, run_name: str, *, max_epochs: int | None, total_steps: int | None,
                 on_stop: Callable[[], None] | None = None, min_redraw_interval: float = 1.0,
                 max_draw_fraction: float = 0.02, clock: Callable[[], float] = time.perf_counter,
                 interrupt: bool = False) -> None:
        if min_redraw_interval < 0:
            raise ValueError(f"LiveView(min_redraw_interval={min_redraw_interval!r}): "
                             "give a number of seconds >= 0.")
        if not 0 < max_draw_fraction <= 1:
            raise ValueError(f"LiveView(max_draw_fraction={max_draw_fraction!r}): give a share of wall "
                             "time in (0, 1], e.g. 0.02 for 2%.")
        import ipywidgets as widgets

        self.run_name = run_name
        self.max_epochs = max_epochs
        self.total_steps = total_steps
        self.min_redraw_interval = min_redraw_interval
        self.max_draw_fraction = max_draw_fraction
        self.curves = CurvePlot()
        self.redraws = 0
        """How many times the curves were drawn into the image."""
        self.draw_seconds: list[float] = []
        """Seconds each redraw took (render, PNG encoding and handing the bytes to the widget)."""

        self._on_stop = on_stop
        self._clock = clock
        self._shown = False
        self._finished = False
        self._stop_requested = False
        self._status = "running"
        self._message: str | None = None
        self._step = 0
        self._epoch = 0
        self._started_at: float | None = None
        self._samples: deque[tuple[float, int]] = deque()  # (time, step) over the rate window
        self._rate: float | None = None
        self._latest: dict[str, float] = {}
        self._system: dict[str, Any] | None = None  # the newest sys/... record (where the time goes)
        self._last_redraw_at: float | None = None
        self._drawn_version = -1

        self.header = widgets.HTML()
        self.progress = widgets.IntProgress(min=0, max=1, value=0, layout=widgets.Layout(width="60%"))
        if total_steps is None and max_epochs is None:
            self.progress.layout.display = "none"
        self.stop_button = make_stop_button(interrupt=interrupt,
                                            tooltip="Stop after the current step (last.ckpt is saved)")
        self.stop_button.on_click(self._on_stop_click)
        if on_stop is None:
            self.stop_button.layout.display = "none"
        self.table = widgets.HTML()
        self.insight = widgets.HTML()
        """The "where the time goes" strip: phase bar, throughput and advice (empty until measured)."""
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", display="none"))
        self.widget = widgets.VBox([
            self.header,
            widgets.HBox([self.progress, self.stop_button], layout=widgets.Layout(align_items="center")),
            self.insight,
            widgets.HBox([self.table, self.image], layout=widgets.Layout(flex_flow="row wrap",
                                                                         align_items="flex-start")),
        ])
        self._render_header()
        self._render_progress()

    # -- public ----------------------------------------------------------------------------------

    def show(self) -> None:
        """Display the widget in the current cell's output (once; later calls do nothing)."""
        if self._shown:
            return
        from IPython.display import display

        display(self.widget)
        self._shown = True

    def update(self, records: list[dict[str, Any]], *, step: int, epoch: int, status: str = "running",
               restarted: bool = False) -> None:
        """Take new metrics records and the current counters; redraw the curves when due.

        Cheap enough to call a few times a second from the training loop: it stores the numbers,
        sets the header, progress and table widget values, and draws the curves only when
        :attr:`redraw_interval` has passed since the last draw and there is something new.

        Args:
            records: Records appended to ``metrics.jsonl`` since the previous call.
            step: The global (optimizer) step.
            epoch: The current epoch, counted from 0 (``Trainer.current_epoch``).
            status: The run status shown in the header while it trains.
            restarted: The metrics file was rewritten (``MetricsTail.restarted``): forget the old
                curves and values before taking ``records``.
        """
        if self._finished:
            return
        now = self._clock()
        if restarted:
            self.curves.clear()
            self._latest.clear()
            self._samples.clear()
            self._system = None
        self.curves.add(records)
        self._take_latest(records)
        self._status = status
        self._step, self._epoch = step, epoch
        self._measure_rate(now, step)
        self._render_header()
        self._render_progress()
        self._render_table()
        self._render_insight()
        if self._redraw_due(now):
            self._redraw()

    def finish(self, status: str, message: str | None = None) -> bytes | None:
        """Show the final state and draw the curves one last time, whatever the redraw rate.

        The Stop button and the live image are hidden: the caller displays the returned PNG as a
        static image (:func:`show_static_png`), which also survives in saved notebooks.

        Args:
            status: ``"completed"``, ``"stopped"`` or ``"failed"``.
            message: Shown after the status, e.g. the error of a failed run.

        Returns:
            The final curves as PNG bytes, or ``None`` when no metric was ever plotted.
        """
        self._finished = True
        self._status = status
        self._message = message
        self.stop_button.disabled = True
        self.stop_button.layout.display = "none"
        self.progress.bar_style = _BAR_STYLES.get(status, "")
        self._render_header()
        self._render_progress()
        self._render_table()
        png = None if self.curves.empty else self._redraw()
        self.image.layout.display = "none"
        return png

    @property
    def steps_per_second(self) -> float | None:
        """Steps per second over the last ~10 s, once two updates apart in time have been seen."""
        return self._rate

    @property
    def eta_seconds(self) -> float | None:
        """Estimated seconds to ``total_steps``, when both it and the rate are known."""
        if self.total_steps is None or not self._rate:
            return None
        return max(self.total_steps - self._step, 0) / self._rate

    @property
    def redraw_interval(self) -> float:
        """Seconds that must pass after a redraw before the next: the larger of
        ``min_redraw_interval`` and the last draw's duration divided by ``max_draw_fraction``.

        The first draw does not count: it pays once for importing matplotlib and loading fonts."""
        last = self.draw_seconds[-1] if len(self.draw_seconds) > 1 else 0.0
        return max(self.min_redraw_interval, last / self.max_draw_fraction)

    def _within_budget(self, now: float) -> bool:
        """Whether drawing so far plus one more draw (as long as the last) stays within
        ``max_draw_fraction`` of the time since the view started. The first draw (which pays for
        importing matplotlib and building the figure) is exempt from both."""
        if len(self.draw_seconds) < 2 or self._started_at is None:
            return True
        spent = sum(self.draw_seconds[1:]) + self.draw_seconds[-1]
        return spent <= self.max_draw_fraction * (now - self._started_at)

    # -- internals -------------------------------------------------------------------------------

    def _on_stop_click(self, _button: Any) -> None:
        if self._stop_requested or self._finished:
            return
        self._stop_requested = True
        self.stop_button.disabled = True
        self._render_header()
        if self._on_stop is not None:
            self._on_stop()

    def _take_latest(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            if SYS_BATCH_MS in record:  # the engine's timing record: the insight strip shows it
                self._system = record
                continue
            for name, value in record.items():
                if (name not in INDEX_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool)
                        and not is_sys_metric(name)):
                    self._latest[name] = float(value)

    def show_insight(self, insight: Insight) -> None:
        """Show a whole run's summary in the strip (at the end, in place of the last live window)."""
        self._system = None
        value = html_from_insight(insight)
        if self.insight.value != value:
            self.insight.value = value

    def _render_insight(self) -> None:
        if self._system is None:
            return
        value = html_from_record(self._system)
        if self.insight.value != value:
            self.insight.value = value

    def _measure_rate(self, now: float, step: int) -> None:
        if self._started_at is None:
            self._started_at = now
        if self._samples and step < self._samples[-1][1]:  # the counter went back (resumed run)
            self._samples.clear()
        self._samples.append((now, step))
        # Keep one sample at least a window old as the anchor of the moving rate.
        while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW_SECONDS:
            self._samples.popleft()
        t0, s0 = self._samples[0]
        if now > t0:
            self._rate = (step - s0) / (now - t0)

    def _redraw_due(self, now: float) -> bool:
        if self.curves.empty or self.curves.version == self._drawn_version:
            return False
        if self._last_redraw_at is None:
            return True
        return now - self._last_redraw_at >= self.redraw_interval and self._within_budget(now)

    def _redraw(self) -> bytes:
        start = self._clock()
        version = self.curves.version
        png = self.curves.render_png()
        self.image.value = png
        self.image.layout.display = ""
        self.draw_seconds.append(self._clock() - start)
        self.redraws += 1
        self._last_redraw_at = start
        self._drawn_version = version
        return png

    def _render_header(self) -> None:
        status = "stopping…" if self._stop_requested and not self._finished else self._status
        color = _STATUS_COLORS.get(status, "#7f7f7f")
        parts = [f"<b>{html.escape(self.run_name)}</b>",
                 f'<span style="background:{color};color:white;border-radius:4px;padding:1px 6px">'
                 f"{html.escape(status)}</span>"]
        shown_epoch = self._epoch + 1
        if self.max_epochs is not None:
            parts.append(f"epoch {min(shown_epoch, self.max_epochs)}/{self.max_epochs}")
        else:
            parts.append(f"epoch {shown_epoch}")
        parts.append(f"step {self._step}" + (f"/{self.total_steps}" if self.total_steps is not None else ""))
        if self._rate is not None and self._rate > 0:
            parts.append(f"{_format_rate(self._rate)} steps/s")
        eta = self.eta_seconds
        if eta is not None and not self._finished and math.isfinite(eta):
            parts.append(f"ETA {_format_duration(eta)}")
        if self._started_at is not None:
            parts.append(f"elapsed {_format_duration(self._clock() - self._started_at)}")
        text = " &middot; ".join(parts)
        if self._message:
            text += f'<br><span style="white-space:pre-wrap">{html.escape(self._message)}</span>'
        value = f'<div style="font-size:13px;line-height:1.6">{text}</div>'
        if self.header.value != value:
            self.header.value = value

    def _render_progress(self) -> None:
        if self.total_steps is not None:
            total, done = self.total_steps, self._step
        elif self.max_epochs is not None:
            total, done = self.max_epochs, self._epoch
        else:
            return
        total = max(int(total), 1)
        if self.progress.max != total:
            self.progress.max = total
        done = min(max(int(done), 0), total)
        if self.progress.value != done:
            self.progress.value = done

    def _render_table(self) -> None:
        rows = "".join(
            f'<tr><td style="padding:0 1em 0 0">{html.escape(name)}</td>'
            f'<td style="text-align:right">{value:.4g}</td></tr>'
            for name, value in sorted(self._latest.items())
        )
        value = f'<table style="font-family:monospace;font-size:12px">{rows}</table>' if rows else ""
        if self.table.value != value:
            self.table.value = value
