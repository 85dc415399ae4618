"""``lightning_lab.batch.run``: a papermill sweep over a grid, as one pipeline.

check the notebook → plan the points (skip those already completed) → execute them on N workers
→ save results.csv and the summary plot → print the table.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_lab.batch import pool
from lightning_lab.batch.grid import Point, expand
from lightning_lab.batch.parameters import kernel_name, parameter_warnings, read_notebook
from lightning_lab.batch.plot import PLOT_FILE, summary_plot
from lightning_lab.batch.progress import Progress
from lightning_lab.batch.results import BatchResult, PointResult, choose_metric, load_manifest, save
from lightning_lab.batch.worker import Task
from lightning_lab.errors import ConfigurationError

START_TIMEOUT_S = 60.0
_RUN_DIR_ENV = "LIGHTNING_LAB_RUN_DIR"  # a launcher's prepared run: must not leak into the points


class BatchWarning(UserWarning):
    """A sweep that will run but probably not as meant (no parameters cell, a key the notebook never assigns)."""


def run(notebook: str | os.PathLike[str], grid: Mapping[str, Sequence[Any]] | None = None,
        params: Mapping[str, Any] | None = None, *, workers: int | None = None,
        gpus: str | Sequence[int | str] | None = None, out: str | os.PathLike[str] | None = None,
        timeout: float | None = None, kernel: str | None = None, metric: str | None = None,
        rerun: bool = False, progress: bool = True) -> BatchResult:
    """Execute ``notebook`` once per grid point with papermill, in parallel, and tabulate the runs.

    Each point's values go into the notebook's ``parameters``-tagged cell. Each point runs in its
    own worker process, which gives the kernel ``LIGHTNING_LAB_ROOT=<out>/runs/<point id>`` (so
    the runs of a point are told apart even when the notebook's ``%%train --name`` is the same
    for all points), ``LIGHTNING_LAB_NAME=<point id>`` (the run name when ``%%train`` has no
    ``--name``), ``LIGHTNING_LAB_NO_WIDGET=1`` (text progress and a static curves image in the
    output notebook), ``CUDA_VISIBLE_DEVICES`` from ``gpus`` and, unless set,
    ``OMP_NUM_THREADS`` = cores / workers. Output folder::

        <out>/notebooks/<id>.ipynb   executed notebooks (kept when a point fails)
        <out>/runs/<id>/...          the run directories its %%train wrote
        <out>/logs/<id>.log          the worker's and kernel's log
        <out>/results.csv            one row per point of this sweep
        <out>/batch.json             every point swept into <out>, exact values: what re-runs skip
        <out>/summary.png            the chosen metric per point

    Args:
        notebook: The notebook to execute.
        grid: ``{key: [values]}``; every combination is a point (``{"lr": [1e-3, 3e-3]}``).
        params: Values injected into every point (``{"max_epochs": 1}``).
        workers: Points executed at once (default: the number of ``gpus``, else 1).
        gpus: GPU ids, ``"0,1"`` or ``[0, 1]``; worker ``k`` gets ``gpus[k % len(gpus)]``.
        out: The output folder (default ``./lab_batch/<notebook name>``).
        timeout: Seconds one cell may run before the point fails (default: no limit).
        kernel: Kernel name (default: the notebook's).
        metric: The metric to plot and rank by (default ``val_loss``, else the first shared one).
        rerun: Execute points that an earlier sweep in ``out`` already completed (default: skip them).
        progress: Print progress lines (stderr) and the final table (stdout).

    Returns:
        The :class:`BatchResult`; ``result.ok`` is false when a point failed.

    Raises:
        ConfigurationError: The notebook, grid, workers, gpus, timeout or kernel cannot work.
        KeyboardInterrupt: Ctrl-C; running points were stopped and what finished is saved.

    Example:
        >>> from lightning_lab import batch  # doctest: +SKIP
        >>> result = batch.run("notebooks/01_quickstart.ipynb", grid={"lr": [1e-3, 3e-3]},
        ...                    params={"max_epochs": 2}, workers=2)  # doctest: +SKIP
        >>> result.best().params  # doctest: +SKIP
        {'lr': 0.003, 'max_epochs': 2}
    """
    notebook = Path(notebook).expanduser().resolve()
    contents = read_notebook(notebook)
    grid, params = dict(grid or {}), dict(params or {})
    points = expand(grid, params)
    gpu_ids = parse_gpus(gpus)
    workers = _workers(workers, gpu_ids)
    if timeout is not None and not timeout > 0:
        raise ConfigurationError(f"--timeout must be a positive number of seconds, got {timeout!r}.")
    _check_kernel(kernel, kernel_name(contents), notebook)
    out = Path(out).expanduser().resolve() if out is not None else Path.cwd() / "lab_batch" / notebook.stem
    notices = parameter_warnings(notebook, contents, grid, params)
    for notice in notices:
        warnings.warn(notice, BatchWarning, stacklevel=2)

    records, todo, kept = _plan(points, out, rerun)
    launch = pool.Launcher() if todo else None  # it imports papermill while we finish planning
    workers = max(1, min(workers, len(todo)))
    report = Progress(len(points), metric, enabled=progress)
    report.say(f"{notebook.name}: {len(points)} point(s), {len(todo)} to run, {len(records)} skipped, "
               f"{workers} worker(s); output in {out}")
    report.skipped(list(records.values()))

    def ordered() -> list[PointResult]:
        return [records[p.id] for p in points if p.id in records]

    def on_result(result: PointResult) -> None:
        records[result.id] = result
        _keep_log(out, result)
        save(out, notebook, ordered(), kept)

    tasks = _Tasks(notebook, out, kernel, timeout, gpu_ids, threads=max(1, _cpu_count() // workers))
    try:
        if launch is not None:
            pool.execute(todo, tasks, workers, report, tasks.stop_file, on_result, launch)
    finally:
        if launch is not None:
            launch.close()
        result = _conclude(notebook, out, ordered(), kept, metric, notices, report, progress)
    return result


def _plan(points: Sequence[Point], out: Path, rerun: bool
          ) -> tuple[dict[str, PointResult], list[Point], list[PointResult]]:
    """Split the points into those an earlier sweep into ``out`` completed (skipped unless ``rerun``)
    and those to execute; also return the earlier points this sweep does not include (kept in batch.json).
    """
    earlier = load_manifest(out)
    done = {p.id: _refreshed(earlier[p.id]) for p in points if not rerun and _done(earlier.get(p.id), p)}
    for record in done.values():
        record.skipped = True
    ids = {p.id for p in points}
    return done, [p for p in points if p.id not in done], [r for i, r in earlier.items() if i not in ids]


class _Tasks:
    """Builds a point's worker task: its files under ``out`` and its kernel's environment."""

    def __init__(self, notebook: Path, out: Path, kernel: str | None, timeout: float | None,
                 gpus: list[str], threads: int) -> None:
        self.notebook, self.out, self.kernel, self.timeout, self.gpus = notebook, out, kernel, timeout, gpus
        self.threads = str(threads)
        self.base_env = dict(os.environ)  # as of this call (the launcher was started with an older copy)
        self.stop_file = out / ".batch" / "STOP"
        self.stop_file.unlink(missing_ok=True)

    def __call__(self, point: Point, slot: int) -> tuple[Task, Path, str | None]:
        """``(task, run root, CUDA_VISIBLE_DEVICES)`` for ``point`` on worker ``slot``."""
        devices = self.gpus[slot % len(self.gpus)] if self.gpus else None
        root = self.out / "runs" / point.id
        output = self.out / "notebooks" / f"{point.id}.ipynb"
        for folder in (root, output.parent, self.stop_file.parent):
            folder.mkdir(parents=True, exist_ok=True)
        task: Task = {
            "id": point.id, "input": str(self.notebook), "output": str(output), "params": point.params,
            "env": _kernel_env(self.base_env, root, point.id, output, devices, self.threads),
            "cwd": str(self.notebook.parent), "kernel": self.kernel, "timeout": self.timeout,
            "start_timeout": START_TIMEOUT_S, "log": str(self.out / "logs" / f"{point.id}.log"),
            "result": str(self.stop_file.parent / f"{point.id}.json"), "stop": str(self.stop_file),
            "parent_pid": os.getpid(),
        }
        return task, root, devices


def _conclude(notebook: Path, out: Path, points: list[PointResult], kept: list[PointResult], metric: str | None,
              notices: list[str], report: Progress, progress: bool) -> BatchResult:
    """Save results.csv and the plot; print the table."""
    csv_path = save(out, notebook, points, kept)
    chosen = choose_metric(points, metric)
    result = BatchResult(out=out, points=points, metric=chosen, results_csv=csv_path, warnings=notices)
    if metric and not any(metric in p.final for p in points):
        reported = sorted({k for p in points for k in p.final})
        report.say(f"no point reports the metric {metric!r} (--metric); they report: "
                   f"{', '.join(reported) or 'no metrics'}")
    result.plot = summary_plot(points, chosen, out / PLOT_FILE, title=notebook.stem)
    if progress:
        files = f"results: {csv_path}" + (f" · plot: {result.plot}" if result.plot else "")
        failed = f", not completed: {', '.join(p.id for p in result.failed)}" if result.failed else ""
        print(f"{result.table()}\n{files}\n{len(points) - len(result.failed)}/{len(points)} completed{failed}",
              flush=True)
    return result


def parse_gpus(gpus: str | Sequence[int | str] | None) -> list[str]:
    """``"0,1"`` or ``[0, 1]`` → ``["0", "1"]`` (ids, UUIDs or MIG names are passed through as text).

    Raises:
        ConfigurationError: An entry is empty.
    """
    if gpus is None:
        return []
    items = gpus.split(",") if isinstance(gpus, str) else [str(g) for g in gpus]
    ids = [item.strip() for item in items]
    if not ids or any(not i for i in ids):
        raise ConfigurationError(f"--gpus {gpus!r}: expected GPU ids separated by commas, e.g. --gpus 0,1.")
    return ids


def _workers(workers: int | None, gpus: list[str]) -> int:
    if workers is None:
        return len(gpus) or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigurationError(f"--workers must be a whole number of at least 1, got {workers!r}.")
    return workers


def _check_kernel(kernel: str | None, saved: str | None, notebook: Path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    name = kernel or saved
    available = sorted(KernelSpecManager().find_kernel_specs())
    if name is None:
        raise ConfigurationError(f"{notebook} names no kernel (metadata.kernelspec); pass --kernel, one of: "
                                 f"{', '.join(available)}.")
    if name not in available:
        where = "--kernel" if kernel else f"the kernel {notebook.name} was saved with"
        raise ConfigurationError(f"{where}: no kernel named {name!r} is installed; installed: "
                                 f"{', '.join(available) or 'none'}. Pass --kernel with one of them.")


def _done(record: PointResult | None, point: Point) -> bool:
    return record is not None and record.status == "completed" and record.params == point.params


def _refreshed(record: PointResult) -> PointResult:
    """An earlier point with its metrics re-read from its run directory (the source of truth)."""
    if record.run is not None:
        from lightning_lab.errors import RunDirectoryError
        from lightning_lab.runs import load_run

        try:
            run = load_run(record.run)
        except RunDirectoryError:
            return record
        record.final = {k: v for k, v in run.final.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return record


def _kernel_env(base: dict[str, str], root: Path, name: str, output: Path, devices: str | None,
                threads: str) -> dict[str, str]:
    env = dict(base)
    env.pop(_RUN_DIR_ENV, None)
    env.update(LIGHTNING_LAB_ROOT=str(root), LIGHTNING_LAB_NAME=name, LIGHTNING_LAB_NO_WIDGET="1",
               JPY_SESSION_NAME=str(output))  # run.json's "notebook": the executed copy
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    # N kernels training at once on the same cores: one thread pool each, not N that oversubscribe them
    env.setdefault("OMP_NUM_THREADS", threads)
    return env


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _keep_log(out: Path, result: PointResult) -> None:
    """Copy the worker's log into the run's ``logs/`` (where every view looks for a worker's output)."""
    log = out / "logs" / f"{result.id}.log"
    if result.run is not None and log.is_file():
        try:
            (result.run / "logs").mkdir(exist_ok=True)
            shutil.copyfile(log, result.run / "logs" / "batch-worker.log")
        except OSError as exc:
            print(f"batch: could not copy {log} into {result.run}/logs ({exc})", file=sys.stderr)
