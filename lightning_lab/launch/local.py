"""The local backend: worker processes on this machine through torch's elastic launcher."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lightning_lab.engine.relaunch import run_workers
from lightning_lab.launch.follow import end_summary
from lightning_lab.launch.rundir import prepare_run, worker_env
from lightning_lab.launch.spec import LaunchSpec


def run_local(spec: LaunchSpec, run_dir: Path | None = None, console: bool = True) -> int:
    """Run ``spec.script`` as ``spec.devices`` DDP workers here and wait for them (main thread only).

    Rank 0's output shows on this process's console (every rank's is kept in ``<run>/logs/``).
    The first Ctrl-C asks the workers to stop after their step and save ``last.ckpt``; a second
    stops them at once. No worker outlives this call.

    Args:
        spec: What to run; ``spec.backend`` must be ``"local"``.
        run_dir: A run directory prepared by the caller (``%%train`` does); else a new one.
        console: Show rank 0's output here.

    Returns:
        The workers' exit code (0: every worker succeeded).
    """
    run_dir = prepare_run(spec, run_dir)
    print(f"lightning-lab run: {spec.devices} worker(s) of {spec.script.name} (local, torch elastic launch); "
          f"run directory {run_dir}", file=sys.stderr, flush=True)
    env = worker_env(spec, run_dir)
    os.environ.update(env)
    code = run_workers(spec.devices, [str(spec.script), *spec.args], run_dir, python=spec.python,
                       console=console, env=env)
    print(f"lightning-lab run: {end_summary(run_dir)}", file=sys.stderr, flush=True)
    return code
