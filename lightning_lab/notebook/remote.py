"""``%%train --devices N`` / ``--backend local|slurm``: train the cell's model in fresh processes.

Nothing is forked from the kernel. The cells this kernel ran are exported (the same exporter as
``lightning-lab export``) into ``<run>/source/train.py``, which ``lightning-lab run`` starts on the
chosen backend in a process of its own session. The kernel follows the run directory's
``metrics.jsonl`` into the same live widget an in-kernel run has, and when the run ends loads
``last.ckpt`` into the notebook's model. Interrupting the cell (■ or the widget's Stop button)
asks the workers to stop after their step and save (a ``STOP`` file); a second interrupt stops
the processes (or cancels the Slurm job) at once. Whatever was saved is kept.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lightning_lab.errors import LabError
from lightning_lab.notebook.discovery import assigned_names, find_model

GRACE_SECONDS = 60.0  # after a first interrupt, how long the workers get to save before being stopped


def wants_processes(args: Any) -> bool:
    """Whether the ``%%train`` options ask for other processes than this kernel."""
    return args.backend != "inprocess" or _device_count(args.devices) > 1


def _device_count(devices: Any) -> int:
    text = str(devices).strip()
    if text in ("auto", "1", ""):
        return 1
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise LabError(f"--devices {devices!r}: give a positive number of processes (or auto).")


def train_remote(shell: Any, args: Any, line: str, cell: str) -> None:
    """Run the cell, export what it needs, launch it, follow it live, load the trained weights."""
    from lightning_lab.engine.seed import seed_everything

    devices = _device_count(args.devices)
    backend = "local" if args.backend == "inprocess" else args.backend
    started = time.monotonic()
    ns = shell.user_ns
    if args.seed is not None:
        seed_everything(args.seed)
    source = shell.transform_cell(cell)
    result = shell.run_cell(source, store_history=False, silent=False)
    if not result.success:
        return  # the body's own error was already shown
    model_name, model = find_model(ns, assigned_names(source), args.model)
    name = args.name or type(model).__name__
    run_dir = _run_dir_for(args, name)
    cells = _history_cells(shell, line, cell)
    script = _export(cells, run_dir)
    command = _launch_command(args, backend, devices, script, run_dir)
    log = run_dir / "logs" / "launcher.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    print(f"%%train: {devices if backend == 'local' else devices * args.nodes} process(es) on the {backend} "
          f"backend; run directory {run_dir}", file=sys.stderr, flush=True)
    follower = _Follower(run_dir, process, args, started)
    ns["_process"] = process
    if args.background:
        threading.Thread(target=follower.run_to_end, args=(model, ns), daemon=True,
                         name="lightning_lab-follow").start()
        return
    follower.run_to_end(model, ns)


def _run_dir_for(args: Any, name: str) -> Path:
    from lightning_lab.runs import find_last_checkpoint, resolve_root
    from lightning_lab.runs.lifecycle import new_run_dir, prepare_run_dir

    if args.resume:
        root = resolve_root(args.root)
        last = find_last_checkpoint(root, name)
        if last is None:
            raise LabError(f"--resume: no last.ckpt among the runs named {name!r} under {root}; train once first "
                           "or pass --name.")
        run_dir = Path(last).parent.parent
        prepare_run_dir(run_dir)
        (run_dir / "STOP").unlink(missing_ok=True)
        return run_dir
    return new_run_dir(args.root, name)


def _history_cells(shell: Any, line: str, cell: str) -> list[str]:
    """The cells this kernel ran, as typed, ending with this ``%%train`` cell."""
    raw = [c for c in shell.history_manager.input_hist_raw[1:] if c.strip()]
    if raw and raw[-1].lstrip().startswith("%%train"):
        raw = raw[:-1]  # this very cell: written again below from what the magic received
    return [*raw, f"%%train {line}\n{cell}"]


def _export(cells: list[str], run_dir: Path) -> Path:
    from lightning_lab.export import export_notebook

    notebook = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "language": "python"}, "language_info": {"name": "python"}},
        "cells": [{"cell_type": "code", "source": text, "metadata": {}, "outputs": [], "execution_count": None}
                  for text in cells],
    }
    script = run_dir / "source" / "train.py"
    export_notebook(notebook, script)
    (run_dir / "source" / "cells.py").write_text(
        "\n".join(f"# In[{i}]\n{text.rstrip()}\n" for i, text in enumerate(cells, start=1)))
    return script


def _launch_command(args: Any, backend: str, devices: int, script: Path, run_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "lightning_lab", "run", str(script), "--backend", backend,
               "--devices", str(devices), "--run-dir", str(run_dir), "--accelerator", args.accelerator]
    if backend == "slurm":
        command += ["--nodes", str(args.nodes)]
        command += ["--partition", args.partition] if args.partition else []
        command += ["--time", args.time] if args.time else []
    # The launcher decides how many processes there are; the script takes them all ("auto").
    script_args = ["--devices", "auto"] + (["--resume"] if args.resume else [])
    return [*command, "--", *script_args]


class _Follower:
    """Feeds the live widget (or text lines) from the run directory until the launcher exits."""

    def __init__(self, run_dir: Path, process: subprocess.Popen[bytes], args: Any, started: float) -> None:
        from lightning_lab.notebook.session import widget_available

        self.run_dir = run_dir
        self.process = process
        self.args = args
        self.started = started
        self.first_metric_after: float | None = None
        self.widget = not args.no_widget and widget_available()
        self.view: Any = None
        self.printer: Any = None
        self._step, self._epoch = 0, 0
        from lightning_lab.runs.records import MetricsTail

        self._tail = MetricsTail(run_dir / "metrics.jsonl")
        if self.widget:
            from lightning_lab.notebook.live import LiveView

            self.view = LiveView(f"{run_dir.parent.name}/{run_dir.name}", max_epochs=args.max_epochs,
                                 total_steps=args.max_steps if args.max_steps >= 0 else None,
                                 on_stop=self.request_stop, interrupt=not args.background,
                                 min_redraw_interval=2.0, max_draw_fraction=0.015)
            self.view.show()
        else:
            from lightning_lab.launch.follow import ProgressPrinter

            self.printer = ProgressPrinter(interval=5.0)

    def request_stop(self) -> None:
        """Ask the workers to stop after their current step and save ``last.ckpt``."""
        (self.run_dir / "STOP").touch()

    def _take(self, records: list[dict[str, Any]]) -> None:
        if records and self.first_metric_after is None:
            self.first_metric_after = time.monotonic() - self.started
            from lightning_lab.runs.lifecycle import update_launch

            update_launch(self.run_dir, first_metric_after_s=round(self.first_metric_after, 3))
        for record in records:
            self._step = record.get("step", self._step)
            self._epoch = record.get("epoch", self._epoch)
        if self.view is not None:
            self.view.update(records, step=self._step, epoch=self._epoch)
        elif self.printer is not None:
            self.printer(records)

    def _follow(self, deadline: float | None = None) -> None:
        """Read new records every half second until the launcher exits (or ``deadline`` passes)."""
        while True:
            running = self.process.poll() is None
            self._take(self._tail.read_new())  # after poll(): the last records are never missed
            if not running or (deadline is not None and time.monotonic() > deadline):
                return
            time.sleep(0.5)

    def run_to_end(self, model: Any, ns: dict[str, Any]) -> None:
        """Follow until the launcher exits (interrupts stop the run), then settle the notebook's side."""
        try:
            try:
                self._follow()
            except KeyboardInterrupt:
                self.request_stop()
                print("%%train: stopping the workers after their current step (interrupt again to stop them "
                      "at once)…", file=sys.stderr, flush=True)
                try:
                    self._follow(deadline=time.monotonic() + GRACE_SECONDS)
                except KeyboardInterrupt:
                    pass
                self._stop_launcher()
        finally:
            self._finish(model, ns)

    def _stop_launcher(self) -> None:
        """Interrupt the launcher (local: stops the workers; Slurm: cancels the job), then make sure it ends."""
        for _ in range(2):
            if self.process.poll() is not None:
                return
            try:
                os.killpg(self.process.pid, signal.SIGINT)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                continue
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def _finish(self, model: Any, ns: dict[str, Any]) -> None:
        from lightning_lab.engine.checkpoint import load_weights
        from lightning_lab.engine.engine import read_checkpoint
        from lightning_lab.launch.follow import end_summary, run_status
        from lightning_lab.notebook.live import show_static_png
        from lightning_lab.notebook.session import curves_png
        from lightning_lab.runs import Run

        status = run_status(self.run_dir) or "failed"
        last = self.run_dir / "checkpoints" / "last.ckpt"
        loaded = False
        if last.is_file():
            try:
                load_weights(model, read_checkpoint(last), last)
                loaded = True
            except LabError as err:
                print(f"%%train: could not load {last} into the model: {err}", file=sys.stderr)
        try:
            run = Run(self.run_dir)
            ns["_run"] = run
        except LabError:
            run = None
        message = None
        error = run.info.get("error") if run is not None else None
        if status == "failed" and isinstance(error, dict):
            message = f"{error.get('type')}: {error.get('message')}"
        if self.view is not None:
            png = self.view.finish(status, message)
        else:
            if self.printer is not None:
                self.printer([], final=True)
            png = curves_png(run)
        if png is not None and not self.args.background:
            show_static_png(png)
        where = "the trained weights are in the model" if loaded else "no checkpoint was saved; the model is unchanged"
        print(f"%%train: {end_summary(self.run_dir)}; {where}. Logs: {self.run_dir / 'logs'}",
              file=sys.stderr if status == "failed" else sys.stdout, flush=True)

