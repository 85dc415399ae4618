"""The text of the sbatch script the Slurm backend submits: one Slurm task per training process.

Layout: ``srun`` starts ``nodes × devices`` tasks of ``python -u SCRIPT ARGS``; each task is one
rank and the engine reads its place from ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS`` and
the rendezvous from ``SLURM_JOB_NODELIST``/``SLURM_JOB_ID`` (``lightning_lab.engine.environment``).
No torchrun agent sits between Slurm and the ranks, so Slurm's signals reach them directly:
``--signal=USR1@90`` tells every rank, 90 s before the time limit, to checkpoint and requeue.
A USR1 sent to the batch shell only (``scancel --signal=USR1 --batch JOB``) is forwarded to srun,
which passes it on to the ranks.

Marker files in ``<run>/logs/`` let a follower see the job's life without an accounting
database: ``job-<id>.started`` gains a line at every start (its restart count), and
``job-<id>.exit`` holds srun's exit code once the tasks have ended.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from lightning_lab.launch.spec import LaunchSpec

SIGNAL = "USR1@90"  # 90 s before the time limit: time to finish a step and write last.ckpt


def job_log(run_dir: Path, job_id: str | int) -> Path:
    """Output of the batch shell (markers, srun's own messages) of job ``job_id``."""
    return Path(run_dir) / "logs" / f"slurm-{job_id}.out"


def rank_log(run_dir: Path, job_id: str | int, rank: int) -> Path:
    """stdout and stderr of rank ``rank`` of job ``job_id`` (appended to across requeues)."""
    return Path(run_dir) / "logs" / f"slurm-{job_id}.rank{rank}.out"


def exit_marker(run_dir: Path, job_id: str | int) -> Path:
    """Written by the batch shell after srun returned: ``exit=<code> restart=<n>``."""
    return Path(run_dir) / "logs" / f"job-{job_id}.exit"


def start_marker(run_dir: Path, job_id: str | int) -> Path:
    """One line per start of the job: ``restart=<n> host=<host> time=<unix seconds>``."""
    return Path(run_dir) / "logs" / f"job-{job_id}.started"


def sbatch_directives(spec: LaunchSpec, run_dir: Path, gpus: bool = False) -> list[str]:
    """The ``#SBATCH`` lines for ``spec`` (a ``LaunchSpec``): nodes, tasks, GPUs, time, partition, output."""
    logs = Path(run_dir) / "logs"
    options = [
        f"--job-name={spec.run_name}",
        f"--nodes={spec.nodes}",
        f"--ntasks-per-node={spec.devices}",
    ]
    if gpus:
        options.append(f"--gpus-per-node={spec.devices}")
    if spec.time:
        options.append(f"--time={spec.time}")
    if spec.partition:
        options.append(f"--partition={spec.partition}")
    options += [
        f"--chdir={os.getcwd()}",
        f"--output={logs}/slurm-%j.out",
        "--open-mode=append",  # a requeued start appends to the same log
        "--requeue",
        f"--signal={SIGNAL}",
    ]
    return [f"#SBATCH {shlex.quote(option)}" for option in options]


def sbatch_script(spec: LaunchSpec, run_dir: Path, env: Mapping[str, str] | None = None, gpus: bool = False) -> str:
    """The whole sbatch script for ``spec`` writing into ``run_dir``.

    Args:
        spec: the ``LaunchSpec`` (script, args, nodes, devices, partition, time, python, ...).
        run_dir: the run directory prepared for this launch; every rank writes into it.
        env: extra environment for the ranks (the ``LIGHTNING_LAB_*`` variables of the run);
            the Slurm backend's own variables are added to it.
        gpus: ask for ``devices`` GPUs per node (``--gpus-per-node``).

    Returns:
        The script text, ready for ``sbatch``.

    Example:
        >>> text = sbatch_script(spec, run_dir)           # doctest: +SKIP
        >>> Path(run_dir, "slurm.sbatch").write_text(text)  # doctest: +SKIP
    """
    run_dir = Path(run_dir).resolve()
    logs = run_dir / "logs"
    variables = {
        **dict(env or {}),
        **dict(getattr(spec, "env", None) or {}),
        "LIGHTNING_LAB_RUN_DIR": str(run_dir),
        "LIGHTNING_LAB_BACKEND": "slurm",
        "LIGHTNING_LAB_REQUEUE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    exports = "\n".join(f"export {key}={shlex.quote(str(value))}" for key, value in sorted(variables.items()))
    command = shlex.join([str(spec.python), "-u", str(Path(spec.script).resolve()), *map(str, spec.args)])
    task_log = shlex.quote(f"{logs}/slurm-%j.rank%t.out")
    return f"""#!/bin/bash
{chr(10).join(sbatch_directives(spec, run_dir, gpus))}
# Written by lightning_lab for the run in {run_dir}.
# One Slurm task per training process; resubmit by hand with: sbatch {shlex.quote(str(run_dir / "slurm.sbatch"))}
{exports}
LOGS={shlex.quote(str(logs))}
RESTART="${{SLURM_RESTART_COUNT:-0}}"
mkdir -p "$LOGS"
echo "restart=$RESTART host=$(hostname) time=$(date +%s)" >> "$LOGS/job-$SLURM_JOB_ID.started"
echo "lightning_lab: job $SLURM_JOB_ID start $RESTART on $SLURM_JOB_NODELIST ($SLURM_NTASKS tasks)"

# Slurm's --signal reaches the tasks itself; a USR1 sent to this shell alone (scancel --batch)
# is passed on to srun, which forwards it to every task.
forward_usr1() {{ echo "lightning_lab: USR1 for the batch shell, forwarded to srun"; kill -USR1 "$SRUN_PID" 2>/dev/null; }}
trap forward_usr1 USR1

srun --kill-on-bad-exit=1 --open-mode=append --output={task_log} {command} &
SRUN_PID=$!
while :; do
    wait "$SRUN_PID"; STATUS=$?
    kill -0 "$SRUN_PID" 2>/dev/null || break  # a trap ended the wait early: wait again
done
# the trap may have cut the last wait short just as srun ended: ask once more for srun's status
if [ "$STATUS" -gt 128 ]; then wait "$SRUN_PID" 2>/dev/null; AGAIN=$?; [ "$AGAIN" -ne 127 ] && STATUS=$AGAIN; fi
echo "exit=$STATUS restart=$RESTART time=$(date +%s)" > "$LOGS/job-$SLURM_JOB_ID.exit"
echo "lightning_lab: srun exited with $STATUS"
exit "$STATUS"
"""
