"""The live training view: curve grouping and thinning, off-screen PNGs, redraw rate, Stop, finish."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lightning_lab.notebook.curves import CurvePlot, metric_group
from lightning_lab.notebook.live import LiveView

PNG_MAGIC = b"\x89PNG"


def _records(steps: range, **extra: float) -> list[dict]:
    return [{"step": s, "epoch": s // 100, "time": 0.5 * s, "train_loss": 1.0 / s, **extra} for s in steps]


def _axes_by_title(plot: CurvePlot) -> dict[str, list[str]]:
    return {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in plot.figure.axes}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _run_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- CurvePlot ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "group"), [
    ("train_loss", "loss"), ("val_loss", "loss"), ("loss", "loss"), ("train/loss", "loss"),
    ("val/loss", "loss"), ("x_step", "x"), ("x_epoch", "x"), ("train_acc_epoch", "acc"),
    ("lr-SGD", "lr"), ("lr-Adam/pg1", "lr"), ("sys/step_time", None), ("step", None), ("time", None),
])
def test_metric_group_names(name, group):
    assert metric_group(name) == group


def test_train_and_val_share_axes_lr_is_separate_and_sys_is_left_out():
    plot = CurvePlot()
    plot.add([{"step": s, "epoch": 0, "train_loss": 1.0 / s, "lr-SGD": 0.1 / s, "sys/data_wait": 0.01}
              for s in range(1, 30)])
    plot.add([{"step": 29, "epoch": 0, "val_loss": 0.2, "val_acc": 0.9}])
    assert plot.render_png().startswith(PNG_MAGIC)

    axes = _axes_by_title(plot)
    assert list(axes) == ["loss", "acc", "lr"]  # loss first, then alphabetical
    assert axes["loss"] == ["train_loss", "val_loss"]
    assert axes["lr"] == ["lr-SGD"]
    assert all(ax.get_legend() is not None for ax in plot.figure.axes)
    lr_axes = next(ax for ax in plot.figure.axes if ax.get_title() == "lr")
    assert lr_axes.get_yscale() == "log"  # 0.1 .. 0.0034 spans more than 10x


def test_lines_are_created_once_and_updated_in_place():
    plot = CurvePlot()
    plot.add(_records(range(1, 11)))
    plot.render_png()
    (line,) = plot.figure.axes[0].get_lines()
    for start in (11, 21, 31):
        plot.add(_records(range(start, start + 10)))
        plot.render_png()
    assert plot.figure.axes[0].get_lines() == [line]
    assert list(line.get_xdata())[-1] == 40
    assert plot.figure.axes[0].get_xlim()[1] >= 40  # rescaled to the new data


def test_values_that_are_not_numbers_are_skipped():
    plot = CurvePlot()
    plot.add([{"step": 1, "train_loss": None}, {"step": 2, "train_loss": "n/a"}, {"step": 3, "flag": True},
              {"step": 4, "train_loss": float("nan")}, {"epoch": 0, "train_loss": 0.5}])
    assert plot.empty
    plot.add([{"step": 5, "train_loss": 0.5}])
    assert not plot.empty
    assert plot.points("train_loss") == ([5.0], [0.5])


def test_thinning_keeps_at_most_max_points_and_the_latest_point():
    plot = CurvePlot(max_points=100)
    for s in range(1, 1001):
        plot.add([{"step": s, "train_loss": float(s)}])
        xs, _ = plot.points("train_loss")
        assert len(xs) <= 100
        assert xs[-1] == s
    xs, ys = plot.points("train_loss")
    assert xs[0] == 1 and len(xs) >= 50
    gaps = {b - a for a, b in zip(xs[:-2], xs[1:-1], strict=True)}
    assert len(gaps) == 1  # the kept history is evenly spaced
    plot.render_png()
    assert len(plot.figure.axes[0].get_lines()[0].get_xdata()) <= 100


def test_more_groups_than_axes_are_named_not_drawn():
    plot = CurvePlot(max_axes=3)
    plot.add([{"step": 1, "loss": 1.0, "a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}])
    plot.render_png()
    assert [ax.get_title() for ax in plot.figure.axes] == ["loss", "a", "b"]
    assert "not shown: c, d" in [t.get_text() for t in plot.figure.texts]
    assert tuple(plot.figure.get_size_inches()) == pytest.approx((12.6, 3.0))


def test_max_points_below_two_is_refused():
    with pytest.raises(ValueError, match=r"max_points=1.*at least 2"):
        CurvePlot(max_points=1)


# -- LiveView ----------------------------------------------------------------------------------


def _view(clock: FakeClock, **kwargs) -> LiveView:
    kwargs.setdefault("max_epochs", 3)
    kwargs.setdefault("total_steps", 300)
    return LiveView("demo/run-1", clock=clock, **kwargs)


def test_update_redraws_at_a_bounded_rate():
    clock = FakeClock()
    view = _view(clock, min_redraw_interval=1.0)
    for s in range(1, 201):  # 200 updates within 0.2 s
        view.update(_records(range(s, s + 1)), step=s, epoch=0)
        clock.now += 0.001
    assert view.redraws == 1  # the first data is drawn at once, then nothing until the interval passed
    clock.now += 1.0
    view.update(_records(range(201, 202)), step=201, epoch=0)
    assert view.redraws == 2
    assert bytes(view.image.value).startswith(PNG_MAGIC)
    view.update([], step=201, epoch=0)
    clock.now += 5.0
    view.update([], step=201, epoch=0)
    assert view.redraws == 2  # nothing new to draw


def _redraws_over_20_seconds(draw_cost: float) -> LiveView:
    clock = FakeClock()
    view = _view(clock, min_redraw_interval=1.0, max_draw_fraction=0.02)

    def costly_render() -> bytes:  # the scheduling is under test here, not matplotlib
        clock.now += draw_cost
        return PNG_MAGIC + b"..."

    view.curves.render_png = costly_render
    for step in range(10, 410, 10):  # 20 s of updates, 2 a second
        view.update(_records(range(step - 9, step + 1)), step=step, epoch=0)
        clock.now += 0.5
    return view


def test_costly_draws_are_spaced_out():
    cheap = _redraws_over_20_seconds(draw_cost=0.001)
    assert cheap.redraw_interval == 1.0 and cheap.redraws >= 19  # bounded by min_redraw_interval
    slow = _redraws_over_20_seconds(draw_cost=0.1)  # 0.1 s a draw: at most one every 5 s
    assert slow.redraw_interval == pytest.approx(5.0)
    # Draws at 0 s and 1 s (the first draw is exempt from the budget), then only when the drawing
    # so far plus one more draw fits in 2 % of the elapsed time: 10 and 15 s.
    assert slow.redraws == 4


def test_header_shows_progress_rate_and_eta():
    clock = FakeClock()
    view = _view(clock)
    view.update(_records(range(1, 2)), step=0, epoch=0)
    assert "steps/s" not in view.header.value and "ETA" not in view.header.value
    clock.now += 2.0
    view.update(_records(range(1, 21)), step=20, epoch=0)
    assert view.steps_per_second == pytest.approx(10.0)
    assert "10 steps/s" in view.header.value
    assert "ETA 0:28" in view.header.value  # 280 steps left at 10 steps/s
    assert "epoch 1/3" in view.header.value and "step 20/300" in view.header.value
    assert (view.progress.value, view.progress.max) == (20, 300)
    assert "running" in view.header.value


def test_rate_follows_the_recent_window():
    clock = FakeClock()
    view = _view(clock, total_steps=None)
    step = 0
    for second in range(30):  # 100 steps/s for 15 s, then 10 steps/s
        step += 100 if second < 15 else 10
        view.update([], step=step, epoch=0)
        clock.now += 1.0
    assert view.steps_per_second == pytest.approx(10.0)
    assert view.eta_seconds is None and "ETA" not in view.header.value


def test_table_shows_latest_values_sorted():
    view = _view(FakeClock())
    view.update([{"step": 1, "epoch": 0, "time": 3.0, "train_loss": 0.123456789},
                 {"step": 1, "epoch": 0, "val_acc": 0.5, "lr-SGD": 0.01}], step=1, epoch=0)
    view.update([{"step": 2, "epoch": 0, "time": 4.0, "train_loss": 0.0987654}], step=2, epoch=0)
    table = view.table.value
    assert "0.09877" in table and "0.1235" not in table
    assert table.index("lr-SGD") < table.index("train_loss") < table.index("val_acc")
    assert ">time<" not in table and ">step<" not in table


def test_stop_button_calls_on_stop_once_and_disables_itself():
    calls = []
    view = _view(FakeClock(), on_stop=lambda: calls.append(1))
    assert view.stop_button.description == "Stop" and view.stop_button.icon == "stop"
    view.stop_button.click()
    view.stop_button.click()
    assert calls == [1]
    assert view.stop_button.disabled
    assert "stopping…" in view.header.value
    view.update([], step=5, epoch=0)
    assert "stopping…" in view.header.value


def test_finish_returns_the_final_png_and_shows_the_status():
    clock = FakeClock()
    view = _view(clock, on_stop=lambda: None)
    view.update(_records(range(1, 50)), step=49, epoch=0)
    view.update(_records(range(50, 60)), step=59, epoch=0)  # not drawn yet: within the interval
    assert view.redraws == 1
    png = view.finish("failed", "RuntimeError: <boom>")
    assert png.startswith(PNG_MAGIC) and view.redraws == 2
    assert "failed" in view.header.value and "RuntimeError: &lt;boom&gt;" in view.header.value
    assert view.stop_button.disabled and view.stop_button.layout.display == "none"
    assert view.progress.bar_style == "danger"


def test_finish_without_data_returns_none():
    view = _view(FakeClock())
    assert view.finish("completed") is None
    assert "completed" in view.header.value and view.redraws == 0


def test_show_displays_the_widget_once(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    view = _view(FakeClock())
    view.show()
    view.show()
    assert shown == [view.widget]


def test_bad_redraw_settings_are_refused():
    with pytest.raises(ValueError, match=r"max_draw_fraction=0.*\(0, 1\]"):
        LiveView("r", max_epochs=None, total_steps=None, max_draw_fraction=0)
    with pytest.raises(ValueError, match=r"min_redraw_interval=-1.*>= 0"):
        LiveView("r", max_epochs=None, total_steps=None, min_redraw_interval=-1)


def test_rendering_is_off_screen_and_heavy_imports_are_lazy():
    # One fresh interpreter (importing lightning_lab pulls in torch, which takes seconds).
    result = _run_python(
        "import sys, json\n"
        "import lightning_lab.notebook.curves as curves, lightning_lab.notebook.live as live\n"
        "lazy = [m for m in ('matplotlib', 'ipywidgets') if m in sys.modules]\n"
        "plot = curves.CurvePlot()\n"
        "plot.add([{'step': s, 'train_loss': 1 / s, 'val_loss': 2 / s} for s in range(1, 50)])\n"
        "png = plot.render_png()\n"
        "view = live.LiveView('r', max_epochs=1, total_steps=10, min_redraw_interval=0)\n"
        "view.update([{'step': 1, 'train_loss': 1.0}], step=1, epoch=0)\n"
        "final = view.finish('completed')\n"
        "from matplotlib._pylab_helpers import Gcf\n"
        "print(json.dumps({'lazy': lazy, 'png': [png[:4].hex(), final[:4].hex()], 'redraws': view.redraws,\n"
        "                  'managers': len(Gcf.get_all_fig_managers()), 'pyplot': 'matplotlib.pyplot' in sys.modules}))\n"
    )
    assert result == {"lazy": [], "png": [PNG_MAGIC.hex()] * 2, "redraws": 2, "managers": 0, "pyplot": False}


def test_a_rewritten_metrics_file_starts_the_curves_over():
    view = _view(FakeClock())
    view.update([{"step": s, "train_loss": 1.0, "old_metric": 2.0} for s in range(1, 50)], step=49, epoch=0)
    view.update([{"step": 1, "train_loss": 0.5}], step=1, epoch=0, restarted=True)
    assert view.curves.points("train_loss") == ([1.0], [0.5])
    assert "old_metric" not in view.table.value and "old_metric" not in view.curves.groups()


def test_stop_button_front_end_message_and_kernel_interrupt_settings():
    """The front end sends {"event": "stop"} (handled when the shell is free) and, for a cell that
    trains in the foreground, also asks the server to interrupt the kernel (the JS module)."""
    calls = []
    view = LiveView("demo/run", max_epochs=1, total_steps=10, on_stop=lambda: calls.append(1), interrupt=True)
    button = view.stop_button
    assert type(button).__name__ == "StopButton"
    assert button.interrupt and "api/kernels/" in button._esm and "/interrupt" in button._esm
    button._handle_custom_msg({"event": "stop"}, [])
    assert calls == [1] and button.disabled
    background = LiveView("demo/run", max_epochs=1, total_steps=10, on_stop=lambda: None, interrupt=False)
    assert not background.stop_button.interrupt and background.stop_button.kernel_id == ""


# -- where the time goes ---------------------------------------------------------------------------


def _sys_record(step: int) -> dict:
    return {"step": step, "epoch": 0, "time": 1.0, "sys/data_ms": 6.0, "sys/transfer_ms": 0.0,
            "sys/compute_ms": 3.0, "sys/optimizer_ms": 0.5, "sys/framework_ms": 0.5, "sys/batch_ms": 10.0,
            "sys/steps_per_s": 100.0, "sys/samples_per_s": 3200.0, "sys/peak_memory_mb": 512.0,
            "sys/memory_kind": "rss",
            "sys/advice": ["data-bound: 60% of each batch waits for the next batch. In the DataLoader set "
                           "num_workers=2 (now 0), persistent_workers=True (now False)."]}


def test_the_insight_strip_shows_the_phases_throughput_and_advice_while_training():
    view = LiveView("demo/run-1", max_epochs=1, total_steps=100, clock=FakeClock())
    view.update(_records(range(1, 5)), step=4, epoch=0)
    assert view.insight.value == ""  # nothing measured yet: no empty bar
    view.update([_sys_record(5)], step=5, epoch=0)
    strip = view.insight.value
    assert "data wait 60%" in strip and "forward+backward 30%" in strip
    assert "3,200 samples/s" in strip and "peak RSS 512 MiB" in strip
    assert "num_workers=2 (now 0)" in strip
    assert "sys/" not in view.table.value  # system metrics are not model metrics


def test_the_strip_ends_with_the_whole_runs_summary():
    from lightning_lab.runs.insight import Insight

    view = LiveView("demo/run-1", max_epochs=1, total_steps=100, clock=FakeClock())
    view.update([_sys_record(5)], step=5, epoch=0)
    view.show_insight(Insight(phases_ms={"data": 1.0, "compute": 9.0}, batch_ms=10.0, batches=42, steps_per_s=100.0))
    assert "where the time went (42 batches)" in view.insight.value
    assert "forward+backward 90%" in view.insight.value
    view.finish("completed")
    assert "forward+backward 90%" in view.insight.value
