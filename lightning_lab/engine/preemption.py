"""Slurm preemption: save and requeue on SIGUSR1, continue from ``last.ckpt`` when the job returns.

A job started by ``lightning-lab run --backend slurm`` (or any batch script that exports
``LIGHTNING_LAB_REQUEUE=1`` and ``LIGHTNING_LAB_RUN_DIR``) is *preemptible*: Slurm's warning signal
(``#SBATCH --signal=USR1@90``, or ``scancel --signal=USR1``) makes every rank stop at the same step
boundary; ``last.ckpt`` is saved, the run is marked ``stopped`` with the preemption recorded, and
rank 0 asks Slurm to requeue the job (``scontrol requeue``). When the job runs again, ``fit`` finds
``last.ckpt`` in the same run directory and continues from it: one run, one continuous curve.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_lab.engine.relaunch import RUN_DIR_ENV

if TYPE_CHECKING:
    from lightning_lab.engine.trainer import Trainer

REQUEUE_ENV = "LIGHTNING_LAB_REQUEUE"


def preemptible() -> bool:
    """Whether this process should turn SIGUSR1 into save-and-requeue."""
    return os.environ.get(REQUEUE_ENV) == "1"


def requeued_checkpoint() -> Path | None:
    """``last.ckpt`` of the launcher's run directory, when this preemptible job is starting again."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not preemptible() or not run_dir:
        return None
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def requeue_after_preemption(trainer: Trainer) -> None:
    """After a preempted ``fit``: rank 0 requeues the Slurm job, then every rank ends the program.

    Nothing after ``fit`` runs in a preempted job (it will run when the requeued job finishes
    training). Outside Slurm, or when the requeue is refused, the run simply stays ``stopped``
    with its ``last.ckpt`` and ``fit`` returns.
    """
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return
    if trainer.is_global_zero:
        scontrol = shutil.which("scontrol")
        done = None
        if scontrol is not None:
            done = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True, check=False)
        if done is None or done.returncode != 0:
            why = "scontrol is not on PATH" if done is None else (done.stderr or done.stdout).strip()
            print(f"lightning_lab: could not requeue Slurm job {job} ({why}); the run stays stopped with "
                  "last.ckpt — resubmit the job to continue it.", file=sys.stderr, flush=True)
            return
        print(f"lightning_lab: requeued Slurm job {job}; it continues from last.ckpt at step "
              f"{trainer.global_step}.", file=sys.stderr, flush=True)
    sys.stdout.flush()
    raise SystemExit(0)
