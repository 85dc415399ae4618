"""The run directory from a launcher's side: prepare it, tell the workers, settle it afterwards."""

from __future__ import annotations

import shlex
from pathlib import Path

from lightning_lab.engine.relaunch import RUN_DIR_ENV
from lightning_lab.launch.spec import LaunchSpec
from lightning_lab.runs.lifecycle import (
    failure_from_log,
    finish_run,
    new_run_dir,
    prepare_run_dir,
    read_launch,
    update_launch,
)
from lightning_lab.runs.records import utc_now

__all__ = ["failure_from_log", "finish_run", "prepare_run", "read_launch", "update_run", "worker_env"]


def prepare_run(spec: LaunchSpec, run_dir: Path | None = None) -> Path:
    """Create the run directory (or take ``run_dir``), copy the script into ``source/``, write ``launch.json``.

    Returns:
        The run directory, absolute.
    """
    if run_dir is None:
        run_dir = new_run_dir(spec.root, spec.run_name)
    run_dir = Path(run_dir).resolve()
    prepare_run_dir(run_dir)
    target = run_dir / "source" / spec.script.name
    if not target.exists():
        target.write_bytes(spec.script.read_bytes())
    update_launch(
        run_dir, backend=spec.backend, world_size=spec.world_size, devices=spec.devices, nodes=spec.nodes,
        script=str(spec.script), args=spec.args, start_time=utc_now(),
        command=shlex.join([spec.python, str(spec.script), *spec.args]),
        source={"kind": "script", "script": str(spec.script), "argv": [str(spec.script), *spec.args]},
    )
    return run_dir


def worker_env(spec: LaunchSpec, run_dir: Path) -> dict[str, str]:
    """The environment variables every worker needs on top of the caller's."""
    env = {RUN_DIR_ENV: str(run_dir), "LIGHTNING_LAB_BACKEND": spec.backend, "PYTHONUNBUFFERED": "1"}
    env.update(spec.env)
    return env


def update_run(run_dir: Path, **fields: object) -> dict[str, object]:
    """Merge launcher facts (a Slurm job id, ...) into ``<run>/launch.json``."""
    return update_launch(run_dir, **fields)
