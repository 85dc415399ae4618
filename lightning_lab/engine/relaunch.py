"""Start a program's worker processes through PyTorch's elastic launcher and supervise them.

``python train.py --devices 2`` comes here: the process the user started becomes a supervisor
that starts two fresh copies of the same program (``torch.distributed.launcher.elastic_launch``,
the API behind ``torchrun --standalone``), waits for them, and exits with their exit code. Nothing
is forked, so whatever the supervisor touched (CUDA included) cannot break the workers.

The supervisor prepares the run directory and tells the workers through ``LIGHTNING_LAB_RUN_DIR``,
so it knows where to write when a worker dies: each rank's output goes to
``logs/rank<N>.out``/``.err`` (rank 0's is also shown on the console), and a failure is recorded
in ``run.json`` with the first failing rank's traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

from lightning_lab.runs.lifecycle import failure_from_log, finish_run, prepare_run_dir

RUN_DIR_ENV = "LIGHTNING_LAB_RUN_DIR"
WORKER_SIGNALS = "SIGTERM,SIGHUP,SIGQUIT"  # SIGINT is ours: the first one stops gracefully
# Hosts that run other code in their process (test runners, kernels): never start them again.
_NOT_PROGRAMS = frozenset(("pytest", "_pytest", "ipykernel", "ipykernel_launcher", "IPython", "papermill",
                           "jupyter", "jupyter_core", "nbclient", "lightning_lab"))


def main_command() -> list[str] | None:
    """The arguments that start this program again (``[script, *args]`` or ``["-m", module, *args]``).

    ``None`` when there is no program to start again: an interactive session, a notebook kernel,
    ``python -c``.
    """
    ipython = sys.modules.get("IPython")
    if ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None:
        return None
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", "__main__") != "__main__":
        module = spec.name.removesuffix(".__main__")
        if module.split(".")[0] in _NOT_PROGRAMS:
            return None
        return ["-m", module, *sys.argv[1:]]
    file = getattr(main, "__file__", None)
    if file and file.endswith(".py") and Path(file).is_file():
        return [str(Path(file).resolve()), *sys.argv[1:]]
    return None


def _run_logs(log_dir: Path, nproc: int, console_rank: int | None) -> Any:
    from torch.distributed.elastic.multiprocessing.api import LogsDest, LogsSpecs

    class RunLogs(LogsSpecs):
        """Each local rank's stdout/stderr into ``<log_dir>/rank<N>.out|.err``; one rank teed to the console."""

        def __init__(self) -> None:
            super().__init__(log_dir=str(log_dir))

        @property
        def root_log_dir(self) -> str:
            return str(log_dir)

        def reify(self, envs: dict[int, dict[str, str]]) -> LogsDest:
            log_dir.mkdir(parents=True, exist_ok=True)
            outs, errs, tee_out, tee_err, error_files = {}, {}, {}, {}, {}
            for local_rank, env in envs.items():
                rank = int(env.get("RANK", local_rank))
                outs[local_rank] = str(log_dir / f"rank{rank}.out")
                errs[local_rank] = str(log_dir / f"rank{rank}.err")
                error_files[local_rank] = str(log_dir / f"rank{rank}.error.json")
                env["TORCHELASTIC_ERROR_FILE"] = error_files[local_rank]
                if local_rank == console_rank:
                    tee_out[local_rank], tee_err[local_rank] = outs[local_rank], errs[local_rank]
            return LogsDest(outs, errs, tee_out, tee_err, error_files)

    return RunLogs()


def _forward_to_workers(signum: int, frame: FrameType | None) -> None:
    """Pass a signal on to the workers: torch's launcher starts each in a session of its own."""
    me = os.getpid()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == me:
                os.kill(int(entry.name), signum)
        except (OSError, ValueError, IndexError):
            continue


class _GracefulInterrupt:
    """First Ctrl-C: ask the workers to stop after their step (STOP file); second: stop them now."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.count = 0
        self._previous: Any = None
        self._previous_usr1: Any = None

    def __enter__(self) -> _GracefulInterrupt:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            # A preemption warning is for the workers (they save and requeue); by default it would
            # kill this supervisor instead.
            self._previous_usr1 = signal.signal(signal.SIGUSR1, _forward_to_workers)
        except ValueError:  # not the main thread: leave the signals alone
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            signal.signal(signal.SIGUSR1, self._previous_usr1)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        (self.run_dir / "STOP").touch()
        print("\nlightning_lab: asked the workers to stop after their current step and save last.ckpt "
              "(interrupt again to stop them at once).", file=sys.stderr, flush=True)


def run_workers(nproc: int, command: list[str], run_dir: Path, *, python: str | None = None,
                console: bool = True, env: dict[str, str] | None = None) -> int:
    """Run ``python -u *command`` as ``nproc`` DDP workers on this node; return their exit code.

    Args:
        nproc: Worker processes (one per device).
        command: What follows ``python``: a script and its arguments, or ``-m module ...``.
        run_dir: The run directory the workers write (prepared here when missing).
        python: The interpreter (default: this one).
        console: Show rank 0's output on this process's stdout/stderr (always also in ``logs/``).
        env: Extra environment variables for the workers.

    Returns:
        0 when every worker succeeded, else the first failing worker's exit code (1 for a signal).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    run_dir = Path(run_dir).resolve()
    prepare_run_dir(run_dir)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    os.environ.setdefault("LIGHTNING_LAB_BACKEND", "local")
    for key, value in (env or {}).items():
        os.environ[key] = value
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"lightning-lab-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.1,
        logs_specs=_run_logs(run_dir / "logs", nproc, 0 if console else None),
        signals_to_handle=WORKER_SIGNALS,
    )
    _quiet_elastic_logs()
    with _GracefulInterrupt(run_dir) as interrupt:
        try:
            elastic_launch(config, python or sys.executable)("-u", *command)
        except ChildFailedError as err:
            rank, failure = err.get_first_failure()
            _record_failure(run_dir, rank, failure.exitcode)
            return failure.exitcode if failure.exitcode > 0 else 1
        except KeyboardInterrupt:
            finish_run(run_dir, "stopped", None)
            print("lightning_lab: workers stopped.", file=sys.stderr, flush=True)
            return 130
    if interrupt.count:
        (run_dir / "STOP").unlink(missing_ok=True)
    # Every worker exited 0; a run the engine left "running" had its workers end without closing it.
    finish_run(run_dir, "failed", {"type": "WorkerExit", "message": "the workers exited without closing the run"},
               create=False)
    return 0


def _record_failure(run_dir: Path, rank: int, exitcode: int) -> None:
    log = run_dir / "logs" / f"rank{rank}.err"
    error = failure_from_log(log)
    if error is None:
        how = f"exit code {exitcode}" if exitcode >= 0 else f"killed by {_signal_name(-exitcode)}"
        last = _last_line(log)
        error = {"type": "WorkerExit", "message": f"{how}: {last}" if last else how}
    error.update(rank=rank, exitcode=exitcode, log=f"logs/{log.name}")
    finish_run(run_dir, "failed", error, force_error=True)
    what = f"{error['type']}: {error['message']}"
    print(f"lightning_lab: worker rank {rank} failed ({what}); full log: {log}", file=sys.stderr, flush=True)


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _quiet_elastic_logs() -> None:
    """The elastic agent logs every step of its life at INFO/WARNING; keep only its errors."""
    import logging

    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.ERROR)
